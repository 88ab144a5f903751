#!/usr/bin/env bash
# Build the gatewatch image from the project's Dockerfile without a Docker engine.
#
#   scripts/build-image.sh [IMAGE]          (default IMAGE: localhost/gatewatch:dev)
#
# Debian's podman builds with chroot isolation and the host network (no OCI runtime needed,
# so it works where containers cannot start, e.g. cgroups in hybrid mode). The base is not
# pulled from a registry: a Debian bookworm root made with debootstrap (python3, python3-venv,
# ca-certificates) is imported as a local image and passed as the Dockerfile's PYTHON_IMAGE.
#
# Cached between runs on one machine: the base image (tagged with a hash of its recipe; set
# REFRESH_BASE=1 to remake it, e.g. for security updates), the .debs debootstrap fetched
# (.cache/image/debs) and podman's layer cache. Needs root; installs podman and debootstrap
# with apt-get when missing. Exit status is podman's: a failed build fails loudly.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${1:-${IMAGE:-localhost/gatewatch:dev}}"
SUITE="bookworm"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# python-is-python3: the Dockerfile (like the python:3.11-slim base it defaults to) runs `python`
BASE_PACKAGES="python3,python3-venv,python-is-python3,ca-certificates"
CACHE="$PWD/.cache/image"

log() { printf 'build-image: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "needs root (debootstrap, podman with chroot isolation); run it with sudo"
  exit 1
fi

missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$CACHE/debs"
# one build at a time on a machine: two would share the rootfs directory and the tags
exec 9>"$CACHE/lock"
flock 9

recipe="$(printf '%s\n' "$SUITE" "$MIRROR" "$BASE_PACKAGES" minbase v1 | sha256sum | cut -c1-12)"
BASE="localhost/gatewatch-base:$SUITE-$recipe"
started=$SECONDS

if [ "${REFRESH_BASE:-0}" = 1 ] || ! podman image exists "$BASE"; then
  log "making the $SUITE base $BASE with debootstrap"
  rootfs="$CACHE/rootfs"
  # a debootstrap killed half-way can leave /proc and /sys mounted in its target
  umount -R "$rootfs/proc" "$rootfs/sys" 2>/dev/null || true
  rm -rf --one-file-system "$rootfs"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" --cache-dir="$CACHE/debs" \
    "$SUITE" "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -n 30 "$CACHE/debootstrap.log" >&2; log "debootstrap failed (log: $CACHE/debootstrap.log)"; exit 1; }
  # what a slim base carries: no package lists or downloaded .debs (the .debs stay in the cache)
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log
  tar -C "$rootfs" --numeric-owner -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$BASE" >/dev/null
  rm -rf --one-file-system "$rootfs"
  log "base ready in $((SECONDS - started)) s"
else
  log "base $BASE cached"
fi

# The build stage's pip must trust what this machine trusts (a TLS-inspecting egress proxy
# has its own CA) without baking it into the image: the machine's CA bundle is mounted over
# the base's /etc/ssl/certs/ca-certificates.crt (Debian's pip reads that file) for the RUN
# steps only (-v is never part of a layer, and the path exists, so nothing is left behind).
# The Dockerfile stays the one a plain `docker build` uses.
mounts=()
host_ca="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
if [ -f "$host_ca" ]; then
  mounts=(-v "$host_ca:/etc/ssl/certs/ca-certificates.crt:ro")
fi

built=$SECONDS
# --format docker keeps HEALTHCHECK and STOPSIGNAL (the OCI image format has no HEALTHCHECK)
podman build --isolation chroot --network host --format docker --layers "${mounts[@]}" \
  --build-arg PYTHON_IMAGE="$BASE" --tag "$IMAGE" --file Dockerfile .
log "built $IMAGE in $((SECONDS - built)) s (total $((SECONDS - started)) s)"
