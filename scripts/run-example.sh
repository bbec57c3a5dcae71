#!/bin/sh
# Runs the example pipeline end to end: builds its image if missing, builds vishwa, runs the
# DAG with `vishwa run` (scheduler and worker embedded) and exits with the run's outcome.
# Extra arguments go to `vishwa run`, e.g. scripts/run-example.sh -p rows=500
set -eu
cd "$(dirname "$0")/.."
sh scripts/ensure-busybox.sh
sh dags/images/build-busybox.sh
cargo build --release --locked -p vishwa-cli
exec target/release/vishwa run dags/hello-pipeline "$@"
