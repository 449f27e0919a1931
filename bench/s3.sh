#!/usr/bin/env bash
# bench/s3.sh — dp-worker push/pull to a posix repository and to an S3
# repository on s3rver (tests/node_modules, a JavaScript S3 server) in the
# same run, on the streams bench/push.sh uses (issue 3, "Benchmark"):
#
#   pg    a tar stream of a PostgreSQL 15 data directory (pgbench -s 100)
#   text  a table of random text, CSV (~1 GB)
#
# Inputs are cached in $BENCH_DIR (default /var/tmp/dp-bench); when one is
# missing, `bench/push.sh --generate-only` makes it. For each stream and each
# run it times (GNU time) dp-worker push into a fresh posix repository and
# pull back, then the same against a fresh s3rver (its own data directory
# per run, removed after the run, the server stopped by PID). While dp
# pushes to or pulls from s3rver, the server's CPU time (utime+stime,
# /proc/PID/stat fields 14+15) is sampled before and after: its share of
# one core over the wall time shows whether dp keeps s3rver busy (s3rver's
# JavaScript runs on one thread, so near 100% s3rver is the bottleneck).
# The posix repository fsyncs what it writes; s3rver does not.
# Every timed step starts after a `sync`. Each pull is compared with the
# input once per stream (untimed). Medians of the runs are printed as a
# markdown table, with the load average before and after.
#
# usage: bench/s3.sh [--runs N] [--only pg|text]
# env:   BIN (built programs, default ./bin), BENCH_DIR, RUNS (3),
#        PG_SCALE (100), TEXT_MB (1000) (which cached inputs to use),
#        DP_ZSTD_LEVEL, DP_INIT_ARGS (as in bench/push.sh),
#        DP_REPO_PASSPHRASE (random when unset; never on a command line),
#        S3RVER_JS (default tests/node_modules/s3rver/bin/s3rver.js).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$here/bin}
BENCH_DIR=${BENCH_DIR:-/var/tmp/dp-bench}
RUNS=${RUNS:-3}
PG_SCALE=${PG_SCALE:-100}
TEXT_MB=${TEXT_MB:-1000}
S3RVER_JS=${S3RVER_JS:-$here/tests/node_modules/s3rver/bin/s3rver.js}
only=""

while [ $# -gt 0 ]; do
	case "$1" in
	--runs) RUNS=$2; shift 2 ;;
	--only) only=$2; shift 2 ;;
	-h | --help) sed -n '2,28p' "$0"; exit 0 ;;
	*) echo "s3.sh: unknown argument \"$1\" (see --help)" >&2; exit 2 ;;
	esac
done
case "$RUNS" in '' | *[!0-9]* | 0) echo "s3.sh: --runs wants a positive number" >&2; exit 2 ;; esac
case "$only" in '' | pg | text) ;; *) echo "s3.sh: --only takes pg or text" >&2; exit 2 ;; esac

die() { echo "s3.sh: $*" >&2; exit 1; }
log() { echo "s3.sh: $*" >&2; }

for t in node /usr/bin/time cmp; do
	command -v "$t" >/dev/null 2>&1 || die "\"$t\" not found: run scripts/install-deps.sh (as root)"
done
[ -f "$S3RVER_JS" ] || die "\"$S3RVER_JS\" not found: run scripts/install-deps.sh (as root)"
if [ ! -x "$BIN/dp-worker" ] || [ ! -x "$BIN/dp" ]; then
	die "$BIN/dp and $BIN/dp-worker not built: run make (or set BIN)"
fi

# Secrets come from the environment, never from argv. s3rver accepts only
# its fixed key pair.
if [ -z "${DP_REPO_PASSPHRASE:-}" ]; then
	DP_REPO_PASSPHRASE=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
fi
AWS_ACCESS_KEY_ID=S3RVER
AWS_SECRET_ACCESS_KEY=S3RVER
export DP_REPO_PASSPHRASE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
unset AWS_SESSION_TOKEN AWS_PROFILE DP_REPO

PG_TAR=$BENCH_DIR/pg-s$PG_SCALE.tar
TEXT_CSV=$BENCH_DIR/text-${TEXT_MB}MB.csv
want_pg=1
want_text=1
[ "$only" = text ] && want_pg=0
[ "$only" = pg ] && want_text=0
if { [ "$want_pg" = 1 ] && [ ! -s "$PG_TAR" ]; } || { [ "$want_text" = 1 ] && [ ! -s "$TEXT_CSV" ]; }; then
	log "inputs missing in $BENCH_DIR: bench/push.sh --generate-only"
	BENCH_DIR=$BENCH_DIR PG_SCALE=$PG_SCALE TEXT_MB=$TEXT_MB \
		bash "$here/bench/push.sh" --generate-only ${only:+--only "$only"}
fi

# ---- s3rver ----

work=$BENCH_DIR/s3work # not push.sh's "work": both may be run in turn
results=$BENCH_DIR/s3results.txt
s3_pid=""
s3_port=""
s3_dir=""

stop_s3rver() {
	[ -n "$s3_pid" ] || return 0
	if kill -0 "$s3_pid" 2>/dev/null; then
		kill -TERM "$s3_pid" 2>/dev/null || true
		for _ in $(seq 1 100); do
			kill -0 "$s3_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$s3_pid" 2>/dev/null || true
	fi
	wait "$s3_pid" 2>/dev/null || true
	s3_pid=""
}
cleanup() {
	stop_s3rver
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
	local p
	for _ in $(seq 1 100); do
		p=$((20000 + RANDOM % 40000))
		if ! port_open "$p"; then
			echo "$p"
			return 0
		fi
	done
	die "no free TCP port on 127.0.0.1"
}

# start_s3rver DIR: s3rver on a free 127.0.0.1 port, data in DIR, bucket
# "bkt"; sets s3_pid and s3_port.
start_s3rver() {
	s3_dir=$1
	mkdir -p "$s3_dir/data"
	for _ in 1 2 3; do
		s3_port=$(free_port)
		# --openssl-legacy-provider: s3rver makes continuation tokens with DES.
		node --openssl-legacy-provider "$S3RVER_JS" -d "$s3_dir/data" -a 127.0.0.1 \
			-p "$s3_port" -s --configure-bucket bkt </dev/null >"$s3_dir/s3rver.log" 2>&1 &
		s3_pid=$!
		for _ in $(seq 1 300); do
			kill -0 "$s3_pid" 2>/dev/null || break
			if port_open "$s3_port"; then
				return 0
			fi
			sleep 0.05
		done
		stop_s3rver # exited (port taken?) or too slow: try another port
	done
	die "s3rver did not start: see $s3_dir/s3rver.log"
}

# cpu_ticks PID: utime+stime (fields 14 and 15) of PID, all its threads.
# The fields are counted after the ")" closing the command name.
cpu_ticks() {
	local st
	st=$(cat "/proc/$1/stat") || die "s3rver (pid $1) is gone"
	st=${st##*) }
	# shellcheck disable=SC2086 # split the fields
	set -- $st
	echo $((${12} + ${13}))
}
clk_tck=$(getconf CLK_TCK)
now_ns() { date +%s%N; }

# ---- measurements ----

load_before=$(uptime | sed 's/.*load average: //')
rm -rf "$work"
mkdir -p "$work"
: >"$results"

# timed LABEL CMD... : runs CMD under GNU time (stdin/stdout as redirected
# by the caller) and appends "LABEL wall cpu rss_kib" to $results. With
# s3rver running, also "LABEL.s3rver cpu_percent_of_one_core".
timed() {
	local label=$1 tf="$work/time.out" t0="" t1 c0="" c1
	shift
	sync
	if [ -n "$s3_pid" ]; then
		c0=$(cpu_ticks "$s3_pid")
		t0=$(now_ns)
	fi
	/usr/bin/time -o "$tf" -f '%e %U %S %M' "$@" || die "$label: \"$*\" failed"
	if [ -n "$t0" ]; then
		c1=$(cpu_ticks "$s3_pid")
		t1=$(now_ns)
		awk -v l="$label.s3rver" -v c=$((c1 - c0)) -v hz="$clk_tck" -v ns=$((t1 - t0)) \
			'BEGIN { printf "%s %.1f\n", l, 100 * (c / hz) / (ns / 1e9) }' >>"$results"
	fi
	awk -v l="$label" '{ printf "%s %s %.2f %s\n", l, $1, $2 + $3, $4 }' "$tf" >>"$results"
}

zstd_level() {
	sed -n 's/.*"compression":{[^}]*"level":\(-\{0,1\}[0-9]*\).*/\1/p' "$1/config"
}

# dp_init REPO [S3 OPTIONS...]
dp_init() {
	# shellcheck disable=SC2086 # DP_INIT_ARGS is a list of options
	"$BIN/dp" repo init --repo "$@" ${DP_ZSTD_LEVEL:+--zstd-level "$DP_ZSTD_LEVEL"} \
		${DP_INIT_ARGS:-} >/dev/null || die "dp repo init --repo $1 failed"
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
	cat "$input" >/dev/null # into the page cache
	for run in $(seq 1 "$RUNS"); do
		log "$ds: run $run of $RUNS"
		# posix
		rm -rf "$work/posix"
		dp_init "$work/posix"
		level=$(zstd_level "$work/posix")
		[ -n "$level" ] || die "cannot read the zstd level from $work/posix/config"
		timed "$ds.posix.push" "$BIN/dp-worker" push --repo "$work/posix" --quiet bench - \
			<"$input" >/dev/null
		timed "$ds.posix.pull" "$BIN/dp-worker" pull --repo "$work/posix" --quiet bench - >/dev/null
		[ "$run" = 1 ] && "$BIN/dp-worker" pull --repo "$work/posix" --quiet bench - |
			verify "$ds posix"
		rm -rf "$work/posix"
		# s3rver: a fresh server and data directory per run
		start_s3rver "$work/s3rver-$ds-$run"
		s3=(--s3-endpoint "http://127.0.0.1:$s3_port" --s3-uri-style path)
		repo=s3://bkt/bench-$ds-$run
		dp_init "$repo" "${s3[@]}"
		timed "$ds.s3.push" "$BIN/dp-worker" push --repo "$repo" "${s3[@]}" --quiet bench - \
			<"$input" >/dev/null
		timed "$ds.s3.pull" "$BIN/dp-worker" pull --repo "$repo" "${s3[@]}" --quiet bench - >/dev/null
		[ "$run" = 1 ] && "$BIN/dp-worker" pull --repo "$repo" "${s3[@]}" --quiet bench - |
			verify "$ds s3rver"
		stop_s3rver
		rm -rf "$s3_dir"
	done
done

# ---- report ----

# med LABEL FIELD: median of FIELD (2 wall, 3 cpu, 4 rss KiB; .s3rver: 2).
med() {
	awk -v l="$1" -v f="$2" '$1 == l { print $f }' "$results" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2];
			else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
calc() { awk "BEGIN { v = $1; if (v != v) print \"-\"; else printf \"%$2\", v }"; }

echo
echo "### dp push/pull: posix repository vs S3 on s3rver"
echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -n 1))," \
	"medians of $RUNS run(s), input in the page cache, posix repository and s3rver data in $BENCH_DIR" \
	"($(df -T "$BENCH_DIR" | awk 'NR == 2 { print $2 }')). dp zstd level $level${DP_INIT_ARGS:+, init options \"$DP_INIT_ARGS\"};" \
	"s3rver $(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$(dirname "$S3RVER_JS")/../package.json" | head -n 1)" \
	"on node $(node --version), path-style, plain HTTP on 127.0.0.1, same machine."
echo "MB = 10^6 bytes of input; MB/s = input size / wall time; dp CPU = user + sys seconds of" \
	"dp-worker; s3rver CPU = its utime+stime during the step / wall time (100% = one core busy)." \
	"The posix repository fsyncs its files; s3rver does not."
echo "Machine load (uptime load average 1/5/15 min) before: $load_before; after:" \
	"$(uptime | sed 's/.*load average: //') — wall-clock figures are noisy under other load."
echo
echo "| input | push MB/s posix | push MB/s s3rver | push s3/posix | pull MB/s posix | pull MB/s s3rver | pull s3/posix | dp push CPU s (posix, s3) | dp push peak RSS MiB (posix, s3) | dp pull CPU s (posix, s3) | dp pull peak RSS MiB (posix, s3) | s3rver CPU % during push | s3rver CPU % during pull |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for ds in pg text; do
	grep -q "^$ds.size " "$results" || continue
	size=$(awk -v l="$ds.size" '$1 == l { print $2 }' "$results")
	case $ds in
	pg) name="pg tar, pgbench -s $PG_SCALE, $(calc "$size / 1e6" .0f) MB" ;;
	text) name="random text CSV, $(calc "$size / 1e6" .0f) MB" ;;
	esac
	ppw=$(med "$ds.posix.push" 2) spw=$(med "$ds.s3.push" 2)
	prw=$(med "$ds.posix.pull" 2) srw=$(med "$ds.s3.pull" 2)
	echo "| $name | $(calc "$size / 1e6 / $ppw" .0f) | $(calc "$size / 1e6 / $spw" .0f) |" \
		"$(calc "$ppw / $spw" .2f) |" \
		"$(calc "$size / 1e6 / $prw" .0f) | $(calc "$size / 1e6 / $srw" .0f) |" \
		"$(calc "$prw / $srw" .2f) |" \
		"$(calc "$(med "$ds.posix.push" 3)" .1f), $(calc "$(med "$ds.s3.push" 3)" .1f) |" \
		"$(calc "$(med "$ds.posix.push" 4) / 1024" .0f), $(calc "$(med "$ds.s3.push" 4) / 1024" .0f) |" \
		"$(calc "$(med "$ds.posix.pull" 3)" .1f), $(calc "$(med "$ds.s3.pull" 3)" .1f) |" \
		"$(calc "$(med "$ds.posix.pull" 4) / 1024" .0f), $(calc "$(med "$ds.s3.pull" 4) / 1024" .0f) |" \
		"$(calc "$(med "$ds.s3.push.s3rver" 2)" .0f)% | $(calc "$(med "$ds.s3.pull.s3rver" 2)" .0f)% |"
done
echo
echo "s3/posix = MB/s to (from) s3rver / MB/s to (from) the posix repository."
