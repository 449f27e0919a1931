#!/usr/bin/env bash
# backupData of the postgresql-wal-archive ActionSet: continuous archiving.
#
#   archive.sh [start]   turn archiving on, check it works, record the window;
#                        with DP_ARCHIVE_INTERVAL (e.g. 300s) keep running:
#                        switch WAL and refresh the window every interval
#                        until SIGTERM
#   archive.sh stop      turn archiving off (ALTER SYSTEM RESET archive_command)
#   archive.sh prune     remove archived WAL older than the oldest base backup of
#                        this database still in the repository (history files
#                        stay); also run after each refresh while following
#
# Starting adds a key slot to the repository (dp-worker key-add: a random
# 256-bit key, opened with HKDF instead of the passphrase's scrypt, so each
# wal-push costs ~1 ms to open instead of ~100 ms) and writes a dp-worker
# config (repo, that key, archive name) with mode 0600, owned by the
# database's OS user, OUTSIDE the data directory; then sets
# archive_command = '<dp-worker> wal-push --config <file> %p' with ALTER
# SYSTEM + pg_reload_conf(). The passphrase is never on a command line nor on
# the database host's disk. Starting again rotates the key (the old slot is
# revoked); stopping revokes it and removes the config.
# archive_mode needs a restart, so if it is off this fails and says so.
#
# Env: DP_BACKUP_NAME (the archive's name, unless DP_ARCHIVE_NAME), DP_DB_*,
# DP_DATA_DIR (its owner is the OS user, unless DP_DB_OS_USER), DP_REPO(+pass),
# DP_ARCHIVE_CONFIG (config path; default <parent of data dir>/dp-archive-<archive>.conf),
# DP_ARCHIVE_INTERVAL, DP_BACKUP_INFO_FILE.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cmd=${1:-start}
archive=${DP_ARCHIVE_NAME:-${DP_BACKUP_NAME:-}}
[ -n "$archive" ] || pg_die "DP_BACKUP_NAME (or DP_ARCHIVE_NAME) is not set: name the archive"
[[ "$archive" =~ ^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$ ]] ||
	pg_die "archive name \"$archive\": use letters, digits, '.', '_' and '-'"

# archive_conf DATADIR: where the archive config goes (absolute).
archive_conf() {
	realpath -m "${DP_ARCHIVE_CONFIG:-$(dirname "$(cd "$1" && pwd)")/dp-archive-$archive.conf}"
}

if [ "$cmd" = stop ]; then
	psql_q "ALTER SYSTEM RESET archive_command" >/dev/null
	psql_q "SELECT pg_reload_conf()" >/dev/null
	# Revoke the archive's key and remove its config.
	datadir=${DP_DATA_DIR:-$(psql_q "SHOW data_directory")}
	if [ -d "$datadir" ]; then
		drop_key_conf "$(archive_conf "$datadir")" "archive $archive"
	fi
	pg_log "archiving into \"$archive\" stopped (archive_command reset, its key revoked)"
	exit 0
fi
# prune_archive SYSID: WAL before the start of the oldest base backup left
# cannot be used by any restore any more.
prune_archive() {
	local sysid=$1 oldest seg names
	oldest=$("$DPW" ls --json "${REPO_ARGS[@]}" | jq -r --arg s "$sysid" '[.[] | select(.meta.engine? == "postgresql"
	  and (.meta.method? == "basebackup" or .meta.method? == "filebackup") and .meta.systemIdentifier == $s)] | sort_by(.meta.stopTime) | first | .meta.startLsn // empty')
	[ -n "$oldest" ] || { pg_log "no base backup of this database: nothing pruned"; return 0; }
	seg=$(lsn_seg "$oldest")
	names=()
	while read -r n; do
		[[ "$n" =~ ^[0-9A-F]{24}(\.[0-9A-F]{8}\.backup)?$ ]] || continue
		[ $(((16#${n:8:8} << 8) + 16#${n:16:8})) -lt "$seg" ] && names+=("$n")
	done < <("$DPW" wal-ls --archive "$archive" "${REPO_ARGS[@]}")
	if [ "${#names[@]}" -gt 0 ]; then
		"$DPW" wal-rm --archive "$archive" "${REPO_ARGS[@]}" "${names[@]}"
	fi
	pg_log "archive \"$archive\": pruned ${#names[@]} files older than the oldest base backup (start $oldest)"
}

if [ "$cmd" = prune ]; then
	sysid=${DP_ARCHIVE_SYSID:-$("$DPW" get-file "archives/$archive.json" - "${REPO_ARGS[@]}" | jq -r '.systemIdentifier')}
	prune_archive "$sysid"
	exit 0
fi
[ "$cmd" = start ] || pg_die "usage: archive.sh [start|stop|prune]"

mode=$(psql_q "SHOW archive_mode") || pg_die "cannot connect to PostgreSQL at $PGHOST:$PGPORT as \"$PGUSER\""
if [ "$mode" = off ]; then
	pg_die "archive_mode is off on $PGHOST:$PGPORT: set archive_mode=on (ALTER SYSTEM SET archive_mode = on) and restart PostgreSQL, then start continuous backup \"$archive\" again"
fi

datadir=${DP_DATA_DIR:-$(psql_q "SHOW data_directory")}
[ -d "$datadir" ] || pg_die "data directory \"$datadir\" is not on this host: run the archive action on the database's host (DP_DATA_DIR)"
osuser=${DP_DB_OS_USER:-$(stat -c %U "$datadir")}
conf=$(archive_conf "$datadir")
case "$(cd "$(dirname "$conf")" && pwd)/" in
"$(cd "$datadir" && pwd)"/*) pg_die "the archive config \"$conf\" must be outside the data directory" ;;
esac
sysid=$(psql_q "SELECT system_identifier FROM pg_control_system()")

write_key_conf "$conf" "$osuser" "archive $archive" "archive = $archive"
# The server runs the command as $osuser: check that user can reach the
# repository before switching archiving on.
as_user "$osuser" "$DPW" wal-ls --config "$conf" >/dev/null ||
	pg_die "\"$osuser\" cannot use the repository \"$DP_REPO\" with \"$conf\" (see above); archiving left unchanged"

command="$DPW wal-push --config $conf %p"
printf '%s\n' "ALTER SYSTEM SET archive_command = :'cmd';" "SELECT pg_reload_conf();" |
	"$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -v cmd="$command" >/dev/null
for _ in $(seq 50); do
	[ "$(psql_q "SHOW archive_command")" = "$command" ] && break
	sleep 0.1
done
[ "$(psql_q "SHOW archive_command")" = "$command" ] || pg_die "the server did not take the new archive_command"

# The commit gives the segment a record, so the switch always completes one;
# wait until the server reports that segment archived.
psql_q "SELECT pg_current_xact_id()" >/dev/null
seg=$(psql_q "SELECT pg_walfile_name(pg_switch_wal())")
archived="" failed=0 last_failed=""
for _ in $(seq 300); do
	IFS='|' read -r archived failed last_failed <<<"$(psql_q "SELECT coalesce(last_archived_wal,''), failed_count, coalesce(last_failed_wal,'') FROM pg_stat_archiver")"
	[[ "${archived:0:24}" < "$seg" ]] || break
	sleep 0.1
done
if [[ "${archived:0:24}" < "$seg" ]]; then
	pg_die "archiving does not work: segment $seg was not archived within 30 s ($failed failed attempts, last \"$last_failed\"); the server log shows dp-worker's message"
fi
pg_log "archiving into \"$archive\" of $DP_REPO (config $conf, owner $osuser)"

refresh() {
	local w
	w=$(DP_ARCHIVE_SYSID=$sysid "$PG_SCRIPTS/window.sh" "$archive") || return 1
	write_info "$(jq -c '{timeRange: {start: .start, end: .end, timeZone: "Z"},
	  extras: [{archive: .archive, firstWal: .firstWal, lastWal: .lastWal, systemIdentifier: .systemIdentifier}]}' <<<"$w")"
	printf '%s\n' "$w"
}
refresh

interval=${DP_ARCHIVE_INTERVAL:-}
[ -n "$interval" ] || exit 0
interval=${interval%s}
trap 'pg_log "archive \"$archive\": stopping the window refresh (archiving stays on)"; exit 0' TERM INT
while :; do
	sleep "$interval" &
	wait $! || true
	psql_q "SELECT pg_switch_wal()" >/dev/null || pg_log "warning: cannot switch WAL"
	refresh >/dev/null || pg_log "warning: cannot refresh the recoverable window"
	[ "${DP_ARCHIVE_PRUNE:-true}" != true ] || prune_archive "$sysid" || pg_log "warning: pruning failed"
done
