#!/bin/sh
# Makes sure Debian's PostgreSQL server programs (initdb, postgres, pg_ctl, psql) are on this
# host: the PostgreSQL store's tests and benchmark start a server of their own in a temp dir
# (as the `postgres` user the package creates), never the system's cluster.
set -eu
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && id postgres >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "error: Debian's postgresql package is needed; run: sudo apt-get install postgresql" >&2
    exit 1
fi
apt-get update -qq
# The package's own cluster is not needed: tests make theirs with initdb.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
