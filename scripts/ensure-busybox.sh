#!/bin/sh
# Makes sure Debian's static busybox is on this host: the test and example images are built
# from it (there is no registry to pull images from).
set -eu
if [ -x /bin/busybox ] && dpkg -s busybox-static >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "error: Debian's busybox-static is needed; run: sudo apt-get install busybox-static" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
