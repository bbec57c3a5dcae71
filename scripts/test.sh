#!/bin/sh
# Runs every test: unit, integration (real gRPC, real Docker, real sled) and CLI tests.
# Needs a running Docker engine; builds the test image (Debian's busybox-static) and the example
# pipelines' image (debootstrap, a few minutes the first time) if they are missing or, for the
# latter, its shared Python package changed.
set -eu
cd "$(dirname "$0")/.."
sh scripts/ensure-busybox.sh
sh scripts/ensure-s3s.sh
sh dags/images/build-busybox.sh
sh dags/images/build-python-ml.sh
CI="${CI:-true}" cargo test --workspace --locked
