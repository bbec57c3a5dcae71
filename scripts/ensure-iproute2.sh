#!/bin/sh
# Makes sure iproute2's `ip` is on this host: the placement and partition tests put workers in
# network namespaces of their own (they need root, as CI has).
set -eu
if command -v ip >/dev/null 2>&1 && ip netns list >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "error: iproute2 is needed for the network namespace tests; run: sudo apt-get install iproute2" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
