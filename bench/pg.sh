#!/usr/bin/env bash
# PostgreSQL physical backups: dp's two full-backup methods against
# pgBackRest on the same data.
#
# One PostgreSQL 15 cluster with data checksums (pgbench scale 100 plus a
# less compressible table of random text) is made once and copied, so every
# tool starts from the same bytes. On each copy, in one run: a full backup;
# heavy churn (pgbench -c 2 -j 2 -t 20000); a second backup; light churn
# (-t 1000); a third backup; a restore of the third backup into a new
# directory, durable. dp: methods/postgresql/scripts/backup-files.sh
# (postgresql-filebackup: pg_backup_start, dp-worker push --trailer of the
# data directory, pg_backup_stop, WAL + backup_label) and backup-full.sh
# (postgresql-basebackup: pg_basebackup | dp-worker stream-push); restore
# is restore.sh's data path, dp-worker pull NAME DIR (extracts itself,
# syncfs before it exits). pgBackRest 2.45: zst, process-max 2, posix repo,
# full then incr, incr; its restore fsyncs every file.
#
# Prints, per dp method, the medians over RUNS runs of wall time, CPU
# (user+sys of every process of the step), peak RSS (largest process of the
# step), bytes added to each repository, and the dp/pgBackRest ratios; then
# every run's numbers. Needs root (the servers run as nobody).
#
#   bash bench/pg.sh                      # BIN=bin, scale 100, 1 run, both methods
#   RUNS=3 bash bench/pg.sh               # medians of 3 runs (the machine is noisy)
#   METHODS=filebackup bash bench/pg.sh   # one dp method (filebackup, basebackup)
#   SCALE=10 BENCH_DIR=/tmp/x bash bench/pg.sh
#   DP_INIT_OPTS="--chunk-avg 16K" bash bench/pg.sh   # repo init options
#   DP_CHUNK_AVG= bash bench/pg.sh        # basebackup at the repository's chunk
#                                         # size instead of its ActionSet's 16K
#   DP_ZSTD_LEVEL= bash bench/pg.sh       # the repository's zstd level instead
#                                         # of the ActionSets' (1)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "${BIN:-$here/bin}" && pwd)
PGB=${DP_PG_BIN:-/usr/lib/postgresql/15/bin}
SCALE=${SCALE:-100}
HEAVY=${HEAVY:-20000}
LIGHT=${LIGHT:-1000}
RANDTEXT_ROWS=${RANDTEXT_ROWS:-1000000}
RUNS=${RUNS:-1}
METHODS=${METHODS:-filebackup basebackup}
BB_CHUNK_AVG=${DP_CHUNK_AVG-16K} # basebackup's, as its ActionSet sets it
U=nobody
[ "$(id -u)" -eq 0 ] || { echo "bench/pg.sh: run as root (servers run as $U)" >&2; exit 2; }
command -v pgbackrest >/dev/null || { echo "bench/pg.sh: pgbackrest is not installed (scripts/install-deps.sh)" >&2; exit 2; }
[ -x "$BIN/dp-worker" ] || { echo "bench/pg.sh: build first (make); BIN=$BIN" >&2; exit 2; }

dir=${BENCH_DIR:-$(mktemp -d /tmp/dp-bench-pg-XXXXXX)}
mkdir -p "$dir" && chown "$U" "$dir" && chmod 755 "$dir"
cleanup() {
	for d in "$dir"/tmpl "$dir"/*/data; do
		[ -f "$d/postmaster.pid" ] || continue
		pid=$(head -n 1 "$d/postmaster.pid")
		kill -INT "$pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	done
	[ -n "${BENCH_KEEP:-}" ] || rm -rf "$dir"
}
trap cleanup EXIT
as() { runuser -u "$U" -- "$@"; }
port_of() { echo $((20000 + RANDOM % 20000)); }

start_pg() { # DATA PORT
	as "$PGB/pg_ctl" -D "$1" -l "$1.log" -o "-p $2 -k $dir" -w -t 300 start >/dev/null
}
stop_pg() { # DATA
	local pid
	pid=$(head -n 1 "$1/postmaster.pid" 2>/dev/null) || return 0
	kill -INT "$pid"
	while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}
psql_do() { "$PGB/psql" -X -q -A -t -h "$dir" -p "$1" -U "$U" -d postgres -c "$2"; }

# ---- the template cluster ----
echo "== making the cluster (pgbench scale $SCALE + random text) in $dir" >&2
as "$PGB/initdb" -D "$dir/tmpl" -U "$U" --data-checksums -A trust >/dev/null
cat >>"$dir/tmpl/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$dir'
archive_mode = on
archive_command = '/bin/true'
max_wal_size = 4GB
shared_buffers = 256MB
log_min_messages = warning
EOF
P=$(port_of)
start_pg "$dir/tmpl" "$P"
as "$PGB/pgbench" -i -s "$SCALE" -q -h "$dir" -p "$P" postgres 2>/dev/null
# About 3:1 for zstd: a random md5 and a few words from a small vocabulary.
psql_do "$P" "CREATE TABLE randtext AS SELECT g AS id, md5(random()::text) || ' ' ||
  (ARRAY['alpha','beta','gamma','delta','omega','sigma'])[1 + (random()*5)::int] || ' ' ||
  (ARRAY['red','green','blue','black','white','grey'])[1 + (random()*5)::int] || ' ' ||
  md5(g::text) AS body FROM generate_series(1, $RANDTEXT_ROWS) g; CHECKPOINT" >/dev/null
stop_pg "$dir/tmpl"
datasize=$(du -sb --exclude=pg_wal "$dir/tmpl" | cut -f1)
echo "== data directory: $((datasize / 1000000)) MB without pg_wal" >&2
# Let autovacuum finish its first pass over the loaded tables now (hint bits,
# visibility map, freezing would otherwise change every page between the
# first two backups of whichever tool runs first).
start_pg "$dir/tmpl" "$P"
psql_do "$P" "VACUUM (FREEZE, ANALYZE)" >/dev/null
psql_do "$P" "CHECKPOINT" >/dev/null
stop_pg "$dir/tmpl"

# measure LABEL CMD...: appends "label wall cpu rss" to $dir/results.
measure() {
	local label=$1
	shift
	if ! /usr/bin/time -o "$dir/time.out" -f '%e %U %S %M' "$@" >/dev/null 2>"$dir/step.err"; then
		echo "bench/pg.sh: step \"$label\" failed:" >&2
		cat "$dir/step.err" >&2
		exit 1
	fi
	read -r wall usr sys rss <"$dir/time.out"
	printf '%s %s %s %s\n' "$label" "$wall" "$(echo "$usr + $sys" | bc)" "$rss" >>"$dir/results"
}
# Before a restore: nothing cached, no writeback of earlier steps running.
settle() {
	sync
	echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
	sleep 5
}
repo_bytes() { du -sb "$1" | cut -f1; }
added() { # LABEL REPO BEFORE
	echo "$1 $(($(repo_bytes "$2") - $3))" >>"$dir/added"
}
: >"$dir/results"
: >"$dir/added"

# run_dp LABEL SCRIPT: full, heavy churn, second, light churn, third
# backup through the method script SCRIPT, then a durable restore of the
# third (the data path of restore.sh: dp-worker pull extracts and syncfs).
run_dp() {
	local label=$1 script=$2 d=$dir/$1 untar=()
	echo "== $label ($script), run $run" >&2
	mkdir -p "$d" && chown "$U" "$d"
	cp -a "$dir/tmpl" "$d/data"
	P=$(port_of)
	start_pg "$d/data" "$P"
	sync # the copy's writeback must not run during the timed backup
	sleep 2
	export DP_ZSTD_LEVEL=${DP_ZSTD_LEVEL-1} # as the postgresql ActionSets set it
	# as the ActionSets set them: postgresql-filebackup cuts relation files in
	# 8 KiB blocks, postgresql-basebackup its tar stream in 16 KiB
	# content-defined chunks
	if [ "$script" = backup-files.sh ]; then
		export DP_BLOCK_SIZE=8K
		unset DP_CHUNK_AVG
	else
		unset DP_BLOCK_SIZE
		export DP_CHUNK_AVG=$BB_CHUNK_AVG
	fi
	export DP_REPO=$d/repo DP_REPO_PASSPHRASE=bench-passphrase DP_WORKER=$BIN/dp-worker DP_PG_BIN=$PGB
	export DP_DB_HOST=$dir DP_DB_PORT=$P DP_DB_USER=$U DP_DATA_DIR=$d/data
	# shellcheck disable=SC2086
	as "$BIN/dp" repo init --repo "$DP_REPO" ${DP_INIT_OPTS:-} >/dev/null
	b=$(repo_bytes "$DP_REPO")
	measure "$label full" runuser -u "$U" -- env DP_BACKUP_NAME=b1 bash "$here/methods/postgresql/scripts/$script"
	added "$label full" "$DP_REPO" "$b"
	as "$PGB/pgbench" -n -c 2 -j 2 -t "$HEAVY" -h "$dir" -p "$P" postgres >/dev/null 2>&1
	b=$(repo_bytes "$DP_REPO")
	measure "$label heavy" runuser -u "$U" -- env DP_BACKUP_NAME=b2 DP_PARENT_BACKUP_NAME=b1 bash "$here/methods/postgresql/scripts/$script"
	added "$label heavy" "$DP_REPO" "$b"
	as "$PGB/pgbench" -n -c 2 -j 2 -t "$LIGHT" -h "$dir" -p "$P" postgres >/dev/null 2>&1
	b=$(repo_bytes "$DP_REPO")
	measure "$label light" runuser -u "$U" -- env DP_BACKUP_NAME=b3 DP_PARENT_BACKUP_NAME=b2 bash "$here/methods/postgresql/scripts/$script"
	added "$label light" "$DP_REPO" "$b"
	stop_pg "$d/data"
	[ "$(as "$BIN/dp-worker" stat --json b3 | jq -r .kind)" = tree ] || untar=(--untar)
	settle
	as mkdir -m 700 "$d/restore"
	measure "$label restore" runuser -u "$U" -- "$BIN/dp-worker" pull --quiet "${untar[@]}" b3 "$d/restore"
	rm -rf "$d"
}

run_pbr() {
	local d=$dir/pbr
	echo "== pgBackRest $(pgbackrest version | cut -d' ' -f2), run $run" >&2
	mkdir -p "$d" && chown "$U" "$d"
	cp -a "$dir/tmpl" "$d/data"
	P=$(port_of)
	conf=$d/pgbackrest.conf
	cat >"$conf" <<EOC
[global]
repo1-path=$d/repo
repo1-retention-full=10
compress-type=zst
process-max=2
start-fast=y
log-level-console=warn
log-level-file=off
lock-path=$d/lock
spool-path=$d/spool

[bench]
pg1-path=$d/data
pg1-port=$P
pg1-socket-path=$dir
pg1-user=$U
EOC
	chown "$U" "$conf"
	as mkdir -p "$d/repo"
	sed -i "s|^archive_command = .*|archive_command = 'pgbackrest --config=$conf --stanza=bench archive-push %p'|" "$d/data/postgresql.conf"
	start_pg "$d/data" "$P"
	sync
	sleep 2
	as pgbackrest --config="$conf" --stanza=bench stanza-create >/dev/null
	b=$(repo_bytes "$d/repo")
	measure "pgbackrest full" runuser -u "$U" -- pgbackrest --config="$conf" --stanza=bench --type=full backup
	added "pgbackrest full" "$d/repo" "$b"
	as "$PGB/pgbench" -n -c 2 -j 2 -t "$HEAVY" -h "$dir" -p "$P" postgres >/dev/null 2>&1
	b=$(repo_bytes "$d/repo")
	measure "pgbackrest heavy" runuser -u "$U" -- pgbackrest --config="$conf" --stanza=bench --type=incr backup
	added "pgbackrest heavy" "$d/repo" "$b"
	as "$PGB/pgbench" -n -c 2 -j 2 -t "$LIGHT" -h "$dir" -p "$P" postgres >/dev/null 2>&1
	b=$(repo_bytes "$d/repo")
	measure "pgbackrest light" runuser -u "$U" -- pgbackrest --config="$conf" --stanza=bench --type=incr backup
	added "pgbackrest light" "$d/repo" "$b"
	stop_pg "$d/data"
	settle
	as mkdir -m 700 "$d/restore"
	measure "pgbackrest restore" runuser -u "$U" -- pgbackrest --config="$conf" --stanza=bench --pg1-path="$d/restore" restore
	rm -rf "$d"
}

# The order rotates from run to run, so that no tool always comes first
# (right after the template is made) or after the same neighbour.
tools=()
for m in $METHODS; do
	case "$m" in
	filebackup | basebackup) tools+=("$m") ;;
	*) echo "bench/pg.sh: unknown method \"$m\" in METHODS" >&2; exit 2 ;;
	esac
done
tools+=(pgbackrest)
for run in $(seq "$RUNS"); do
	for ((i = 0; i < ${#tools[@]}; i++)); do
		case "${tools[$(((i + run - 1) % ${#tools[@]}))]}" in
		filebackup) run_dp dp-files backup-files.sh ;;
		basebackup) run_dp dp-bb backup-full.sh ;;
		pgbackrest) run_pbr ;;
		esac
	done
done

# ---- the table (medians over the runs) ----
med() { # LABEL STEP FIELD(1 wall, 2 cpu, 3 rss; 1 bytes) FILE(results|added): median or empty
	awk -v l="$1 $2" -v f="$3" '{ k = $1 " " $2 } k == l { print $(f + 2) }' "$dir/$4" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
echo
printf 'data directory: %d MB without pg_wal (pgbench scale %s + randtext %s rows); churn -t %s / -t %s; dp zstd level %s; medians of %s run(s)\n' \
	$((datasize / 1000000)) "$SCALE" "$RANDTEXT_ROWS" "$HEAVY" "$LIGHT" "${DP_ZSTD_LEVEL:-of the repository}" "$RUNS"
for m in $METHODS; do
	case "$m" in filebackup) label=dp-files ;; basebackup) label=dp-bb ;; esac
	printf '\ndp method: postgresql-%s\n\n' "$m"
	printf '| step | dp wall s | pgBackRest wall s | dp/pgBR | dp CPU s | pgBR CPU s | dp peak RSS MiB | pgBR peak RSS MiB | dp repo +MB | pgBR repo +MB | dp/pgBR bytes |\n'
	printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
	for step in full heavy light restore; do
		dw=$(med "$label" "$step" 1 results) dc=$(med "$label" "$step" 2 results) dr=$(med "$label" "$step" 3 results)
		pw=$(med pgbackrest "$step" 1 results) pc=$(med pgbackrest "$step" 2 results) pr=$(med pgbackrest "$step" 3 results)
		da=$(med "$label" "$step" 1 added) pa=$(med pgbackrest "$step" 1 added)
		printf '| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f | %.0f | %s | %s | %s |\n' "$step" "$dw" "$pw" \
			"$(echo "$dw / $pw" | bc -l)" "$dc" "$pc" "$(echo "$dr / 1024" | bc -l)" "$(echo "$pr / 1024" | bc -l)" \
			"$([ -n "$da" ] && printf '%.1f' "$(echo "$da / 1000000" | bc -l)" || echo -)" \
			"$([ -n "$pa" ] && printf '%.1f' "$(echo "$pa / 1000000" | bc -l)" || echo -)" \
			"$([ -n "$da" ] && [ -n "$pa" ] && printf '%.2f' "$(echo "$da / $pa" | bc -l)" || echo -)"
	done
done
echo
echo "every run (label step wall cpu rss_kb):"
cat "$dir/results"
