#!/bin/sh
# Builds vishwa-examples/python-ml:1, the image the example ML pipelines (dags/cake-popularity,
# dags/student-intelligence) run their stages in, in two steps:
#
#   1. the base, vishwa-examples/python-ml-base:1: a minimal Debian bookworm made by debootstrap
#      with Debian's own python3, numpy, pandas, scikit-learn and xgboost, then `docker
#      import`ed (a few minutes; needs root). No registry is needed, only Debian's mirror.
#   2. a thin layer on it (`docker build`, seconds): the pipelines' shared Python package
#      vishwa_ml (dags/images/python/vishwa_ml) in /usr/lib/python3/dist-packages, labelled
#      vishwa.python-ml.package=<digest of the package's files>.
#
# Package, deploy and smoke stages talk to the Docker Engine API over the mounted unix socket
# from Python's standard library (vishwa_ml.dockerapi), so the image carries no docker CLI.
#
# Idempotent and content-aware: does nothing when the image's label matches the package's
# files; when only the package changed it rebuilds the layer alone, keeping the base. An image
# from before the split (a plain debootstrap import, no package label) is reused as the base.
#
# Usage: dags/images/build-python-ml.sh [--force]    (from any directory; root only for step 1)
#   IMAGE=name:tag  BASE_IMAGE=name:tag  MIRROR=http://...  SUITE=bookworm
#   FORCE=1 (same as --force: rebuild the base too)
set -eu

IMAGE="${IMAGE:-vishwa-examples/python-ml:1}"
BASE_IMAGE="${BASE_IMAGE:-vishwa-examples/python-ml-base:1}"
SUITE="${SUITE:-bookworm}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
PACKAGES="python3,python3-numpy,python3-pandas,python3-sklearn,python3-xgboost,ca-certificates"
FORCE="${FORCE:-0}"
LABEL=vishwa.python-ml.package

for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "error: unknown argument '$arg'; usage: $0 [--force]" >&2; exit 2 ;;
    esac
done

python_dir="$(cd "$(dirname "$0")/python" && pwd)"
if [ ! -f "$python_dir/vishwa_ml/__init__.py" ]; then
    echo "error: $python_dir/vishwa_ml/__init__.py is missing; run this from a full checkout" >&2
    exit 1
fi

# The thin layer's Dockerfile, less its label; the digest covers it and every .py file of the
# package (names and contents), so a change to either rebuilds the layer.
dockerfile="FROM $BASE_IMAGE
COPY vishwa_ml /usr/lib/python3/dist-packages/vishwa_ml"
digest="$( {
    printf '%s\n' "$dockerfile"
    cd "$python_dir" && find vishwa_ml -type f -name '*.py' | LC_ALL=C sort | xargs sha256sum
} | sha256sum | cut -c1-16)"

# A label of an image, empty when the image or the label is absent.
label_of() {
    docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null \
        | sed 's/^<no value>$//' || true
}

if [ "$FORCE" != 1 ] && [ "$(label_of "$IMAGE" "$LABEL")" = "$digest" ]; then
    echo "$IMAGE is up to date (vishwa_ml $digest)"
    exit 0
fi

build_base() {
    if ! command -v debootstrap >/dev/null 2>&1; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "error: debootstrap is needed; run: sudo apt-get install debootstrap" >&2
            exit 1
        fi
        echo "installing debootstrap"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: debootstrap needs root; run: sudo $0" >&2
        exit 1
    fi

    started="$(date +%s)"
    work="$(mktemp -d /var/tmp/vishwa-python-ml.XXXXXX)"
    trap 'rm -rf "$work"' EXIT INT TERM
    root="$work/root"

    echo "debootstrap $SUITE (minbase + $PACKAGES) from $MIRROR"
    if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" \
        >"$work/debootstrap.log" 2>&1; then
        tail -n 30 "$work/debootstrap.log" >&2
        echo "error: debootstrap failed (full log above); check that $MIRROR is reachable" >&2
        exit 1
    fi

    # Debian's scipy pulls in pythran and with it a C++ toolchain, Boost and Python headers (over
    # 400 MB) that only matter for compiling extensions: a stage's image needs none of them, nor
    # package manager state, docs or translations. The import check below proves nothing needed
    # went with them.
    dev_packages="$(chroot "$root" dpkg-query -W -f '${Package}\n' | grep -E -- \
        '-dev$|^(gcc|g\+\+|cpp)(-12)?$|^binutils|^lib(asan|tsan|lsan|ubsan|hwasan|itm)[0-9]|^libcc1-0$|^libgprofng0$|^libbinutils$|^libctf|^python3-(pythran|beniget|gast|ply)$|^libisl|^libmpc[0-9]|^libjansson' \
        || true)"
    if [ -n "$dev_packages" ]; then
        # shellcheck disable=SC2086 # one word per package
        chroot "$root" dpkg --purge --force-depends $dev_packages >"$work/purge.log" 2>&1 || {
            tail -n 20 "$work/purge.log" >&2
            echo "error: removing build-only packages from the image failed" >&2
            exit 1
        }
    fi
    rm -rf "$root"/usr/include/* "$root"/usr/lib/gcc
    rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/* \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/usr/share/locale/* "$root"/usr/share/lintian "$root"/usr/share/linda \
        "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old "$root"/tmp/* "$root"/root/.cache
    find "$root/usr/lib/python3" "$root/usr/lib/python3.11" -name '__pycache__' -type d -prune \
        -exec rm -rf {} + 2>/dev/null || true
    # Fail here, not in the first stage, if a library is missing.
    chroot "$root" python3 -c '
import numpy as np, pandas, scipy.stats, sklearn.linear_model
from xgboost import XGBClassifier
x, y = np.random.default_rng(0).random((40, 3)), np.arange(40) % 2
XGBClassifier(n_estimators=3).fit(x, y)
sklearn.linear_model.LogisticRegression().fit(x, y)
' || {
        echo "error: the base image's python3 cannot import numpy, pandas, sklearn and xgboost" >&2
        exit 1
    }

    tar --numeric-owner -C "$root" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PYTHONDONTWRITEBYTECODE=1' \
        --change 'ENV PYTHONUNBUFFERED=1' \
        --change 'LABEL vishwa.example-image=python-ml-base' \
        --change 'CMD ["python3"]' \
        - "$BASE_IMAGE" >/dev/null
    rm -rf "$work"
    size="$(docker image inspect --format '{{.Size}}' "$BASE_IMAGE")"
    echo "built $BASE_IMAGE in $(( $(date +%s) - started ))s, $(( size / 1024 / 1024 )) MiB"
}

if [ "$FORCE" = 1 ] || ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    if [ "$FORCE" != 1 ] && [ "$(label_of "$IMAGE" vishwa.example-image)" = python-ml ] \
        && [ -z "$(label_of "$IMAGE" "$LABEL")" ]; then
        # Built by this script before the package moved into a layer: the same debootstrap
        # image, so it serves as the base without a rebuild.
        echo "reusing $IMAGE (no vishwa_ml layer yet) as $BASE_IMAGE"
        docker tag "$IMAGE" "$BASE_IMAGE"
    else
        build_base
    fi
fi

started="$(date +%s)"
previous="$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
previous_digest="$(label_of "$IMAGE" "$LABEL")"
context="$(mktemp -d /var/tmp/vishwa-python-ml-layer.XXXXXX)"
trap 'rm -rf "$context"' EXIT INT TERM
(cd "$python_dir" && find vishwa_ml -type f -name '*.py' | tar -c -T -) | tar -x -C "$context"
printf '%s\nLABEL vishwa.example-image=python-ml %s=%s\n' "$dockerfile" "$LABEL" "$digest" \
    >"$context/Dockerfile"
if ! docker build -q -t "$IMAGE" "$context" >"$context/build.log" 2>&1; then
    cat "$context/build.log" >&2
    echo "error: docker build of the vishwa_ml layer on $BASE_IMAGE failed (output above)" >&2
    exit 1
fi
# Fail here, not in the first stage, if a module does not import.
modules="$(cd "$context" && find vishwa_ml -name '*.py' ! -name __init__.py \
    | sed 's|/|.|; s|\.py$||' | LC_ALL=C sort | paste -sd, -)"
if ! docker run --rm --network none "$IMAGE" python3 -c "import $modules" \
    >"$context/check.log" 2>&1; then
    cat "$context/check.log" >&2
    docker image rm "$IMAGE" >/dev/null 2>&1 || true
    echo "error: $IMAGE cannot import vishwa_ml's modules ($modules); see above" >&2
    exit 1
fi
# The layer this one replaced, once no tag names it (removing it by id would take its other
# tags with it) and unless a model image still builds on it.
current="$(docker image inspect --format '{{.Id}}' "$IMAGE")"
if [ -n "$previous_digest" ] && [ "$previous" != "$current" ] \
    && [ "$(docker image inspect --format '{{len .RepoTags}}' "$previous" 2>/dev/null)" = 0 ]; then
    docker image rm "$previous" >/dev/null 2>&1 || true
fi
echo "built $IMAGE (vishwa_ml $digest on $BASE_IMAGE) in $(( $(date +%s) - started ))s"
