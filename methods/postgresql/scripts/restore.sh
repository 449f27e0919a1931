#!/usr/bin/env bash
# Restore a PostgreSQL data directory from the repository.
#
#   restore.sh [prepare|ready|all|rollback] [options]
#     --backup NAME    a full backup (snapshot name), or a continuous backup
#                      (archive) when a target is given
#     --archive NAME   the WAL archive for point-in-time recovery
#     --time T         recover to T (YYYY-MM-DDTHH:MM:SS[.ffffff]Z): picks the
#                      newest base backup of that database that ended before T
#     --lsn LSN        recover to LSN (picks the newest base ending before it)
#     --latest         recover to the end of the archive
#     --to DIR         restore into a new data directory DIR ...
#     --port N         ... and run it on port N (default: DP_RESTORE_PORT or
#                      the port in the backup)
#     --in-place       replace the data directory DP_DATA_DIR (or --data-dir)
#     --owner USER     OS user the files belong to and the server runs as
#                      (default: owner of the source data directory)
#     --keep-archiving keep archive_mode of the backup in a new directory
#                      (default: off there, so a copy never writes the archive)
#
# prepare: validates everything first (backup exists, target time inside the
#   recoverable window, target free, port free) and changes nothing when that
#   fails; then pulls the base backup into place and writes the recovery
#   settings. In place, the backup is pulled next to the old directory while
#   the old server keeps running; only then is it stopped and the directories
#   swapped (two renames); the old one stays aside as DIR.dp-old.
# ready: starts the server if needed, waits for recovery to end (promotion),
#   connects and runs a query; in place, removes DIR.dp-old on success and
#   puts it back (and restarts it if it was running) on failure.
# all: prepare then ready (the default).
# rollback: undoes an interrupted in-place restore (also done automatically
#   at the start of the next one).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

step=all
case "${1:-}" in prepare | ready | all | rollback) step=$1 && shift ;; esac
backup=${DP_BACKUP_NAME:-} archive=${DP_ARCHIVE_NAME:-} base=${DP_BASE_BACKUP_NAME:-}
rtime=${DP_RESTORE_TIME:-} rlsn=${DP_RESTORE_LSN:-} latest=0
target=${DP_RESTORE_DATA_DIR:-} port=${DP_RESTORE_PORT:-} inplace=${DP_RESTORE_IN_PLACE:-false}
owner=${DP_RESTORE_OWNER:-} keep_arch=0 datadir=${DP_DATA_DIR:-}
while [ $# -gt 0 ]; do
	case "$1" in
	--backup) backup=$2 && shift ;;
	--archive) archive=$2 && shift ;;
	--base) base=$2 && shift ;;
	--time) rtime=$2 && shift ;;
	--lsn) rlsn=$2 && shift ;;
	--latest) latest=1 ;;
	--to) target=$2 && shift ;;
	--port) port=$2 && shift ;;
	--in-place) inplace=true ;;
	--data-dir) datadir=$2 && shift ;;
	--owner) owner=$2 && shift ;;
	--keep-archiving) keep_arch=1 ;;
	*) pg_die "unknown argument \"$1\" (see the comment at the top of restore.sh)" ;;
	esac
	shift
done
[ "$inplace" = true ] && target=$datadir
[ -n "$target" ] || pg_die "no target: give --to DIR (new data directory) or --in-place with DP_DATA_DIR"
target=$(realpath -m "$target")
state=$target.dp-restore.state # survives between prepare and ready
old=$target.dp-old
new=$target.dp-new
walconf=$(dirname "$target")/.dp-restore-$(basename "$target").conf

# ---- helpers ----

server_pid() { # PID of a live postmaster over $1, or nothing
	local pid
	pid=$(head -n 1 "$1/postmaster.pid" 2>/dev/null) || return 0
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
	return 0
}
stop_server() { # fast shutdown of the postmaster over $1, by PID
	local pid
	pid=$(server_pid "$1")
	[ -n "$pid" ] || return 0
	kill -INT "$pid"
	for _ in $(seq 600); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	pg_die "the server over \"$1\" (pid $pid) did not stop"
}
start_server() { # start over $1 as $owner, waiting until it accepts connections
	as_user "$owner" "$PGBIN/pg_ctl" -D "$1" -l "$1.log" -w -t "${DP_START_TIMEOUT:-600}" start >/dev/null
}
conf_get() { # effective value of setting $2 in data dir $1 (last one wins)
	cat "$1/postgresql.conf" "$1/postgresql.auto.conf" 2>/dev/null |
		sed -n -E "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*'?([^'#]*)'?.*/\1/p" | tail -n 1 | tr -d ' '
}
state_set() { printf '%s\n' "$@" >"$state.tmp" && mv "$state.tmp" "$state"; }
state_get() { sed -n "s/^$1=//p" "$state" 2>/dev/null | tail -n 1; }

# Puts an interrupted in-place restore back: the old directory returns to
# its place and is started again if it was running.
rollback() {
	[ -f "$state" ] || [ -d "$old" ] || { rm -rf "$new"; return 0; }
	local was_running
	was_running=$(state_get was_running)
	owner=${owner:-$(state_get owner)}
	if [ -d "$old" ]; then
		pg_log "rolling back: putting the original data directory back in \"$target\""
		[ ! -d "$target" ] || stop_server "$target"
		[ ! -d "$target" ] || mv "$target" "$target.dp-failed"
		mv "$old" "$target"
		rm -rf "$target.dp-failed"
	fi
	rm -rf "$new"
	if [ "$was_running" = 1 ] && [ -z "$(server_pid "$target")" ]; then
		owner=${owner:-$(stat -c %U "$target")}
		start_server "$target" || pg_log "warning: the original server did not start again; see $target.log"
	fi
	rm -f "$state"
	[ ! -f "$walconf" ] || drop_key_conf "$walconf" restore
}

if [ "$step" = rollback ]; then
	rollback
	exit 0
fi

# ---- ready: start, wait for promotion, check ----

ready() {
	[ -f "$state" ] || pg_die "nothing prepared for \"$target\" (no $state): run prepare first"
	owner=$(state_get owner)
	local mode recovery
	mode=$(state_get mode)
	recovery=$(state_get recovery)
	fail() {
		pg_log "error: $*"
		[ ! -f "$target.log" ] || tail -n 15 "$target.log" >&2
		if [ "$mode" = inplace ]; then
			rollback
			pg_die "in-place restore of \"$target\" failed; the original data directory is back"
		fi
		stop_server "$target"
		pg_die "restore into \"$target\" failed"
	}
	[ -n "$(server_pid "$target")" ] || start_server "$target" || fail "the restored server did not start"
	if [ "$mode" = new ]; then
		# The restored server's own socket directory if it has one, else TCP.
		local sock
		sock=$(state_get sockdir)
		[ -n "$sock" ] && [ -d "$sock" ] || sock=127.0.0.1
		PGPORT=$(state_get port)
		export PGHOST=${DP_RESTORE_HOST:-$sock} PGPORT
	fi
	if [ "$recovery" = 1 ]; then
		local r=t
		for _ in $(seq "$((${DP_START_TIMEOUT:-600} * 5))"); do
			r=$(psql_q "SELECT pg_is_in_recovery()" 2>/dev/null) || r=down
			[ "$r" = f ] && break
			if [ "$r" = down ] && [ -z "$(server_pid "$target")" ]; then
				fail "recovery stopped before reaching its target"
			fi
			sleep 0.2
		done
		[ "$r" = f ] || fail "recovery did not finish in time"
		# The recovery settings are inert after promotion; drop them.
		printf '%s\n' "ALTER SYSTEM RESET restore_command;" "ALTER SYSTEM RESET recovery_target_time;" \
			"ALTER SYSTEM RESET recovery_target_lsn;" "ALTER SYSTEM RESET recovery_target_action;" \
			"ALTER SYSTEM RESET recovery_target;" |
			"$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 >/dev/null || true
		[ ! -f "$walconf" ] || drop_key_conf "$walconf" restore
	fi
	local check
	check=$(psql_q "${DP_RESTORE_CHECK_SQL:-SELECT count(*) FROM pg_catalog.pg_class}") ||
		fail "the restored server does not answer queries"
	[ -n "$check" ] || fail "the check query returned nothing"
	if [ "$mode" = inplace ]; then
		rm -rf "$old"
	fi
	rm -f "$state"
	pg_log "restored \"$target\" (port $PGPORT) and checked it: $(psql_q "SELECT pg_is_in_recovery()::text, timeline_id FROM pg_control_checkpoint()" | tr '|' ' ' | sed 's/^false /timeline /; s/^true /recovering, timeline /')"
}

if [ "$step" = ready ]; then
	ready
	exit 0
fi

# ---- prepare: validate everything first ----

[ -n "${DP_REPO:-}" ] || pg_die "DP_REPO is not set: name the repository"
[ -z "$rtime" ] || [[ "$rtime" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}[T\ ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z$ ]] ||
	pg_die "--time \"$rtime\": use YYYY-MM-DDTHH:MM:SSZ (UTC)"
[ -z "$rlsn" ] || [[ "$rlsn" =~ ^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$ ]] || pg_die "--lsn \"$rlsn\": use the form 0/3000028"
ntargets=0
[ -z "$rtime" ] || ntargets=$((ntargets + 1))
[ -z "$rlsn" ] || ntargets=$((ntargets + 1))
[ "$latest" = 0 ] || ntargets=$((ntargets + 1))
[ "$ntargets" -le 1 ] || pg_die "give at most one of --time, --lsn and --latest"

if [ "$inplace" = true ]; then
	# A previous in-place restore that was interrupted is undone first.
	[ ! -f "$state" ] && [ ! -d "$old" ] || rollback
	[ -f "$target/PG_VERSION" ] || pg_die "\"$target\" is not a PostgreSQL data directory: nothing to restore in place"
	owner=${owner:-$(stat -c %U "$target")}
	port=$(conf_get "$target" port)
	port=${port:-5432}
else
	if [ -e "$target" ] && [ -n "$(ls -A "$target" 2>/dev/null)" ]; then
		pg_die "target \"$target\" exists and is not empty: choose a new directory (or --in-place)"
	fi
	[ -n "$owner" ] || { [ -n "$datadir" ] && [ -d "$datadir" ] && owner=$(stat -c %U "$datadir"); } || true
	owner=${owner:-$(id -un)}
fi
id "$owner" >/dev/null 2>&1 || pg_die "OS user \"$owner\" does not exist (--owner)"

work=$(mktemp -d "${TMPDIR:-/tmp}/dp-pgrs-XXXXXX")
trap 'rm -rf "$work"' EXIT

# Which base backup, and is the target inside the recoverable window?
# Recovery always runs: without a target it stops as soon as the backup is
# consistent ('immediate') and promotes, so the restored server starts a new
# timeline and never rewrites WAL names the archive already holds.
recovery=1
if [ "$ntargets" -eq 1 ]; then
	if [ -z "$archive" ]; then
		# KubeBlocks style: the continuous backup's name is the archive.
		archive=$backup
	fi
	[ -n "$archive" ] || pg_die "point-in-time restore needs the archive: --archive NAME (or --backup of the continuous backup)"
	"$PG_SCRIPTS/window.sh" "$archive" --no-store >"$work/window.json" ||
		pg_die "cannot read the recoverable window of archive \"$archive\""
	wstart=$(jq -r '.start // empty' "$work/window.json")
	wend=$(jq -r '.end // empty' "$work/window.json")
	[ -n "$(jq -r '.lastWal' "$work/window.json")" ] || pg_die "archive \"$archive\" holds no WAL in $DP_REPO"
	[ -n "$wstart" ] || pg_die "archive \"$archive\" has no usable base backup (none ends inside the archived WAL): take a full backup"
	if [ -n "$rtime" ]; then
		t=$(utc_norm "$rtime")
		if [[ "$t" < "$wstart" ]] || [ -z "$wend" ] || [[ "$t" > "$wend" ]]; then
			pg_die "restore time $rtime is outside the recoverable window of archive \"$archive\": ${wstart} .. ${wend:-(no commit archived yet)}; nothing was changed"
		fi
		pick=$(jq -r --arg t "$t" '[.bases[] | select(.stopTime <= $t)] | last | .name // empty' "$work/window.json")
	elif [ -n "$rlsn" ]; then
		want=$(lsn_num "$rlsn")
		pick=""
		while IFS=$'\t' read -r n l; do
			[ "$(lsn_num "$l")" -le "$want" ] && pick=$n
		done < <(jq -r '.bases[] | [.name, .stopLsn] | @tsv' "$work/window.json")
		[ -n "$pick" ] || pg_die "LSN $rlsn is before the end of every usable base backup of archive \"$archive\" (window starts at $wstart); nothing was changed"
		endlsn=$(jq -r '.endLsn // empty' "$work/window.json")
		if [ -n "$endlsn" ] && [ "$want" -gt "$(lsn_num "$endlsn")" ]; then
			pg_die "LSN $rlsn is past the newest archived commit ($endlsn at $wend) of archive \"$archive\"; nothing was changed"
		fi
	else
		pick=$(jq -r '.bases | last | .name // empty' "$work/window.json")
	fi
	base=${base:-$pick}
	[ -n "$base" ] || pg_die "no base backup of archive \"$archive\" ends before $rtime (window ${wstart} .. ${wend}); nothing was changed"
else
	base=${base:-$backup}
	[ -n "$base" ] || pg_die "no backup named: --backup NAME"
fi
"$DPW" stat --json "${REPO_ARGS[@]}" "$base" >"$work/base.json" 2>"$work/stat.err" ||
	pg_die "backup \"$base\" not found in $DP_REPO: $(cat "$work/stat.err")"
case "$(jq -r '.meta.method // empty' "$work/base.json")" in
basebackup | filebackup) ;;
*) pg_die "\"$base\" is not a postgresql base backup" ;;
esac

# The new directory's port must be free.
if [ "$inplace" != true ]; then
	[ -n "$port" ] || port=5432
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		pg_die "port $port is in use on 127.0.0.1: choose another with --port"
	fi
	sockdir=""
else
	sockdir=$(conf_get "$target" unix_socket_directories | cut -d, -f1)
fi
pg_log "restoring \"$base\" into \"$target\"${rtime:+ to $rtime}${rlsn:+ to LSN $rlsn}$([ "$latest" = 1 ] && echo ' to the end of the archive') as $owner"

# ---- prepare: lay the data down ----

dest=$target
was_running=0
if [ "$inplace" = true ]; then
	dest=$new
	[ -z "$(server_pid "$target")" ] || was_running=1
	state_set mode=inplace owner="$owner" was_running=$was_running phase=pulling
fi
rm -rf "$new"
mkdir -p "$dest"
chmod 700 "$dest"
[ "$(id -un)" = "$owner" ] || chown "$owner" "$dest"

# dp-worker extracts the tar stream itself (a filebackup is a tree
# snapshot, a basebackup a stream holding pg_basebackup's tar: --untar),
# starts writeback while it extracts, and syncs the filesystem (syncfs)
# before it exits 0: the data is durable before anything points at it.
pull_args=(--quiet)
[ "$(jq -r '.kind' "$work/base.json")" = tree ] || pull_args+=(--untar)
[ "$(id -u)" -ne 0 ] || pull_args+=(--owner "$owner")
set +e
"$DPW" pull "${pull_args[@]}" "${REPO_ARGS[@]}" "$base" "$dest"
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
	rm -rf "$new"
	[ "$inplace" = true ] && rm -f "$state"
	[ "$inplace" = true ] || rm -rf "$target"
	pg_die "pulling \"$base\" failed (dp-worker exit $rc); nothing was changed"
fi
# A backup of a server whose pg_wal was a link holds the segments but not
# the directory's own entry: make it the owner's.
if [ -d "$dest/pg_wal" ] && [ ! -L "$dest/pg_wal" ] && [ "$(stat -c %U "$dest/pg_wal")" != "$owner" ]; then
	chown "$owner:" "$dest/pg_wal" && chmod 700 "$dest/pg_wal"
fi

# Configuration. In place, the current server's configuration is kept.
if [ "$inplace" = true ]; then
	for f in postgresql.conf postgresql.auto.conf pg_hba.conf pg_ident.conf; do
		[ ! -f "$target/$f" ] || as_user "$owner" cp -p "$target/$f" "$dest/$f"
	done
else
	{
		printf '\n# dp restore of "%s"\nport = %s\n' "$base" "$port"
		[ "$keep_arch" = 1 ] || printf "archive_mode = 'off'\n"
	} | as_user "$owner" tee -a "$dest/postgresql.auto.conf" >/dev/null
fi
rm -f "$dest/backup_manifest"
if [ "$recovery" = 1 ]; then
	# A key slot, not the passphrase: restore_command runs once per segment.
	[ -z "$archive" ] || write_key_conf "$walconf" "$owner" restore "archive = $archive"
	{
		if [ -n "$archive" ]; then
			printf "restore_command = '%s wal-fetch --config %s %%f %%p'\n" "$DPW" "$walconf"
		else
			printf "restore_command = 'false'\nrecovery_target = 'immediate'\n"
		fi
		if [ -n "$rtime" ]; then
			printf "recovery_target_time = '%s'\n" "$(date -u -d "$rtime" '+%Y-%m-%d %H:%M:%S.%6N+00')"
		elif [ -n "$rlsn" ]; then
			printf "recovery_target_lsn = '%s'\n" "$rlsn"
		fi
		[ "$latest" = 1 ] || printf "recovery_target_action = 'promote'\n"
	} | as_user "$owner" tee -a "$dest/postgresql.auto.conf" >/dev/null
	as_user "$owner" touch "$dest/recovery.signal"
fi
sync -f "$dest"

# Test hooks (fault injection): die at a chosen point of an in-place restore.
test_kill() { [ "${DP_TEST_KILL_AT:-}" != "$1" ] || kill -9 $$; }

if [ "$inplace" = true ]; then
	test_kill pulled
	state_set mode=inplace owner="$owner" was_running=$was_running phase=swapping recovery=$recovery port="$port" sockdir="$sockdir"
	stop_server "$target"
	test_kill stopped
	mv "$target" "$old"
	test_kill swapped
	mv "$new" "$target"
	state_set mode=inplace owner="$owner" was_running=$was_running phase=prepared recovery=$recovery port="$port" sockdir="$sockdir"
else
	sockdir=$(conf_get "$target" unix_socket_directories | cut -d, -f1)
	state_set mode=new owner="$owner" phase=prepared recovery=$recovery port="$port" sockdir="$sockdir"
fi

if [ "$step" = all ]; then
	ready
fi
