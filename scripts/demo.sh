#!/usr/bin/env bash
# The dp demo, told through resources: a throwaway PostgreSQL 15 (run as
# nobody on 127.0.0.1), a BackupRepo on a local path, a minimal BackupPolicy
# (the engine's default methods: full and wal), a BackupSchedule, continuous
# WAL archiving, a full backup, changes, a point-in-time restore to a moment
# between two changes (checked row for row), a restore from a catalog rebuilt
# out of the repository on a fresh $DP_HOME, a deletion and a full
# verification of the repository. dp runs as the database's OS user. No dp-controller runs: every `dp` command
# drives its resource itself (the embedded default). Everything lives in a
# temp dir and every process it starts is stopped by PID at the end.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$here/bin}
PGBIN=/usr/lib/postgresql/15/bin
export PATH="$BIN:$PATH"
export DP_METHODS_DIR=${DP_METHODS_DIR:-$here/methods}

work=$(mktemp -d /tmp/dp-demo-XXXXXX)
chmod 755 "$work"
chown nobody "$work"
# dp runs as nobody below. A checkout nobody cannot reach (a clone under
# /root, or any 0700 directory) gets a copy of the programs and methods in
# the work dir, removed with it.
if ! runuser -u nobody -- test -x "$BIN/dp" 2>/dev/null; then
	cp -R "$BIN" "$work/bin"
	cp -R "$DP_METHODS_DIR" "$work/methods"
	chmod -R a+rX "$work/bin" "$work/methods"
	BIN=$work/bin
	export PATH="$BIN:$PATH" DP_METHODS_DIR=$work/methods
fi
export DP_HOME=$work/home
pids=()
cleanup() {
	# The archiver of the continuous backup, if still running (by PID).
	for f in "$work"/home/logs/*.pid "$work"/home2/logs/*.pid; do
		[ -f "$f" ] || continue
		read -r pid _ <"$f" || continue
		kill -TERM -- "-$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		kill -INT "$pid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	done
	rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }
as_pg() { runuser -u nobody -- "$@"; }
# dp runs as the database's OS user (nobody here), like the server: its
# workers then own what they write (the repository, the restored data).
dp() { as_pg "$BIN/dp" "$@"; }
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
archive_now() { # PORT: switch WAL and wait until the segment is archived
	local seg
	seg=$(sql "$1" "select pg_walfile_name(pg_switch_wal())")
	for _ in $(seq 300); do
		[ "$(sql "$1" "select coalesce(last_archived_wal,'') >= '$seg' from pg_stat_archiver")" = t ] && return 0
		sleep 0.1
	done
	echo "segment $seg was not archived" >&2
	return 1
}

step "a throwaway PostgreSQL 15 in $work (archive_mode on)"
as_pg mkdir "$work/pgdata"
as_pg "$PGBIN/initdb" -D "$work/pgdata" -U nobody --data-checksums >/dev/null
printf "archive_mode = on\nwal_level = replica\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n" "$work" |
	as_pg tee -a "$work/pgdata/postgresql.conf" >/dev/null
port=$(free_port)
start_pg "$work/pgdata" "$port"
as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p "$port" -U nobody -i -s 5 -q postgres 2>&1 | tail -n 1

step "resources: a repository, a minimal policy, a schedule (the passphrase comes from the environment)"
export DP_DEMO_PASSPHRASE="demo passphrase $(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
cat >"$work/dp.yaml" <<EOF
apiVersion: dataprotection.dp.io/v1alpha1
kind: BackupRepo
metadata: {name: nas}
spec:
  posix: {path: $work/repo}
  encryption: {passphraseFrom: {env: DP_DEMO_PASSPHRASE}}
---
apiVersion: dataprotection.dp.io/v1alpha1
kind: BackupPolicy
metadata: {name: pg}
spec:
  backupRepoName: nas
  target: {engine: postgresql, host: 127.0.0.1, port: $port, user: nobody, dataDir: $work/pgdata}
---
apiVersion: dataprotection.dp.io/v1alpha1
kind: BackupSchedule
metadata: {name: pg-nightly}
spec:
  backupPolicyName: pg
  startingDeadlineMinutes: 60
  schedules:
    - {backupMethod: full, cronExpression: "0 1 * * *", retentionPeriod: 7d}
    - {backupMethod: wal, cronExpression: "*/5 * * * *", retentionPeriod: 7d}
EOF
cat "$work/dp.yaml"
show dp apply -f "$work/dp.yaml"
show dp get actionsets
show dp describe backupschedule pg-nightly | sed -n '/^[Ss]tatus\|next\|Next/,$p' | head -n 12

step "continuous backup: WAL archiving starts, the backup stays Running with a live window"
show dp backup --policy pg --method wal
show dp get backuprepo nas

step "a full backup (pg_basebackup streamed into the repository)"
show dp backup --policy pg --wait

step "changes; remember the data at time T; more changes after T"
as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p "$port" -U nobody -c 2 -j 2 -t 300 postgres >/dev/null 2>&1
sleep 1.1
checksum "$port" >"$work/at-T.txt"
T=$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)
sleep 1.1
sql "$port" "update pgbench_accounts set abalance = abalance + 1000 where aid % 7 = 0"
sql "$port" "delete from pgbench_history where tid = 1"
archive_now "$port"
echo "T = $T"
cat "$work/at-T.txt"
echo "now:"
checksum "$port"
show dp get backups

step "point-in-time restore to T into a new data directory (dp picks the archive and the base backup)"
as_pg mkdir "$work/pitr-parent"
port2=$(free_port)
show dp restore --policy pg --time "$T" --to "$work/pitr-parent/data" --port "$port2" --wait
pids+=("$(head -n 1 "$work/pitr-parent/data/postmaster.pid")")
checksum "$port2" >"$work/pitr.txt"
if cmp -s "$work/at-T.txt" "$work/pitr.txt"; then
	echo "restored data equals the data at T, row for row"
else
	echo "restored data differs from the data at T" >&2
	diff "$work/at-T.txt" "$work/pitr.txt" >&2 || true
	exit 1
fi

step "a restore time outside the window fails at once, before anything changes"
if dp restore --policy pg --time 2001-01-01T00:00:00Z --to "$work/never" --port "$port2"; then
	echo "a restore to 2001 should have failed" >&2
	exit 1
fi
[ ! -e "$work/never" ] && echo "(nothing was created)"

step "the catalog rebuilt from the repository alone, on a fresh \$DP_HOME"
export DP_HOME=$work/home2
sed -n '1,/^---$/p' "$work/dp.yaml" | sed '$d' >"$work/repo-only.yaml"
show dp apply -f "$work/repo-only.yaml"
show dp catalog import --repo nas
show dp get backups
full=$(dp get backups -o json | python3 -c 'import json,sys; print([b["metadata"]["name"] for b in json.load(sys.stdin)["items"] if b["spec"]["backupMethod"]=="full"][0])')
as_pg mkdir "$work/copy-parent"
port3=$(free_port)
show dp restore --backup "$full" --to "$work/copy-parent/data" --port "$port3"
pids+=("$(head -n 1 "$work/copy-parent/data/postmaster.pid")")
sql "$port3" "select 'restored from the imported catalog: ' || count(*) || ' accounts' from pgbench_accounts"

step "deleting the continuous backup stops archiving, removes its WAL and prunes"
export DP_HOME=$work/home
wal=$(dp get backups -o json | python3 -c 'import json,sys; print([b["metadata"]["name"] for b in json.load(sys.stdin)["items"] if b["spec"]["backupMethod"]=="wal"][0])')
show dp backup delete "$wal"
sql "$port" "show archive_command" | sed 's/^/archive_command now: "/; s/$/"/'
show dp get backups

step "verify every byte of the repository"
DP_REPO=$work/repo DP_REPO_PASSPHRASE=$DP_DEMO_PASSPHRASE show dp repo check --read-data

step "demo complete"
