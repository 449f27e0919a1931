# shellcheck shell=bash
# Shared helpers for the postgresql method scripts (sourced, never run).
#
# The DP_* environment contract (set by the controller, or by hand):
#   DP_BACKUP_NAME          the Backup being taken, or the one restored from
#   DP_DB_HOST/PORT/USER    the server (default 127.0.0.1, 5432, postgres)
#   DP_DB_PASSWORD          its password, or DP_DB_PASSFILE (a libpq passfile)
#   DP_DB_NAME              database to connect to (default postgres)
#   DP_DATA_DIR             the server's data directory (on this host)
#   DP_REPO                 the repository; passphrase from DP_REPO_PASSPHRASE
#                           or the file named by DP_REPO_PASSPHRASE_FILE
#   DP_PARENT_BACKUP_NAME   the previous full backup (recorded; dedup is automatic)
#   DP_RESTORE_TIME         restore target time (YYYY-MM-DDTHH:MM:SSZ)
#   DP_BACKUP_INFO_FILE     where to write the JSON status fragment
#   DP_WORKER               path of dp-worker (default: from PATH)
#   DP_PG_BIN               PostgreSQL's bin directory (default: newest found)
# Secrets never appear on a command line: psql and pg_basebackup get the
# password through PGPASSWORD/PGPASSFILE, dp-worker through its environment
# or a 0600 config file (which holds a key slot of the repository, never the
# passphrase: write_key_conf).

set -euo pipefail

PG_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

pg_log() { printf 'postgresql: %s\n' "$*" >&2; }
pg_die() {
	printf 'postgresql: error: %s\n' "$*" >&2
	exit 1
}

# PostgreSQL binaries.
if [ -z "${DP_PG_BIN:-}" ]; then
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r); do
		[ -x "$d/pg_basebackup" ] && { DP_PG_BIN=$d; break; }
	done
	if [ -z "${DP_PG_BIN:-}" ] && command -v pg_basebackup >/dev/null 2>&1; then
		DP_PG_BIN=$(dirname "$(command -v pg_basebackup)")
	fi
fi
[ -n "${DP_PG_BIN:-}" ] && [ -x "$DP_PG_BIN/pg_basebackup" ] ||
	pg_die "PostgreSQL client binaries not found: set DP_PG_BIN to the directory holding pg_basebackup"
PGBIN=$DP_PG_BIN

# dp-worker, as an absolute path (it goes into archive_command).
DPW=${DP_WORKER:-}
if [ -z "$DPW" ]; then
	DPW=$(command -v dp-worker 2>/dev/null || true)
	[ -n "$DPW" ] || [ ! -x "$PG_SCRIPTS/../../../bin/dp-worker" ] || DPW=$PG_SCRIPTS/../../../bin/dp-worker
fi
[ -n "$DPW" ] && [ -x "$DPW" ] || pg_die "dp-worker not found: set DP_WORKER or put it in PATH"
DPW=$(cd "$(dirname "$DPW")" && pwd)/$(basename "$DPW")

# Repository flags for dp-worker (DP_REPO and DP_REPO_PASSPHRASE are read
# from the environment by dp-worker itself).
REPO_ARGS=()
[ -z "${DP_REPO_PASSPHRASE_FILE:-}" ] || REPO_ARGS+=(--passphrase-file "$DP_REPO_PASSPHRASE_FILE")

# libpq connection.
export PGHOST=${DP_DB_HOST:-${PGHOST:-127.0.0.1}}
export PGPORT=${DP_DB_PORT:-${PGPORT:-5432}}
export PGUSER=${DP_DB_USER:-${PGUSER:-postgres}}
export PGDATABASE=${DP_DB_NAME:-postgres}
export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-10}
export PGAPPNAME=dp
[ -z "${DP_DB_PASSWORD:-}" ] || export PGPASSWORD=$DP_DB_PASSWORD
[ -z "${DP_DB_PASSFILE:-}" ] || export PGPASSFILE=$DP_DB_PASSFILE

# psql_q SQL: one query, unaligned tuples, errors fatal to psql.
psql_q() { "$PGBIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 -c "$1"; }

# Time helpers: every time dp writes is UTC RFC 3339 with microseconds, so
# that string comparison orders them.
utc_norm() { date -u -d "$1" +%Y-%m-%dT%H:%M:%S.%6NZ; }
utc_now() { date -u +%Y-%m-%dT%H:%M:%S.%6NZ; }
# SQL expression for the server's clock in that format (used by the scripts).
export SQL_NOW="to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

# lsn_num 0/3000028 -> decimal, for comparisons.
lsn_num() {
	local hi=${1%/*} lo=${1#*/}
	echo $(((16#$hi << 32) + 16#$lo))
}
# seg_num NAME -> the segment number (log*256+seg) of a 24-hex-digit WAL file
# name (16 MiB segments), ignoring the timeline.
seg_num() { echo $(((16#${1:8:8} << 8) + 16#${1:16:8})); }
# lsn_seg LSN -> segment number holding it (16 MiB segments).
lsn_seg() { echo $(($(lsn_num "$1") >> 24)); }

# write_info JSON: the status fragment for the controller (atomic).
write_info() {
	[ -n "${DP_BACKUP_INFO_FILE:-}" ] || return 0
	printf '%s\n' "$1" >"$DP_BACKUP_INFO_FILE.tmp" && mv "$DP_BACKUP_INFO_FILE.tmp" "$DP_BACKUP_INFO_FILE"
}

# report_backup NAME LABEL META RESULT: a finished full backup's last step,
# the same for every method: the status fragment for the controller
# (write_info), a log line, and on stdout the push result with the snapshot's
# metadata (META: startLsn, stopLsn, startTime, stopTime, parent,
# systemIdentifier, timeline; RESULT: dp-worker push --json).
report_backup() {
	local name=$1 label=$2 meta=$3 res=$4
	write_info "$(jq -c -n --argjson m "$meta" --argjson r "$res" '{
	  totalSize: ($r.size|tostring), storedSize: ($r.stored|tostring), snapshotId: $r.id,
	  timeRange: {start: $m.startTime, end: $m.stopTime, timeZone: "Z"},
	  parentBackupName: (if $m.parent == "" then null else $m.parent end),
	  extras: [{systemIdentifier: $m.systemIdentifier, timeline: ($m.timeline|tostring),
	            startLsn: $m.startLsn, stopLsn: $m.stopLsn}]}')"
	pg_log "backup \"$name\"$label: $(jq -r .size <<<"$res") bytes, $(jq -r .stored <<<"$res") new bytes stored, LSN $(jq -r '.startLsn + " .. " + .stopLsn' <<<"$meta")"
	jq -c -n --argjson m "$meta" --argjson r "$res" '$r + {meta: $m}'
}

# as_user USER CMD...: run as USER (directly if we are USER, via runuser if root).
as_user() {
	local u=$1
	shift
	if [ "$(id -un)" = "$u" ]; then
		"$@"
	elif [ "$(id -u)" -eq 0 ]; then
		runuser -u "$u" -- "$@"
	else
		pg_die "cannot run as \"$u\": run this script as root or as \"$u\""
	fi
}

# Archive and restore configs hold a key slot of the repository instead of the
# passphrase (dp-worker key-add; repos/keyslot.c): the processes the server
# starts per WAL segment open the repository with it in ~1 ms instead of
# ~100 ms of scrypt, the passphrase never sits on the database host, and the
# key can be revoked (dp-worker key-rm) without touching the passphrase.
# Slots are found again by their label: "<use> (<config path> on <host>)".

# key_label USE PATH: the label of the slot a config at PATH holds.
key_label() {
	local l="$1 ($2 on ${HOSTNAME:-$(uname -n)})"
	printf '%s' "${l:0:199}"
}

# key_slots LABEL: ids of the random-key slots with that label.
key_slots() {
	"$DPW" key-ls --json "${REPO_ARGS[@]}" | jq -r --arg l "$1" '.[] | select(.kind == "random" and .label == $l) | .id'
}

# write_key_conf PATH OWNER USE LINES: a 0600 dp-worker config owned by OWNER
# holding a new slot key (never the passphrase) plus LINES; then revokes the
# slots earlier configs at PATH held (a restart rotates the key). The key goes
# from key-add's 0600 file into the config with shell builtins only, so it
# never appears in a process's arguments.
write_key_conf() {
	local path=$1 owner=$2 label key kf id old
	label=$(key_label "$3" "$path")
	[ -n "${DP_REPO:-}" ] || pg_die "DP_REPO is not set: name the repository"
	case "$path" in *\'* | *\ *) pg_die "config path \"$path\" must not contain quotes or spaces" ;; esac
	old=$(key_slots "$label") || pg_die "cannot list the keys of the repository \"$DP_REPO\""
	kf=$(mktemp -u "$path.key.XXXXXX")
	id=$("$DPW" key-add "${REPO_ARGS[@]}" --label "$label" --out "$kf") ||
		pg_die "cannot add a key to the repository \"$DP_REPO\" for \"$path\""
	IFS= read -r key <"$kf" || true
	rm -f "$kf"
	[ -n "$key" ] || pg_die "dp-worker key-add wrote no key"
	(
		umask 077
		rm -f "$path.tmp"
		{
			printf '# dp-worker config, written by dp (postgresql method); key = a key slot\n'
			printf '# of the repository (dp-worker key-ls / key-rm), not the passphrase\n'
			printf 'repo = %s\n' "$DP_REPO"
			printf 'key = %s\n' "$key"
			printf '%s\n' "$4"
		} >"$path.tmp"
	)
	unset key
	if [ "$(id -un)" != "$owner" ]; then
		chown "$owner" "$path.tmp" || pg_die "cannot give \"$path\" to \"$owner\""
	fi
	chmod 600 "$path.tmp"
	mv -f "$path.tmp" "$path"
	# shellcheck disable=SC2086 # one id per word
	[ -z "$old" ] || "$DPW" key-rm "${REPO_ARGS[@]}" $old ||
		pg_log "warning: could not revoke the previous key of \"$path\" ($(echo $old))"
}

# drop_key_conf PATH USE: revokes the slots of the config at PATH and
# removes it. Best effort (a warning), so that it can run in cleanups.
drop_key_conf() {
	local path=$1 old
	rm -f "$path"
	old=$(key_slots "$(key_label "$2" "$path")" 2>/dev/null) || {
		pg_log "warning: cannot list the keys of \"$DP_REPO\" to revoke the one of \"$path\""
		return 0
	}
	# shellcheck disable=SC2086
	[ -z "$old" ] || "$DPW" key-rm "${REPO_ARGS[@]}" $old ||
		pg_log "warning: could not revoke the key of \"$path\" ($(echo $old))"
}
