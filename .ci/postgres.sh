#!/usr/bin/env bash
# A PostgreSQL for the tests at 127.0.0.1:$BATCH_WATCHER_TEST_PG_PORT (default 5432): user
# postgres, trust authentication, a database named test. One that answers there already is used
# as it is. Otherwise Debian's postgresql is installed if its tools are missing, and a throwaway
# cluster is started in a temporary directory: no system cluster is created, changed or started.
set -euo pipefail
port="${BATCH_WATCHER_TEST_PG_PORT:-5432}"

if ! pg_isready -q -h 127.0.0.1 -p "$port" 2>/dev/null; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    fi
    bin="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin | sort -V | tail -1)"
    data="$(mktemp -d /tmp/batch-watcher-pg.XXXXXX)"
    chown postgres: "$data"
    # initdb refuses to run as root: the cluster belongs to the postgres user the package made.
    runuser -u postgres -- "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null
    runuser -u postgres -- "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
        -o "-p $port -k $data -c listen_addresses=127.0.0.1" start >/dev/null
    echo "postgres.sh: started a throwaway PostgreSQL in $data on 127.0.0.1:$port"
fi

for _ in $(seq 60); do
    pg_isready -q -h 127.0.0.1 -p "$port" && break
    sleep 1
done
exists="$(psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'test'")"
if [ "$exists" != "1" ]; then
    createdb -h 127.0.0.1 -p "$port" -U postgres test
fi
