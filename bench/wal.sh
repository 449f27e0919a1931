#!/usr/bin/env bash
# wal-push / wal-fetch per 16 MiB segment, as PostgreSQL runs them: one
# process per segment, timed from start to exit.
#
# Real WAL: a PostgreSQL 15 cluster (as nobody, loopback port) archives with
# `cp` into a directory while pgbench runs: `pgbench -i` (bulk COPY: poorly
# compressible segments) then `pgbench -c 2 -j 2 -T` (TPC-B: very
# compressible ones). Each segment is then pushed into a posix repository
# with every configuration below, and fetched back (compared byte for byte).
#
#   key          the archive config made by archive.sh: a key slot (HKDF)
#   passphrase   the passphrase in the config (scrypt in every process)
#   before       BEFORE=/path/to/old/dp-worker: that binary, passphrase config
#
# Prints, per configuration, min / p25 / median / p75 / max wall ms of the
# process (fork to exit, as archive_command sees it) and its median CPU ms
# (user+sys, all threads: steadier than wall time on a busy machine). Needs root (the server runs as
# nobody). The machine is shared: repeat (ROUNDS) and compare medians.
#
#   bash bench/wal.sh                         # BIN=bin
#   SEGS=/tmp/segs bash bench/wal.sh          # reuse a directory of segments
#   BEFORE=/tmp/old/dp-worker ROUNDS=3 bash bench/wal.sh
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "${BIN:-$here/bin}" && pwd)
W=$BIN/dp-worker
PGB=${DP_PG_BIN:-/usr/lib/postgresql/15/bin}
ROUNDS=${ROUNDS:-2}
SCALE=${SCALE:-8}
SECONDS_TPCB=${SECONDS_TPCB:-30}
MIN_SEGS=${MIN_SEGS:-24}
[ -x "$W" ] || { echo "bench/wal.sh: build first (make); BIN=$BIN" >&2; exit 2; }

dir=$(mktemp -d /tmp/dp-bench-wal-XXXXXX)
chmod 755 "$dir"
pgdata=$dir/pg
cleanup() {
	if [ -f "$pgdata/postmaster.pid" ]; then
		pid=$(head -n 1 "$pgdata/postmaster.pid")
		kill -INT "$pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	fi
	[ -n "${BENCH_KEEP:-}" ] || rm -rf "$dir"
}
trap cleanup EXIT

segs=${SEGS:-}
if [ -z "$segs" ]; then
	[ "$(id -u)" -eq 0 ] || { echo "bench/wal.sh: run as root (the server runs as nobody), or give SEGS" >&2; exit 2; }
	segs=$dir/segs
	mkdir -p "$segs" && chown nobody "$segs" "$dir"
	port=$((20000 + RANDOM % 20000))
	runuser -u nobody -- "$PGB/initdb" -D "$pgdata" -U postgres >/dev/null 2>&1
	cat >>"$pgdata/postgresql.conf" <<-EOF
		port = $port
		listen_addresses = '127.0.0.1'
		unix_socket_directories = '$dir'
		archive_mode = on
		archive_command = 'cp %p $segs/%f'
		max_wal_size = 1GB
	EOF
	runuser -u nobody -- "$PGB/pg_ctl" -D "$pgdata" -l "$dir/pg.log" -w start >/dev/null
	pgq() { "$PGB/psql" -X -A -t -q -h 127.0.0.1 -p "$port" -U postgres -c "$1"; }
	"$PGB/pgbench" -q -h 127.0.0.1 -p "$port" -U postgres -i -s "$SCALE" postgres >/dev/null 2>&1
	# TPC-B until there are enough segments (its rate depends on the machine).
	for _ in $(seq 20); do
		"$PGB/pgbench" -h 127.0.0.1 -p "$port" -U postgres -c 2 -j 2 -T "$SECONDS_TPCB" postgres >/dev/null 2>&1
		[ "$(find "$segs" -type f | wc -l)" -lt "$MIN_SEGS" ] || break
	done
	pgq "SELECT pg_switch_wal()" >/dev/null
	for _ in $(seq 100); do
		[ "$(pgq "SELECT last_archived_wal IS NOT NULL AND last_archived_wal >= pg_walfile_name(pg_current_wal_lsn()) FROM pg_stat_archiver")" = t ] && break
		sleep 0.1
	done
	runuser -u nobody -- "$PGB/pg_ctl" -D "$pgdata" -m fast stop >/dev/null
fi
mapfile -t files < <(find "$segs" -maxdepth 1 -type f -name '[0-9A-F]*' -size 16M | sort)
[ "${#files[@]}" -ge "$MIN_SEGS" ] || echo "bench/wal.sh: only ${#files[@]} segments (want $MIN_SEGS)" >&2

export DP_REPO_PASSPHRASE=bench-wal-pass
repo=$dir/repo
"$BIN/dp" repo init --repo "$repo" >/dev/null
"$W" key-add --repo "$repo" --label "bench" --out "$dir/key" >/dev/null
# The old binary gets a repository without key slots (it would warn about
# each one it cannot read).
"$BIN/dp" repo init --repo "$dir/repo-before" >/dev/null
(
	umask 077
	printf 'repo = %s\nkey-file = %s\narchive = a-key\n' "$repo" "$dir/key" >"$dir/key.conf"
	printf 'repo = %s\npassphrase = %s\narchive = a-pass\n' "$repo" "$DP_REPO_PASSPHRASE" >"$dir/passphrase.conf"
	printf 'repo = %s\npassphrase = %s\narchive = a-before\n' "$dir/repo-before" "$DP_REPO_PASSPHRASE" >"$dir/before.conf"
)
unset DP_REPO_PASSPHRASE

# Each timed run appends "wall user sys" (seconds) to its file.
TIMEFORMAT='%3R %3U %3S'
# stats FILE: min p25 median p75 max of the wall times, and the median
# CPU (user+sys), in ms.
stats() {
	local cpu
	cpu=$(awk '{print ($2+$3)*1000}' "$1" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
	awk '{print $1*1000}' "$1" | sort -n | awk -v cpu="$cpu" '{a[NR]=$1} END {printf "%6.1f %6.1f %6.1f %6.1f %6.1f %6.1f  (n=%d)\n",
		a[1], a[int(NR/4)+1], a[int((NR+1)/2)], a[int(3*NR/4)+1], a[NR], cpu, NR}'
}

declare -A mode_bin=([key]=$W [passphrase]=$W)
modes=(key passphrase)
if [ -n "${BEFORE:-}" ]; then
	mode_bin[before]=$BEFORE
	modes+=(before)
fi
printf '%d segments of 16 MiB, %d rounds; wall ms per process\n' "${#files[@]}" "$ROUNDS"
printf '%-22s %6s %6s %6s %6s %6s %6s\n' "" min p25 median p75 max cpu
for m in "${modes[@]}"; do
	: >"$dir/$m.push"
	: >"$dir/$m.fetch"
done
for r in $(seq "$ROUNDS"); do
	for m in "${modes[@]}"; do
		b=${mode_bin[$m]}
		names=()
		for f in "${files[@]}"; do names+=("$(basename "$f")"); done
		"$b" wal-rm --config "$dir/$m.conf" "${names[@]}" >/dev/null
		for f in "${files[@]}"; do
			{ time "$b" wal-push --config "$dir/$m.conf" "$f"; } 2>>"$dir/$m.push"
		done
		for f in "${files[@]}"; do
			n=$(basename "$f")
			{ time "$b" wal-fetch --config "$dir/$m.conf" "$n" "$dir/fetched"; } 2>>"$dir/$m.fetch"
			cmp -s "$f" "$dir/fetched" || { echo "bench/wal.sh: $n fetched differs ($m)" >&2; exit 1; }
		done
	done
done
for m in "${modes[@]}"; do
	printf '%-22s %s' "wal-push ($m)" "$(stats "$dir/$m.push")"
	echo
	printf '%-22s %s' "wal-fetch ($m)" "$(stats "$dir/$m.fetch")"
	echo
done
du -sk "$repo/wal/a-key" | awk -v n="${#files[@]}" '{printf "stored: %.1f MiB for %d segments (%.1f%%)\n", $1/1024, n, 100*$1/(n*16384)}'
