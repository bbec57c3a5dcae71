#!/bin/sh
# Makes sure the tools of the operations tests are on this host: Prometheus's `prometheus` and
# `promtool` (Debian's prometheus package: the metrics test checks /metrics with promtool and
# scrapes the scheduler with a real Prometheus), and Python's grpcio with the health and
# reflection clients (a client that never compiled Vishwa's protos asks the scheduler what it
# serves and whether it is SERVING). Skipped when everything is there.
set -eu
# Debian's interpreter, whatever `python3` is first on PATH (pyenv and the like): the tests run
# this one, with Debian's grpcio.
PY=/usr/bin/python3
have_python_grpc() {
    [ -x "$PY" ] && "$PY" -c 'import grpc, grpc_health.v1.health_pb2, grpc_reflection.v1alpha.reflection_pb2' \
        >/dev/null 2>&1
}
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 && have_python_grpc; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "error: the operations tests need prometheus, promtool and Python grpcio; run as root: apt-get install prometheus python3-grpcio python3-protobuf python3-pip, then pip install grpcio-health-checking grpcio-reflection" >&2
    exit 1
fi
apt-get update -qq
# The package's service is not started: the tests start their own Prometheus.
DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends \
    prometheus python3-grpcio python3-protobuf python3-pip >/dev/null
if ! have_python_grpc; then
    # The health and reflection clients of the same grpcio release as Debian's grpcio; their
    # dependencies (grpcio, protobuf) are Debian's.
    version=$("$PY" -c 'import grpc; print(grpc.__version__)')
    "$PY" -m pip install --quiet --root-user-action=ignore --no-deps --break-system-packages \
        "grpcio-health-checking==$version" "grpcio-reflection==$version"
fi
have_python_grpc
