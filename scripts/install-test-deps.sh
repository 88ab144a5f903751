#!/usr/bin/env bash
# System packages the test suite runs for real: Prometheus (server + promtool) and Redis.
# Installed from Debian's packages when missing; a no-op when already there.
set -euo pipefail
need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)  # redis-cli --cluster create (cluster tests)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)  # validates deploy/compose (no engine needed)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)  # amtool, for the Alertmanager API v2 tests
# the console's browser tests drive Debian's chromium through the playwright package;
# playwright's own browser download is never used (tests pass executable_path=/usr/bin/chromium)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
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
# Debian starts the services on install; the tests run their own instances on random ports
# (only the services of the packages installed just now: never other processes of the same name)
for svc in prometheus redis-server prometheus-alertmanager; do
  if printf '%s\n' "${need[@]}" | grep -qx "$svc"; then
    $SUDO systemctl stop "$svc" 2>/dev/null || $SUDO service "$svc" stop 2>/dev/null || true
  fi
done
