#!/usr/bin/env bash
# backupData of the postgresql-basebackup ActionSet: a physical full backup.
#
# pg_basebackup writes a tar stream (WAL fetched into it, so the backup is
# consistent on its own) to stdout, which dp-worker stream-push chunks,
# deduplicates, compresses and encrypts into the repository: nothing is
# staged on disk. Once pg_basebackup has succeeded, the producer side writes
# the snapshot metadata (start/stop LSN and time, timeline, system
# identifier, parent); stream-push attaches it at end of stream and refuses
# to record a snapshot without it, so a failed or truncated backup leaves
# no snapshot behind.
#
# Env: DP_BACKUP_NAME (snapshot name), DP_DB_*, DP_REPO(+passphrase),
# DP_PARENT_BACKUP_NAME, DP_BACKUP_INFO_FILE, DP_ZSTD_LEVEL (compression level
# for this backup's new chunks; the ActionSet sets 1, the fastest),
# DP_CHUNK_AVG (average content-defined chunk size of this stream; the
# ActionSet sets 16K). Prints the push result JSON.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

name=${DP_BACKUP_NAME:-${1:-}}
[ -n "$name" ] || pg_die "DP_BACKUP_NAME is not set: name the backup"
work=$(mktemp -d "${TMPDIR:-/tmp}/dp-pgbb-XXXXXX")
trap 'rm -rf "$work"' EXIT

info=$(psql_q "SELECT system_identifier, current_setting('server_version_num'), $SQL_NOW
  FROM pg_control_system()") || pg_die "cannot connect to PostgreSQL at $PGHOST:$PGPORT as \"$PGUSER\""
IFS='|' read -r sysid version start_time <<<"$info"

set +e
(
	"$PGBIN/pg_basebackup" -D - -Ft -X fetch -c fast -v -l "dp $name" 2>"$work/bb.log"
	rc=$?
	[ $rc -eq 0 ] || exit $rc
	start_lsn=$(sed -n 's/.*write-ahead log start point: \([0-9A-F]*\/[0-9A-F]*\) on timeline \([0-9]*\).*/\1/p' "$work/bb.log")
	tli=$(sed -n 's/.*write-ahead log start point: [0-9A-F]*\/[0-9A-F]* on timeline \([0-9]*\).*/\1/p' "$work/bb.log")
	stop_lsn=$(sed -n 's/.*write-ahead log end point: \([0-9A-F]*\/[0-9A-F]*\).*/\1/p' "$work/bb.log")
	[ -n "$start_lsn" ] && [ -n "$stop_lsn" ] && [ -n "$tli" ] || {
		echo "pg_basebackup did not report its start and end points" >>"$work/bb.log"
		exit 1
	}
	# The server's clock after the end point: the backup is consistent
	# (restorable) from this time on.
	stop_time=$(psql_q "SELECT $SQL_NOW") || exit 1
	printf '{"engine":"postgresql","method":"basebackup","systemIdentifier":"%s","serverVersion":%s,"timeline":%s,"startLsn":"%s","stopLsn":"%s","startTime":"%s","stopTime":"%s","parent":"%s"}\n' \
		"$sysid" "$version" "$tli" "$start_lsn" "$stop_lsn" "$start_time" "$stop_time" \
		"${DP_PARENT_BACKUP_NAME:-}" >"$work/meta.tmp" && mv "$work/meta.tmp" "$work/meta.json"
) | "$DPW" stream-push --quiet --json --meta-file "$work/meta.json" ${DP_ZSTD_LEVEL:+--zstd-level "$DP_ZSTD_LEVEL"} \
	${DP_CHUNK_AVG:+--chunk-avg "$DP_CHUNK_AVG"} "${REPO_ARGS[@]}" "$name" >"$work/push.json"
st=("${PIPESTATUS[@]}")
set -e
if [ "${st[0]}" -ne 0 ]; then
	grep -v '^pg_basebackup: \(initiating\|checkpoint\|write-ahead log\|waiting\|syncing\|base backup completed\)' "$work/bb.log" >&2 || true
	pg_die "pg_basebackup failed (exit ${st[0]}); no backup \"$name\" was recorded"
fi
[ "${st[1]}" -eq 0 ] || pg_die "storing backup \"$name\" in the repository failed (dp-worker exit ${st[1]})"

meta=$(cat "$work/meta.json")
res=$(cat "$work/push.json")
report_backup "$name" "" "$meta" "$res"
