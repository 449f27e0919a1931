#!/usr/bin/env bash
# backupData of the postgresql-filebackup ActionSet: a physical full backup
# that reads the data directory itself (PostgreSQL's low-level backup API)
# instead of streaming it through pg_basebackup.
#
#   1. one psql session, kept open to the end: a temporary physical
#      replication slot (so the server keeps every WAL segment from here on,
#      whatever checkpoints and archiving do meanwhile), then
#      pg_backup_start(label, fast => true);
#   2. dp-worker push --trailer (started first, so that opening the
#      repository overlaps with the checkpoint; it waits for "tree") reads
#      the data directory (files read ahead on one thread while chunking,
#      hashing, compression and encryption run on the others) into one
#      tree snapshot, leaving out what the PostgreSQL documentation says
#      to leave out (below);
#   3. once the tree is read (dp-worker prints "tree-read"):
#      pg_backup_stop(wait_for_archive => false), and dp-worker appends to
#      the same tar stream the WAL segments from the start to the stop
#      location (read from pg_wal, still there thanks to the slot), the
#      timeline history files, backup_label and tablespace_map as returned
#      by pg_backup_stop, and the metadata; then "commit".
# The backup is self-contained: it restores without the WAL archive (as a
# pg_basebackup -X fetch one does). Waiting for the archive instead would
# tie the backup's duration to archive_command and make a backup useless
# without its archive. Anything failing before "commit" (the server, the
# script, dp-worker) leaves no snapshot: dp-worker abandons the push when
# its input ends without "commit", and the server ends the backup when the
# session closes.
#
# Needs: to run on the database host as a user that can read the data
# directory (its owner), DP_DATA_DIR, a primary (not a standby), no
# tablespaces (pg_tblspc empty: use postgresql-basebackup for those),
# superuser or pg_backup_start/stop rights, and for the slot the
# REPLICATION attribute and a free max_replication_slots entry (without
# them the backup still runs, relying on the WAL still being in pg_wal,
# and says so).
#
# Env as backup-full.sh (DP_BACKUP_NAME, DP_DB_*, DP_DATA_DIR, DP_REPO,
# DP_PARENT_BACKUP_NAME, DP_BACKUP_INFO_FILE, DP_ZSTD_LEVEL). Prints the
# push result JSON with the metadata.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

name=${DP_BACKUP_NAME:-${1:-}}
[ -n "$name" ] || pg_die "DP_BACKUP_NAME is not set: name the backup"
[ -n "${DP_DATA_DIR:-}" ] || pg_die "DP_DATA_DIR is not set: the file-level method reads the data directory, name it"
data=$(realpath -e "$DP_DATA_DIR" 2>/dev/null) || pg_die "data directory \"$DP_DATA_DIR\" does not exist"
[ -r "$data/global/pg_control" ] ||
	pg_die "cannot read \"$data/global/pg_control\": run as the data directory's owner ($(stat -c %U "$data" 2>/dev/null || echo ?))"
if [ -n "$(ls -A "$data/pg_tblspc" 2>/dev/null)" ]; then
	pg_die "\"$data\" has tablespaces (pg_tblspc is not empty): the file-level method does not copy them; use postgresql-basebackup"
fi

# A reader that went away is an error to handle (EPIPE), not a silent death.
trap '' PIPE
work=$(mktemp -d "${TMPDIR:-/tmp}/dp-pgfb-XXXXXX")
pushpid=""
cleanup() {
	# An unfinished push is abandoned (no snapshot), the session closes
	# (the server ends the backup and drops the temporary slot).
	[ -z "$pushpid" ] || kill -TERM "$pushpid" 2>/dev/null || true
	[ -z "$pushpid" ] || wait "$pushpid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

info=$(psql_q "SELECT system_identifier, current_setting('server_version_num'), pg_is_in_recovery(),
  current_setting('wal_segment_size'), $SQL_NOW FROM pg_control_system()") ||
	pg_die "cannot connect to PostgreSQL at $PGHOST:$PGPORT as \"$PGUSER\""
IFS='|' read -r sysid version inrec segsize start_time <<<"$info"
[ "$inrec" = f ] || pg_die "the server is a standby: the file-level method backs up a primary; use postgresql-basebackup"
# The directory must be this server's: same system identifier.
dsysid=$(LC_ALL=C "$PGBIN/pg_controldata" "$data" 2>/dev/null | sed -n 's/^Database system identifier: *//p')
[ "$dsysid" = "$sysid" ] ||
	pg_die "\"$data\" (system identifier ${dsysid:-unknown}) is not the data directory of the server at $PGHOST:$PGPORT ($sysid): check DP_DATA_DIR"
case "$segsize" in
*MB) segbytes=$((${segsize%MB} << 20)) ;;
*GB) segbytes=$((${segsize%GB} << 30)) ;;
*) pg_die "unexpected wal_segment_size \"$segsize\"" ;;
esac

# What the PostgreSQL documentation (and pg_basebackup) leave out of a base
# backup; the directories themselves are kept, empty. pg_wal's segments and
# history files come at the end, from the trailer.
{
	printf '%s\n' 'pg_wal/[0-9A-F]*' 'pg_wal/xlogtemp.*' 'pg_wal/archive_status/*' 'pg_replslot/*' 'pg_dynshmem/*' 'pg_notify/*' 'pg_serial/*' \
		'pg_snapshots/*' 'pg_stat_tmp/*' 'pg_subtrans/*' \
		postmaster.pid postmaster.opts pg_internal.init 'pgsql_tmp*' \
		backup_label backup_label.old tablespace_map tablespace_map.old backup_manifest \
		postgresql.auto.conf.tmp current_logfiles.tmp 'base/*/t[0-9]*_[0-9]*'
	# pg_wal elsewhere (initdb -X): the link is left out, the restored
	# directory gets a real pg_wal with the backup's segments (as
	# pg_basebackup does), never a link into the source's WAL.
	[ ! -L "$data/pg_wal" ] || printf '%s\n' pg_wal
	# Unlogged relations: only their init fork is kept (recovery resets
	# them from it).
	for f in "$data"/base/*/*_init; do
		[ -e "$f" ] || continue
		r=${f#"$data"/}
		r=${r%_init}
		printf '%s\n' "$r" "$r.[0-9]*" "${r}_fsm" "${r}_fsm.[0-9]*" "${r}_vm" "${r}_vm.[0-9]*"
	done
} >"$work/exclude"

# ---- dp-worker first: opening the repository (key derivation) overlaps
# with the session's start and checkpoint; it reads nothing before "tree" ----
mkfifo "$work/in" "$work/out"
"$DPW" push --quiet --json --trailer --exclude-from "$work/exclude" ${DP_ZSTD_LEVEL:+--zstd-level "$DP_ZSTD_LEVEL"} \
	${DP_BLOCK_SIZE:+--block-size "$DP_BLOCK_SIZE"} \
	"${REPO_ARGS[@]}" "$name" "$data" <"$work/in" >"$work/out" 2>"$work/push.err" &
pushpid=$!
exec {push_in}>"$work/in" {push_out}<"$work/out"
push_failed() {
	local rc=0
	exec {push_in}>&-
	wait "$pushpid" 2>/dev/null || rc=$?
	pushpid=""
	grep -v '^$' "$work/push.err" >&2 || true
	pg_die "storing backup \"$name\" in the repository failed (dp-worker exit $rc); no backup \"$name\" was recorded"
}

# ---- the session ----
coproc PSQL { "$PGBIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 2>"$work/psql.err"; }
# Bash unsets PSQL and PSQL_PID once it has reaped the coprocess: keep copies.
psql_in=${PSQL[1]} psql_out=${PSQL[0]} psql_pid=$PSQL_PID
# sq SQL: one single-line result from the session (dies if it failed).
sq() {
	printf '%s\n' "$1" >&"$psql_in" || pg_die "the backup session ended: $(cat "$work/psql.err")"
	IFS= read -r REPLY <&"$psql_out" || pg_die "the backup session failed: $(cat "$work/psql.err")"
}
sq "SELECT (rolsuper OR rolreplication) AND (SELECT count(*) FROM pg_replication_slots) <
  current_setting('max_replication_slots')::int FROM pg_roles WHERE rolname = current_user;"
if [ "$REPLY" = t ]; then
	sq "SELECT slot_name FROM pg_create_physical_replication_slot('dp_backup_' || pg_backend_pid(), true, true);"
else
	pg_log "warning: no temporary replication slot (needs REPLICATION and a free max_replication_slots entry): the WAL of the backup must still be in pg_wal at its end"
fi
IFS= read -r line <&"$push_out" || push_failed
[ "$line" = ready ] || push_failed
sq "SELECT pg_backup_start('dp $name', true);"
start_lsn=$REPLY

# ---- the tree ----
printf 'tree\n' >&"$push_in" 2>/dev/null || push_failed
IFS= read -r line <&"$push_out" || push_failed
[ "$line" = tree-read ] || push_failed

# ---- stop, then the WAL and the label ----
sq "SELECT lsn, translate(encode(convert_to(labelfile, 'UTF8'), 'base64'), E'\n', ''),
  translate(encode(convert_to(coalesce(spcmapfile, ''), 'UTF8'), 'base64'), E'\n', '')
  FROM pg_backup_stop(wait_for_archive => false);"
IFS='|' read -r stop_lsn label64 map64 <<<"$REPLY"
base64 -d <<<"$label64" >"$work/backup_label"
[ -z "$map64" ] || base64 -d <<<"$map64" >"$work/tablespace_map"
sq "SELECT $SQL_NOW, pg_walfile_name('$stop_lsn');"
IFS='|' read -r stop_time stop_wal <<<"$REPLY"
start_wal=$(sed -n 's/^START WAL LOCATION: .* (file \([0-9A-F]\{24\}\))$/\1/p' "$work/backup_label")
tli=$(sed -n 's/^START TIMELINE: \([0-9]*\)$/\1/p' "$work/backup_label")
[ -n "$start_wal" ] && [ -n "$tli" ] || pg_die "unexpected backup_label from pg_backup_stop: $(cat "$work/backup_label")"
[ "${start_wal:0:8}" = "${stop_wal:0:8}" ] || pg_die "the timeline changed during the backup ($start_wal .. $stop_wal)"

# WAL segment names from the start to the stop segment (same timeline).
per_id=$(((1 << 32) / segbytes))
first=$(((16#${start_wal:8:8} * per_id) + 16#${start_wal:16:8}))
last=$(((16#${stop_wal:8:8} * per_id) + 16#${stop_wal:16:8}))
{
	for ((s = first; s <= last; s++)); do
		w=$(printf '%s%08X%08X' "${start_wal:0:8}" $((s / per_id)) $((s % per_id)))
		[ -f "$data/pg_wal/$w" ] ||
			pg_die "WAL segment $w of the backup is no longer in $data/pg_wal (recycled): give the backup a replication slot (REPLICATION, max_replication_slots) or raise wal_keep_size"
		printf 'file\tpg_wal/%s\t%s\n' "$w" "$data/pg_wal/$w"
	done
	for h in "$data"/pg_wal/*.history; do
		[ -f "$h" ] || continue
		printf 'file\tpg_wal/%s\t%s\n' "${h##*/}" "$h"
	done
	printf 'file\tbackup_label\t%s\n' "$work/backup_label"
	[ ! -s "$work/tablespace_map" ] || printf 'file\ttablespace_map\t%s\n' "$work/tablespace_map"
	meta=$(jq -c -n --arg sysid "$sysid" --argjson ver "$version" --argjson tli "$tli" \
		--arg start "$start_lsn" --arg stop "$stop_lsn" --arg st "$start_time" --arg et "$stop_time" \
		--arg parent "${DP_PARENT_BACKUP_NAME:-}" --arg fw "$start_wal" --arg lw "$stop_wal" \
		--rawfile lbl "$work/backup_label" \
		'{engine: "postgresql", method: "filebackup", systemIdentifier: $sysid, serverVersion: $ver,
		  timeline: $tli, startLsn: $start, stopLsn: $stop, startTime: $st, stopTime: $et,
		  parent: $parent, firstWal: $fw, lastWal: $lw, backupLabel: $lbl}')
	printf 'meta\t%s\n' "$meta"
	printf 'commit\n'
} >"$work/trailer"
cat "$work/trailer" 2>/dev/null >&"$push_in" || push_failed
exec {push_in}>&-
IFS= read -r res <&"$push_out" || true
wait "$pushpid" || push_failed
pushpid=""
exec {push_out}<&-
# Closing the session drops the temporary slot.
exec {psql_in}>&-
wait "$psql_pid" 2>/dev/null || true
grep -v '^$' "$work/push.err" >&2 || true # warnings (files changed while read)

[ -n "$res" ] || pg_die "dp-worker printed no result for backup \"$name\""
report_backup "$name" " (files)" "$meta" "$res"
