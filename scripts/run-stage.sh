#!/bin/sh
# Runs one stage's command by hand, in Docker, the way a Vishwa worker would lay it out: the
# DAG folder read-only at /vishwa/dag (the working directory), WORK/in as /vishwa/in (the
# outputs of earlier stages), WORK/out/STAGE as /vishwa/out. Afterwards the stage's outputs are
# copied to WORK/in/STAGE, so the next stage run this way finds them: a pipeline's scripts can be
# tried one by one without a scheduler.
#
# Usage: scripts/run-stage.sh DAG_DIR WORK_DIR STAGE [--docker-socket] -- COMMAND...
#   IMAGE=name:tag (default vishwa-examples/python-ml:1)
#   --docker-socket mounts /var/run/docker.sock, as `mounts:` does for package/deploy/smoke.
# Example:
#   scripts/run-stage.sh dags/cake-popularity /tmp/cake collect -- python3 collect.py --rows 500 --seed 7
#   scripts/run-stage.sh dags/cake-popularity /tmp/cake validate -- python3 validate.py
set -eu
if [ $# -lt 4 ]; then
    sed -n '2,13p' "$0" >&2
    exit 2
fi
dag="$(cd "$1" && pwd)"
mkdir -p "$2"
work="$(cd "$2" && pwd)"
stage="$3"
shift 3
socket=""
if [ "$1" = --docker-socket ]; then
    socket="--mount type=bind,source=/var/run/docker.sock,target=/var/run/docker.sock"
    shift
fi
if [ "$1" != -- ]; then
    echo "error: expected -- before the command, got '$1'" >&2
    exit 2
fi
shift
IMAGE="${IMAGE:-vishwa-examples/python-ml:1}"
mkdir -p "$work/in" "$work/out/$stage"
rm -rf "${work:?}/out/$stage"/* "${work:?}/in/$stage"
status=0
# shellcheck disable=SC2086 # $socket is empty or one --mount option
docker run --rm \
    --mount "type=bind,source=$dag,target=/vishwa/dag,readonly" \
    --mount "type=bind,source=$work/in,target=/vishwa/in,readonly" \
    --mount "type=bind,source=$work/out/$stage,target=/vishwa/out" \
    $socket -w /vishwa/dag \
    -e VISHWA_RUN_ID="${VISHWA_RUN_ID:-manual-$(date +%s)}" -e VISHWA_DAG="$(basename "$dag")" \
    -e VISHWA_STAGE="$stage" -e VISHWA_ATTEMPT=1 \
    "$IMAGE" "$@" || status=$?
cp -r "$work/out/$stage" "$work/in/$stage"
exit "$status"
