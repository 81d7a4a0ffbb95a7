#!/usr/bin/env bash
# Build the three images of deploy/docker on this host, with no registry (run as root, from anywhere):
#  1. restem-base:local      Debian bookworm (minbase) with python3, python3-venv, ca-certificates and
#                            postgresql, by debootstrap + docker import (skipped when present; minutes);
#  2. restem-code:local      the project (deploy extra) on the host's torch wheel: the wheels are
#                            downloaded on the host first (build/deploy-wheels, the host's pip settings),
#                            so the image installs offline;
#  3. restem-postgres:local  Postgres from Debian's package (deploy/docker/postgres.Dockerfile).
# Needs docker and debootstrap (scripts/setup_docker.sh installs both).
set -euo pipefail
cd "$(dirname "$0")/../.."
MIRROR="${RESTEM_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PY="${PYTHON:-python3}"

if ! docker image inspect restem-base:local >/dev/null 2>&1; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "build_images.sh: debootstrap bookworm into $work (a few minutes)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,postgresql \
    bookworm "$work/root" "$MIRROR" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; exit 1; }
  rm -rf "$work/root"/usr/share/{doc,man,info,locale} "$work/root"/var/cache/apt/* "$work/root"/var/lib/apt/lists/*
  tar --numeric-owner -C "$work/root" -c . | docker import - restem-base:local
fi

echo "build_images.sh: downloading the wheels into build/deploy-wheels"
mkdir -p build/deploy-wheels
# one resolution with torch pinned (the host's CPU wheel), so the project's deps do not pull a CUDA build
"$PY" -m pip download -q -d build/deploy-wheels torch==2.13.0 ".[deploy]" "setuptools>=68" 2> >(grep -v "is ignored" >&2)
rm -f build/deploy-wheels/restem-*  # the project itself is installed from the source in the image

# a rebuild leaves the previous image untagged (about 3 GB for restem-code): remove it unless a
# container still uses it, so repeated builds (CI, the live deployment test) do not fill the disk
old_ids=$(docker image inspect -f '{{.Id}}' restem-code:local restem-postgres:local 2>/dev/null || true)
docker build -q -f deploy/docker/Dockerfile -t restem-code:local .
docker build -q -f deploy/docker/postgres.Dockerfile -t restem-postgres:local deploy/docker
for id in $old_ids; do
  tags=$(docker image inspect -f '{{join .RepoTags ","}}' "$id" 2>/dev/null) || continue  # gone already
  if [ -z "$tags" ]; then
    docker image rm "$id" >/dev/null 2>&1 || echo "build_images.sh: kept the previous image $id (a container uses it)"
  fi
done
echo "build_images.sh: restem-code:local and restem-postgres:local are ready"
