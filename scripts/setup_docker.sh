#!/usr/bin/env bash
# Make a local Docker engine available for the code sandbox. Idempotent; run as root.
#  1. apt-get install docker.io, debootstrap and docker-compose (the live deployment test) if missing;
#  2. start dockerd in the background (log: $RESTEM_DOCKERD_LOG) unless `docker info` already answers;
#  3. wait, at most $RESTEM_DOCKER_WAIT_S seconds (default 90), until `docker info` answers.
# Then build the sandbox image with `restem sandbox build` (a no-op when it is up to date).
# Covers a fresh Debian/Ubuntu CI machine without systemd; does not configure rootless Docker.
set -euo pipefail

WAIT_S="${RESTEM_DOCKER_WAIT_S:-90}"
LOG="${RESTEM_DOCKERD_LOG:-/tmp/restem-dockerd.log}"

if [ "$(id -u)" -ne 0 ]; then
  echo "setup_docker.sh: must run as root (installs packages, starts dockerd)" >&2
  exit 1
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)  # tests/test_deploy_live.py
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup_docker.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update -qq
  timeout 900 apt-get install -y -qq --no-install-recommends "${missing[@]}" iptables ca-certificates tar
fi

docker_up() { timeout 10 docker info >/dev/null 2>&1; }

if ! docker_up; then
  if pgrep -x dockerd >/dev/null 2>&1; then
    echo "setup_docker.sh: dockerd is running but not answering yet; waiting"
  else
    echo "setup_docker.sh: starting dockerd (log: $LOG)"
    nohup dockerd >"$LOG" 2>&1 &
  fi
  deadline=$((SECONDS + WAIT_S))
  until docker_up; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "setup_docker.sh: docker info did not answer within ${WAIT_S}s; last dockerd log lines:" >&2
      tail -n 30 "$LOG" >&2 || true
      exit 1
    fi
    sleep 1
  done
fi
echo "setup_docker.sh: docker engine $(docker version --format '{{.Server.Version}}') is up"
