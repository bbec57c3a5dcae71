#!/bin/sh
# Builds vishwa-test/busybox:1, the tiny image Vishwa's tests and examples run stages in: the
# host's static busybox (Debian's busybox-static) FROM scratch, with applet symlinks in /bin.
# No registry is needed. Idempotent: does nothing when the image is already present.
# Same image as `vishwa_integration_tests::images::ensure_busybox_image`.
#
# Usage: dags/images/build-busybox.sh        (from any directory)
#   IMAGE=name:tag  BUSYBOX=/path/to/static/busybox  FORCE=1 (rebuild)
set -eu

IMAGE="${IMAGE:-vishwa-test/busybox:1}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"
APPLETS="sh echo sleep cat true false printf env pwd ls id test [ mkdir rm touch head tail wc
grep sed tr od kill ps uname date expr seq yes tee basename dirname readlink stat sort cut
awk uniq xargs sha256sum md5sum wget nc"

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE is already present"
    exit 0
fi
if [ ! -x "$BUSYBOX" ]; then
    echo "error: $BUSYBOX not found; install Debian's busybox-static (apt-get install busybox-static)" >&2
    exit 1
fi

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT INT TERM
mkdir "$context/bin"
cp "$BUSYBOX" "$context/bin/busybox"
chmod 0755 "$context/bin/busybox"
for applet in $APPLETS; do
    ln -s busybox "$context/bin/$applet"
done
cat >"$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY bin/ /bin/
ENV PATH=/bin
CMD ["/bin/echo", "hello from vishwa-test/busybox"]
DOCKERFILE

docker build --quiet --label vishwa.test-image=busybox -t "$IMAGE" "$context" >/dev/null
echo "built $IMAGE"
