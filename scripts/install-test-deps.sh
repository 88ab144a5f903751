#!/usr/bin/env bash
# System packages the test suite runs for real: Prometheus (server + promtool) and Redis.
# Installed from Debian's packages when missing; a no-op when already there.
set -euo pipefail
need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)  # validates deploy/compose (no engine needed)
command -v podman >/dev/null 2>&1 || need+=(podman)  # builds the image (tests/test_image_smoke.py)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)  # the image's bookworm base, no registry
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-test-deps: need root (or sudo) to apt-get install: ${need[*]}" >&2; exit 1; fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends keeps it small; the packages' own services are not started here
$SUDO apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
# Debian starts the services on install; the tests run their own instances on random ports.
# Stop only those services (never pkill: other suites on the machine run their own servers).
for service in prometheus redis-server; do
  $SUDO systemctl stop "$service" 2>/dev/null || $SUDO service "$service" stop >/dev/null 2>&1 || true
done
