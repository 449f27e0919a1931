#!/usr/bin/env bash
# bench/push.sh — dp-worker push/pull against `zstd -T2` (the compression
# limit) and restic (Debian's) on the same two streams, as issue 2 asks:
#
#   pg    a tar stream of a PostgreSQL 15 data directory after
#         `pgbench -i -s 100` (~1.5 GB)
#   text  a table of random text, CSV (~3:1 with zstd), less compressible
#
# For each stream and each run it times (GNU time): dp-worker push into a
# fresh repository and pull back; zstd -T2 at dp's zstd level to /dev/null
# (the compression limit: no file written) and zstd -d of its output; restic
# backup --stdin into a fresh repository and restic dump. dp and restic
# write their repositories on disk with fsync; every timed step starts
# after a `sync`, so one tool's writeback is not charged to the next. It prints
# the medians as a markdown table: MB/s (10^6 bytes of input per wall
# second), CPU seconds (user+sys), peak RSS, bytes stored, and the ratios
# dp/zstd and dp/restic. Every tool's output is compared with the input
# once per stream (untimed) so a fast wrong answer cannot win.
#
# Inputs are generated once and cached in $BENCH_DIR (default
# /var/tmp/dp-bench): PostgreSQL runs as nobody on a free 127.0.0.1 port in
# a directory there, and is stopped by the PID in postmaster.pid.
#
# usage: bench/push.sh [--runs N] [--only pg|text] [--generate-only]
# env:   BIN (built programs, default ./bin), BENCH_DIR, RUNS (3),
#        PG_SCALE (100), TEXT_MB (1000), DP_ZSTD_LEVEL (passed to
#        `dp repo init --zstd-level` when set), DP_INIT_ARGS (more
#        `dp repo init` options, e.g. "--chunk-avg 1M"), DP_REPO_PASSPHRASE and
#        RESTIC_PASSWORD (random ones are made when unset; never on a
#        command line).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$here/bin}
BENCH_DIR=${BENCH_DIR:-/var/tmp/dp-bench}
RUNS=${RUNS:-3}
PG_SCALE=${PG_SCALE:-100}
TEXT_MB=${TEXT_MB:-1000}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
only=""
generate_only=0

while [ $# -gt 0 ]; do
	case "$1" in
	--runs) RUNS=$2; shift 2 ;;
	--only) only=$2; shift 2 ;;
	--generate-only) generate_only=1; shift ;;
	-h | --help) sed -n '2,27p' "$0"; exit 0 ;;
	*) echo "push.sh: unknown argument \"$1\" (see --help)" >&2; exit 2 ;;
	esac
done
case "$RUNS" in '' | *[!0-9]* | 0) echo "push.sh: --runs wants a positive number" >&2; exit 2 ;; esac
case "$only" in '' | pg | text) ;; *) echo "push.sh: --only takes pg or text" >&2; exit 2 ;; esac

die() { echo "push.sh: $*" >&2; exit 1; }
log() { echo "push.sh: $*" >&2; }

need() {
	command -v "$1" >/dev/null 2>&1 || [ -x "$1" ] ||
		die "\"$1\" not found: run scripts/install-deps.sh (as root)"
}
for t in zstd restic runuser /usr/bin/time "$PGBIN/initdb" "$PGBIN/postgres" "$PGBIN/pgbench" \
	"$PGBIN/psql" "$PGBIN/pg_isready"; do
	need "$t"
done
if [ "$generate_only" = 0 ] && { [ ! -x "$BIN/dp-worker" ] || [ ! -x "$BIN/dp" ]; }; then
	die "$BIN/dp and $BIN/dp-worker not built: run make (or set BIN)"
fi

# Secrets come from the environment, never from argv.
if [ -z "${DP_REPO_PASSPHRASE:-}" ]; then
	DP_REPO_PASSPHRASE=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
fi
if [ -z "${RESTIC_PASSWORD:-}" ]; then
	RESTIC_PASSWORD=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
fi
export DP_REPO_PASSPHRASE RESTIC_PASSWORD

mkdir -p "$BENCH_DIR"
chmod 0755 "$BENCH_DIR"
PG_TAR=$BENCH_DIR/pg-s$PG_SCALE.tar
TEXT_CSV=$BENCH_DIR/text-${TEXT_MB}MB.csv

# ---- data generation (cached) ----

pg_work=$BENCH_DIR/pgwork
pg_pid=""

stop_pg() {
	[ -n "$pg_pid" ] || return 0
	if kill -0 "$pg_pid" 2>/dev/null; then
		kill -INT "$pg_pid" 2>/dev/null || true
		for _ in $(seq 1 600); do
			kill -0 "$pg_pid" 2>/dev/null || break
			sleep 0.1
		done
	fi
	pg_pid=""
}
trap stop_pg EXIT

free_port() {
	local p
	for _ in $(seq 1 100); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	die "no free TCP port on 127.0.0.1"
}

pg_port=""
start_pg() {
	rm -rf "$pg_work"
	mkdir -p "$pg_work/sock"
	chown -R nobody:nogroup "$pg_work"
	log "initdb in $pg_work/data"
	runuser -u nobody -- "$PGBIN/initdb" -D "$pg_work/data" -U postgres --auth=trust \
		--data-checksums --no-sync >"$pg_work/initdb.log" 2>&1 ||
		die "initdb failed: see $pg_work/initdb.log"
	pg_port=$(free_port)
	# wal_level=minimal: pgbench -i loads with COPY FREEZE, so the data
	# directory holds the tables rather than a second copy of them in WAL.
	runuser -u nobody -- "$PGBIN/postgres" -D "$pg_work/data" -p "$pg_port" \
		-c listen_addresses=127.0.0.1 -c unix_socket_directories="$pg_work/sock" \
		-c wal_level=minimal -c max_wal_senders=0 -c archive_mode=off \
		-c fsync=off -c synchronous_commit=off -c full_page_writes=off \
		-c max_wal_size=8GB -c checkpoint_timeout=1h \
		>"$pg_work/server.log" 2>&1 &
	for _ in $(seq 1 300); do
		if "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$pg_port" -U postgres; then
			pg_pid=$(head -n 1 "$pg_work/data/postmaster.pid")
			log "postgres running, pid $pg_pid, port $pg_port"
			return 0
		fi
		sleep 0.2
	done
	die "postgres did not start: see $pg_work/server.log"
}

psql_() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres "$@"; }

gen_pg() {
	log "pgbench -i -s $PG_SCALE (a few minutes)"
	"$PGBIN/pgbench" -i -q -s "$PG_SCALE" -h 127.0.0.1 -p "$pg_port" -U postgres postgres \
		>"$pg_work/pgbench.log" 2>&1 || die "pgbench failed: see $pg_work/pgbench.log"
	psql_ -c CHECKPOINT postgres
	stop_pg # a clean shutdown: the directory is what a cold backup would see
	log "tar of the data directory -> $PG_TAR"
	tar -C "$pg_work" -cf "$PG_TAR.tmp" data
	mv "$PG_TAR.tmp" "$PG_TAR"
}

# Rows of random text: sequential ids, dates, words from a small set, hex
# digests and numbers — about 3:1 with zstd -3, like a table of
# user-entered data (a pg tar is ~8:1 and flatters every compressor).
gen_text() {
	local rows=$((TEXT_MB * 1000000 / 112))
	log "random text table, $rows rows -> $TEXT_CSV"
	psql_ -c "COPY (SELECT i, date '2020-01-01' + (random() * 1500)::int,
		(ARRAY['pending','shipped','delivered','returned','cancelled','on hold'])[1 + (random() * 5)::int],
		(ARRAY['alice','bob','carol','dave','erin','frank','grace','heidi','ivan','judy'])[1 + (random() * 9)::int]
			|| '.' || (random() * 999)::int || '@example.com',
		md5(random()::text), (random() * 100000)::numeric(10,2),
		repeat(chr(97 + (random() * 25)::int), 1 + (random() * 12)::int),
		(ARRAY['left at the door','call before delivery','gift wrap','fragile',
			'signature required','no notes'])[1 + (random() * 5)::int]
		FROM generate_series(1, $rows) i) TO STDOUT WITH CSV" postgres >"$TEXT_CSV.tmp"
	mv "$TEXT_CSV.tmp" "$TEXT_CSV"
}

want_pg=1
want_text=1
[ "$only" = text ] && want_pg=0
[ "$only" = pg ] && want_text=0
if { [ "$want_pg" = 1 ] && [ ! -s "$PG_TAR" ]; } || { [ "$want_text" = 1 ] && [ ! -s "$TEXT_CSV" ]; }; then
	start_pg
	if [ "$want_text" = 1 ] && [ ! -s "$TEXT_CSV" ]; then gen_text; fi
	if [ "$want_pg" = 1 ] && [ ! -s "$PG_TAR" ]; then gen_pg; fi
	stop_pg
	rm -rf "$pg_work"
fi
[ "$generate_only" = 1 ] && { log "data ready in $BENCH_DIR"; exit 0; }

# ---- measurements ----

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
work=$BENCH_DIR/work
results=$BENCH_DIR/results.txt
rm -rf "$work"
mkdir -p "$work"
: >"$results"

# timed LABEL CMD... : runs CMD under GNU time (stdin/stdout as redirected
# by the caller) and appends "LABEL wall cpu rss_kib" to $results.
timed() {
	local label=$1 tf="$work/time.out"
	shift
	sync
	/usr/bin/time -o "$tf" -f '%e %U %S %M' "$@" || die "$label: \"$*\" failed"
	awk -v l="$label" '{ printf "%s %s %.2f %s\n", l, $1, $2 + $3, $4 }' "$tf" >>"$results"
}
bytes() { du -sb "$1" | cut -f1; }
stored() { echo "$1 $2" >>"$results"; } # "LABEL.stored bytes"

zstd_level() {
	sed -n 's/.*"compression":{[^}]*"level":\(-\{0,1\}[0-9]*\).*/\1/p' "$1/config"
}

dp_init() {
	rm -rf "$1"
	# shellcheck disable=SC2086 # DP_INIT_ARGS is a list of options
	"$BIN/dp" repo init --repo "$1" ${DP_ZSTD_LEVEL:+--zstd-level "$DP_ZSTD_LEVEL"} \
		${DP_INIT_ARGS:-} >/dev/null
}

verify() { # LABEL: compare stdin with the input
	cmp -s - "$input" || die "$1: the bytes read back differ from the input"
	log "$1: round trip verified"
}

level=""
for ds in pg text; do
	[ "$ds" = pg ] && { [ "$want_pg" = 1 ] || continue; input=$PG_TAR; }
	[ "$ds" = text ] && { [ "$want_text" = 1 ] || continue; input=$TEXT_CSV; }
	size=$(stat -c %s "$input")
	echo "$ds.size $size" >>"$results"
	cat "$input" >/dev/null # into the page cache, for every tool alike
	for run in $(seq 1 "$RUNS"); do
		log "$ds: run $run of $RUNS"
		# dp
		dp_init "$work/dp"
		level=$(zstd_level "$work/dp")
		[ -n "$level" ] || die "cannot read the zstd level from $work/dp/config"
		timed "$ds.dp.push" "$BIN/dp-worker" push --repo "$work/dp" --quiet bench - \
			<"$input" >/dev/null
		stored "$ds.dp.stored" "$(bytes "$work/dp")"
		timed "$ds.dp.pull" "$BIN/dp-worker" pull --repo "$work/dp" --quiet bench - >/dev/null
		[ "$run" = 1 ] && "$BIN/dp-worker" pull --repo "$work/dp" --quiet bench - | verify "$ds dp"
		rm -rf "$work/dp"
		# zstd: timed to /dev/null; its output (the same every run) is
		# written once, untimed, for its size and the decompression.
		timed "$ds.zstd.push" zstd -q -T2 "-$level" -c <"$input" >/dev/null
		if [ "$run" = 1 ]; then
			zstd -q -T2 "-$level" -c <"$input" >"$work/z.zst"
			zstd -q -d -c "$work/z.zst" | verify "$ds zstd"
		fi
		stored "$ds.zstd.stored" "$(bytes "$work/z.zst")"
		timed "$ds.zstd.pull" zstd -q -d -c "$work/z.zst" >/dev/null
		# restic
		rm -rf "$work/restic" "$work/restic-cache"
		restic -q -r "$work/restic" --cache-dir "$work/restic-cache" init >/dev/null
		timed "$ds.restic.push" restic -q -r "$work/restic" --cache-dir "$work/restic-cache" \
			backup --stdin --stdin-filename bench.in <"$input" >/dev/null
		stored "$ds.restic.stored" "$(bytes "$work/restic")"
		timed "$ds.restic.pull" restic -q -r "$work/restic" --cache-dir "$work/restic-cache" \
			dump latest /bench.in >/dev/null
		[ "$run" = 1 ] && restic -q -r "$work/restic" --cache-dir "$work/restic-cache" \
			dump latest /bench.in | verify "$ds restic"
		rm -rf "$work/restic" "$work/restic-cache"
	done
	rm -f "$work/z.zst"
done

# ---- report ----

# med LABEL FIELD: median of FIELD (2 wall, 3 cpu, 4 rss KiB; stored: 2).
med() {
	awk -v l="$1" -v f="$2" '$1 == l { print $f }' "$results" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2];
			else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
calc() { awk "BEGIN { v = $1; if (v != v) print \"-\"; else printf \"%$2\", v }"; }

echo
echo "### dp push/pull vs zstd -T2 and restic"
echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -n 1))," \
	"medians of $RUNS runs, input in the page cache, repositories in $BENCH_DIR" \
	"($(df -T "$BENCH_DIR" | awk 'NR == 2 { print $2 }')). dp zstd level $level${DP_INIT_ARGS:+, init options \"$DP_INIT_ARGS\"};" \
	"$(zstd --version | sed 's/.*\(v[0-9.]*\).*/zstd \1/'); $(restic version | cut -d' ' -f1-2)."
echo "MB = 10^6 bytes of input; MB/s = input size / wall time; CPU = user + sys seconds."
echo "Load average before / after: $load_before / $(cut -d' ' -f1-3 /proc/loadavg) —" \
	"with other work on the machine the wall-clock figures are noisy; CPU seconds much less so."
echo
echo "| input | tool | push MB/s | push CPU s | push peak RSS MiB | restore MB/s | restore CPU s | restore peak RSS MiB | stored MB | input/stored |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for ds in pg text; do
	grep -q "^$ds.size " "$results" || continue
	size=$(awk -v l="$ds.size" '$1 == l { print $2 }' "$results")
	case $ds in
	pg) name="pg tar, pgbench -s $PG_SCALE, $(calc "$size / 1e6" .0f) MB" ;;
	text) name="random text CSV, $(calc "$size / 1e6" .0f) MB" ;;
	esac
	for tool in dp zstd restic; do
		case $tool in
		dp) tname="dp-worker push / pull" ;;
		zstd) tname="zstd -T2 -$level / zstd -d" ;;
		restic) tname="restic backup --stdin / dump" ;;
		esac
		pw=$(med "$ds.$tool.push" 2) pc=$(med "$ds.$tool.push" 3) pr=$(med "$ds.$tool.push" 4)
		rw=$(med "$ds.$tool.pull" 2) rc=$(med "$ds.$tool.pull" 3) rr=$(med "$ds.$tool.pull" 4)
		st=$(med "$ds.$tool.stored" 2)
		echo "| $name | $tname | $(calc "$size / 1e6 / $pw" .0f) | $(calc "$pc" .1f) |" \
			"$(calc "$pr / 1024" .0f) | $(calc "$size / 1e6 / $rw" .0f) | $(calc "$rc" .1f) |" \
			"$(calc "$rr / 1024" .0f) | $(calc "$st / 1e6" .0f) | $(calc "$size / $st" .2f) |"
		name=""
	done
done
echo
echo "| input | dp/zstd push MB/s | dp/zstd restore MB/s | dp/restic push MB/s | dp/restic restore MB/s | dp/zstd push MB per CPU s | dp/restic push MB per CPU s | dp/restic stored bytes | dp peak RSS MiB (push, restore) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for ds in pg text; do
	grep -q "^$ds.size " "$results" || continue
	dpw=$(med "$ds.dp.push" 2) dpr=$(med "$ds.dp.pull" 2)
	echo "| $ds | $(calc "$(med "$ds.zstd.push" 2) / $dpw" .2f) |" \
		"$(calc "$(med "$ds.zstd.pull" 2) / $dpr" .2f) |" \
		"$(calc "$(med "$ds.restic.push" 2) / $dpw" .2f) |" \
		"$(calc "$(med "$ds.restic.pull" 2) / $dpr" .2f) |" \
		"$(calc "$(med "$ds.zstd.push" 3) / $(med "$ds.dp.push" 3)" .2f) |" \
		"$(calc "$(med "$ds.restic.push" 3) / $(med "$ds.dp.push" 3)" .2f) |" \
		"$(calc "$(med "$ds.dp.stored" 2) / $(med "$ds.restic.stored" 2)" .3f) |" \
		"$(calc "$(med "$ds.dp.push" 4) / 1024" .0f), $(calc "$(med "$ds.dp.pull" 4) / 1024" .0f) |"
done
echo
echo "Targets (issue 2): dp push >= 1.5x restic's MB/s with a repository no larger than restic's" \
	"(dp/restic stored <= 1.00), >= 0.80 of zstd -T2's MB/s, peak RSS < 128 MiB."
