#!/bin/sh
# Makes sure Debian's chromium and chromium-driver are on this host: the console tests drive
# a real headless browser over WebDriver.
set -eu
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "error: Debian's chromium and chromium-driver are needed; run: sudo apt-get install chromium chromium-driver" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
