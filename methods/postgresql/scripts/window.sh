#!/usr/bin/env bash
# window.sh ARCHIVE [--no-store]: computes the recoverable window of a WAL
# archive from the repository itself, stores it as metadata
# "archives/ARCHIVE.json" (unless --no-store) and prints it:
#
#   {"archive", "systemIdentifier", "firstWal", "lastWal", "runStartWal",
#    "start": stop time of the oldest usable base backup,
#    "end": the newest commit/abort time found in the archived WAL,
#    "endLsn", "bases": [{"name","stopTime","stopLsn","startLsn","timeline"}], "updated"}
#
# "Usable" base backups belong to the same database (system identifier) and
# end inside the gap-free run of segments that reaches the newest one, so
# recovery from them can replay up to "end". The end time is read from the
# WAL with pg_waldump (newest segments first), never from file times.
# Env: DP_REPO(+passphrase), DP_ARCHIVE_SYSID (else taken from the stored
# window or the newest base backup's metadata).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

archive=${1:?usage: window.sh ARCHIVE [--no-store]}
store=1
[ "${2:-}" = --no-store ] && store=0
work=$(mktemp -d "${TMPDIR:-/tmp}/dp-pgwin-XXXXXX")
trap 'rm -rf "$work"' EXIT

"$DPW" wal-ls --json --archive "$archive" "${REPO_ARGS[@]}" >"$work/wal.json"
"$DPW" ls --json "${REPO_ARGS[@]}" >"$work/snaps.json"

sysid=${DP_ARCHIVE_SYSID:-}
if [ -z "$sysid" ]; then
	sysid=$("$DPW" get-file "archives/$archive.json" - "${REPO_ARGS[@]}" 2>/dev/null | jq -r '.systemIdentifier // empty' || true)
fi

# Segments sorted by (segment number, timeline): the last one is the newest.
jq -r '.[].name | select(test("^[0-9A-F]{24}$"))' "$work/wal.json" |
	awk '{ print substr($0, 9, 16) substr($0, 1, 8) " " $0 }' | sort | cut -d' ' -f2 >"$work/segs"
nsegs=$(wc -l <"$work/segs")

first="" last="" runstart=""
if [ "$nsegs" -gt 0 ]; then
	first=$(head -n 1 "$work/segs")
	last=$(tail -n 1 "$work/segs")
	# Walk back from the newest segment while segment numbers are contiguous.
	prev=$(seg_num "$last")
	runstart=$last
	while read -r s; do
		n=$(((16#${s:8:8} << 8) + 16#${s:16:8})) # seg_num, without a fork per line
		if [ "$n" -eq "$prev" ] || [ "$n" -eq $((prev - 1)) ]; then
			runstart=$s
			prev=$n
		else
			break
		fi
	done < <(tac "$work/segs" | tail -n +2)
fi

# Base backups of this database (newest first when no system id is known).
jq -c '[.[] | select(.meta.engine? == "postgresql" and (.meta.method? == "basebackup" or .meta.method? == "filebackup"))
        | {name, id, stopTime: .meta.stopTime, stopLsn: .meta.stopLsn, startLsn: .meta.startLsn,
           timeline: .meta.timeline, systemIdentifier: .meta.systemIdentifier}]' "$work/snaps.json" >"$work/bases.json"
if [ -z "$sysid" ]; then
	sysid=$(jq -r 'sort_by(.stopTime) | last | .systemIdentifier // empty' "$work/bases.json")
fi
runseg=0
[ -z "$runstart" ] || runseg=$(seg_num "$runstart")
: >"$work/usable"
while IFS=$'\t' read -r bname _ blsn; do
	[ -n "$bname" ] || continue
	[ "$(lsn_seg "$blsn")" -ge "$runseg" ] && [ -n "$runstart" ] && printf '%s\n' "$bname" >>"$work/usable"
done < <(jq -r --arg s "$sysid" '.[] | select(.systemIdentifier == $s) | [.name, .stopTime, .stopLsn] | @tsv' "$work/bases.json")
jq -c --arg s "$sysid" --rawfile u "$work/usable" \
	'[.[] | select(.systemIdentifier == $s and (.name as $n | ($u | split("\n") | index($n)) != null))] | sort_by(.stopTime)' \
	"$work/bases.json" >"$work/usable.json"
start=$(jq -r 'first | .stopTime // empty' "$work/usable.json")

# The newest commit/abort time in the archive: waldump the newest segments.
end="" endlsn=""
if [ -n "$last" ]; then
	mkdir "$work/wal"
	# Newest first, fetched one at a time: usually the newest segment has a
	# commit. pg_waldump skips a record continued from the previous segment.
	while read -r s; do
		"$DPW" wal-fetch --archive "$archive" "${REPO_ARGS[@]}" "$s" "$work/wal/$s" || continue
		line=$(TZ=UTC "$PGBIN/pg_waldump" -p "$work/wal" "$s" 2>/dev/null |
			grep -E 'desc: (COMMIT|ABORT) [0-9]{4}-' | tail -n 1 || true)
		rm -f "$work/wal/$s"
		if [ -n "$line" ]; then
			ts=$(sed -E 's/.*desc: (COMMIT|ABORT) ([0-9-]+ [0-9:.]+) UTC.*/\2/' <<<"$line")
			endlsn=$(sed -E 's/.*lsn: ([0-9A-F]+\/[0-9A-F]+),.*/\1/' <<<"$line")
			end=$(utc_norm "$ts UTC")
			break
		fi
	done < <(tac "$work/segs" | head -n 16)
fi

jq -n --arg a "$archive" --arg s "$sysid" --arg f "$first" --arg l "$last" --arg r "$runstart" \
	--arg st "$start" --arg e "$end" --arg el "$endlsn" --arg u "$(utc_now)" --slurpfile b "$work/usable.json" \
	'{archive: $a, systemIdentifier: $s, firstWal: $f, lastWal: $l, runStartWal: $r,
	  start: (if $st == "" then null else $st end), end: (if $e == "" then null else $e end),
	  endLsn: $el, bases: $b[0], updated: $u}' >"$work/window.json"
if [ "$store" -eq 1 ]; then
	"$DPW" put-file "archives/$archive.json" "$work/window.json" "${REPO_ARGS[@]}"
fi
cat "$work/window.json"
