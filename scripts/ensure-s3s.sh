#!/bin/sh
# Makes sure the S3-compatible test server `s3s-fs` is installed: the S3 artifact tests and the
# `vishwa-bench s3` benchmark start it on a free port with a temp dir. Cargo's home (and so the
# binary) is cached in CI; the install is skipped when the pinned version is present.
set -eu
VERSION=0.14.1
if command -v s3s-fs >/dev/null 2>&1 && s3s-fs --version 2>/dev/null | grep -q "$VERSION"; then
    exit 0
fi
if [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ] \
    && "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" --version 2>/dev/null | grep -q "$VERSION"; then
    exit 0
fi
cargo install s3s-fs --version "$VERSION" --features binary --locked
