#!/bin/sh
# Builds vishwa-examples/python-ml:1, the image the example ML pipelines (dags/cake-popularity,
# dags/student-intelligence) run their stages in: a minimal Debian bookworm made by debootstrap
# with Debian's own python3, numpy, pandas, scikit-learn and xgboost, then `docker import`ed.
# No registry is needed, only Debian's package mirror. Package, deploy and smoke stages talk to
# the Docker Engine API over the mounted unix socket from Python's standard library, so the
# image carries no docker CLI.
#
# Idempotent: does nothing when the image is already present.
#
# Usage: dags/images/build-python-ml.sh [--force]      (from any directory; needs root)
#   IMAGE=name:tag  MIRROR=http://...  SUITE=bookworm  FORCE=1 (same as --force)
set -eu

IMAGE="${IMAGE:-vishwa-examples/python-ml:1}"
SUITE="${SUITE:-bookworm}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
PACKAGES="python3,python3-numpy,python3-pandas,python3-sklearn,python3-xgboost,ca-certificates"
FORCE="${FORCE:-0}"

for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "error: unknown argument '$arg'; usage: $0 [--force]" >&2; exit 2 ;;
    esac
done

if [ "$FORCE" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE is already present"
    exit 0
fi

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
    echo "error: the image's python3 cannot import numpy, pandas, sklearn and xgboost" >&2
    exit 1
}

tar --numeric-owner -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PYTHONDONTWRITEBYTECODE=1' \
    --change 'ENV PYTHONUNBUFFERED=1' \
    --change 'LABEL vishwa.example-image=python-ml' \
    --change 'CMD ["python3"]' \
    - "$IMAGE" >/dev/null

size="$(docker image inspect --format '{{.Size}}' "$IMAGE")"
echo "built $IMAGE in $(( $(date +%s) - started ))s, $(( size / 1024 / 1024 )) MiB"
