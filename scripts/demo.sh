#!/usr/bin/env bash
# The dp demo: a throwaway PostgreSQL 15 (run as nobody on 127.0.0.1), a
# repository on a local path, a full physical backup streamed straight from
# pg_basebackup into the repository, changes, a second backup that stores only
# what changed, a restore into a new data directory, a check that the
# restored server has exactly the data of the backup, and a full verification
# of the repository. Everything lives in a temp dir and every process it
# starts is stopped by PID at the end.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$here/bin}
PGBIN=/usr/lib/postgresql/15/bin
export PATH="$BIN:$PATH"

work=$(mktemp -d /tmp/dp-demo-XXXXXX)
chmod 755 "$work"
chown nobody "$work"
pids=()
cleanup() {
	for pid in "${pids[@]}"; do
		kill -INT "$pid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	done
	rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
as_pg() { runuser -u nobody -- "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_pg() { # DATADIR PORT
	as_pg "$PGBIN/pg_ctl" -D "$1" -l "$1.log" -w -o "-p $2 -k $work -c listen_addresses=127.0.0.1" start >/dev/null
	pids+=("$(head -n 1 "$1/postmaster.pid")")
}
sql() { # PORT SQL
	psql -X -A -t -q -h 127.0.0.1 -p "$1" -U nobody -d postgres -v ON_ERROR_STOP=1 -c "$2"
}
checksum() { # PORT: one line per table, over every row in key order
	sql "$1" "select 'accounts', count(*), md5(string_agg(aid||':'||abalance, ',' order by aid)) from pgbench_accounts
	          union all select 'history', count(*), md5(coalesce(string_agg(tid||':'||aid||':'||delta, ',' order by mtime, tid, aid), '')) from pgbench_history"
}

step "a throwaway PostgreSQL 15 in $work"
as_pg mkdir "$work/pgdata"
as_pg "$PGBIN/initdb" -D "$work/pgdata" -U nobody --data-checksums >/dev/null
port=$(free_port)
start_pg "$work/pgdata" "$port"
as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p "$port" -U nobody -i -s 10 -q postgres 2>&1 | tail -n 1

step "a repository (the passphrase comes from the environment, never a flag)"
export DP_REPO_PASSPHRASE="demo passphrase $(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
export DP_REPO="$work/repo"
dp repo init

step "full backup: pg_basebackup streamed straight into the repository"
as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$port" -U nobody -D - -Ft -X fetch -c fast |
	dp-worker push --json demo-full - | tee "$work/full.json"
checksum "$port" > "$work/at-backup.txt"

step "some changes, then a second full backup: only changed chunks are stored"
as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p "$port" -U nobody -c 2 -j 2 -t 500 postgres >/dev/null 2>&1
as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$port" -U nobody -D - -Ft -X fetch -c fast |
	dp-worker push --json demo-full - | tee "$work/second.json"
dp-worker ls

step "restore the first backup into a new data directory and start it"
first=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$work/full.json")
as_pg mkdir -m 700 "$work/restored"
dp-worker pull "$first" - | as_pg tar -x -C "$work/restored"
port2=$(free_port)
start_pg "$work/restored" "$port2"
checksum "$port2" > "$work/restored.txt"
cat "$work/restored.txt"
if cmp -s "$work/at-backup.txt" "$work/restored.txt"; then
	echo "restored data equals the data at backup time"
else
	echo "restored data differs from the data at backup time" >&2
	diff "$work/at-backup.txt" "$work/restored.txt" >&2 || true
	exit 1
fi

step "verify every byte of the repository"
dp repo check --read-data

step "demo complete"
