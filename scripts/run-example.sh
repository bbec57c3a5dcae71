#!/bin/sh
# Runs an example pipeline end to end: builds the images it needs if they are missing, builds
# vishwa, runs the DAG with `vishwa run` (scheduler and worker embedded) and exits with the
# run's outcome.
#
#   scripts/run-example.sh                          # dags/cake-popularity: train, gate, package,
#                                                   # deploy (a container on 127.0.0.1:8765), smoke, monitor
#   EXAMPLE=student-intelligence scripts/run-example.sh
#   EXAMPLE=hello-pipeline scripts/run-example.sh   # the fast one: busybox only, no Python image
#
# Extra arguments go to `vishwa run`, e.g. scripts/run-example.sh -p min_accuracy=0.9
# The first run builds vishwa-examples/python-ml:1 from Debian packages (debootstrap; needs
# root, a few minutes).
set -eu
cd "$(dirname "$0")/.."
EXAMPLE="${EXAMPLE:-cake-popularity}"
if [ ! -f "dags/$EXAMPLE/dag.yaml" ]; then
    echo "error: no example dags/$EXAMPLE; try EXAMPLE=cake-popularity, student-intelligence or hello-pipeline" >&2
    exit 2
fi
sh scripts/ensure-busybox.sh
sh dags/images/build-busybox.sh
if [ "$EXAMPLE" != hello-pipeline ] && [ "$EXAMPLE" != nightly-retrain ]; then
    sh dags/images/build-python-ml.sh
fi
cargo build --release --locked -p vishwa-cli
vishwa="${CARGO_TARGET_DIR:-target}/release/vishwa"
case "$EXAMPLE" in
    hello-pipeline|nightly-retrain) exec "$vishwa" run "dags/$EXAMPLE" "$@" ;;
    # package, deploy and smoke talk to Docker through its socket: the worker must allow it.
    *) exec "$vishwa" run "dags/$EXAMPLE" --allow-mount /var/run/docker.sock "$@" ;;
esac
