#!/bin/sh
# Runs every test: unit, integration (real gRPC, real Docker, real sled) and CLI tests.
# Needs a running Docker engine; installs Debian's busybox-static for the test image if missing.
set -eu
cd "$(dirname "$0")/.."
sh scripts/ensure-busybox.sh
sh dags/images/build-busybox.sh
CI="${CI:-true}" cargo test --workspace --locked
