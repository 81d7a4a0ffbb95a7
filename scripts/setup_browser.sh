#!/usr/bin/env bash
# Make headless Chromium available for the browser test (tests/test_browser.py). Idempotent.
#  - $RESTEM_CHROMIUM (default /usr/bin/chromium) already there: nothing to do;
#  - else, as root: apt-get install the Debian `chromium` package (it brings its own libraries);
#  - else: fail, naming what to do.
# Playwright's Python client (the `dev` extra) drives this binary; `playwright install` (a download
# from Playwright's CDN) is never used. Covers Debian/Ubuntu with apt; nothing else.
set -euo pipefail

CHROMIUM="${RESTEM_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ]; then
  echo "setup_browser.sh: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM") is installed"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "setup_browser.sh: $CHROMIUM is missing and installing it needs root: sudo apt-get install chromium" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup_browser.sh: $CHROMIUM is missing and there is no apt-get; install Chromium and set RESTEM_CHROMIUM" >&2
  exit 1
fi
echo "setup_browser.sh: installing chromium"
export DEBIAN_FRONTEND=noninteractive
timeout 600 apt-get update -qq
timeout 900 apt-get install -y -qq --no-install-recommends chromium fonts-liberation
if [ ! -x "$CHROMIUM" ]; then
  echo "setup_browser.sh: apt-get installed chromium but $CHROMIUM is not there; set RESTEM_CHROMIUM" >&2
  exit 1
fi
echo "setup_browser.sh: $("$CHROMIUM" --version) is installed"
