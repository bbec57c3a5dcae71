#!/bin/sh
# Runs every test: unit, integration (real gRPC, real Docker, real sled, real PostgreSQL) and CLI tests.
# Needs a running Docker engine and Debian's chromium + chromium-driver (the console's browser
# tests; installed when missing and root); builds the test image (Debian's busybox-static) and the example
# pipelines' image (debootstrap, a few minutes the first time) if they are missing or, for the
# latter, its shared Python package changed.
set -eu
cd "$(dirname "$0")/.."
sh scripts/ensure-busybox.sh
sh scripts/ensure-ops-tools.sh
sh scripts/ensure-chromium.sh
sh scripts/ensure-postgres.sh
sh scripts/ensure-s3s.sh
sh dags/images/build-busybox.sh
sh dags/images/build-python-ml.sh
CI="${CI:-true}" cargo test --workspace --locked
