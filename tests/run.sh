#!/usr/bin/env bash
# Runs check test programs and prints one closing line: "N passed, N failed".
# usage: tests/run.sh MODE PROGRAM...   (MODE: unit, integration or all)
# With ASAN_OBJ set, the unit programs are run a second time from that
# build directory (built with address and undefined sanitizers).
set -u
mode=$1; shift
passed=0; failed=0; broken=()

run_one() {
	local prog=$1 label=$2 out rc
	out=$(mktemp)
	echo "== $label"
	"$prog" >"$out" 2>&1
	rc=$?
	cat "$out"
	local line
	line=$(grep -E '^[0-9]+%: Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$out" | tail -n 1)
	if [ -z "$line" ]; then
		echo "!! $label: exited $rc without a check summary"
		failed=$((failed + 1)); broken+=("$label")
	else
		local n f e
		n=$(sed -E 's/.*Checks: ([0-9]+).*/\1/' <<<"$line")
		f=$(sed -E 's/.*Failures: ([0-9]+).*/\1/' <<<"$line")
		e=$(sed -E 's/.*Errors: ([0-9]+).*/\1/' <<<"$line")
		passed=$((passed + n - f - e)); failed=$((failed + f + e))
		if [ "$rc" -ne 0 ] || [ $((f + e)) -ne 0 ]; then broken+=("$label"); fi
	fi
	rm -f "$out"
}

# Integration tests run some programs as nobody (database servers, the
# archive_command of a database's OS user). When nobody cannot reach the
# checkout (a clone under a 0700 directory), those would fail for reasons
# that are not dp's: give them a copy of the programs and methods they can
# reach, removed at the end.
if [ -n "${BIN:-}" ] && [ "$(id -u)" = 0 ] && [ -x "$BIN/dp-worker" ] &&
	! runuser -u nobody -- test -x "$BIN/dp-worker" 2>/dev/null; then
	stage=$(mktemp -d /tmp/dp-stage-XXXXXX)
	trap 'rm -rf "$stage"' EXIT
	cp -R "$BIN" "$stage/bin"
	cp -R "$(cd "$(dirname "$0")/.." && pwd)/methods" "$stage/methods"
	chmod -R a+rX "$stage"
	echo "nobody cannot reach $BIN: running the programs from a copy in $stage"
	export BIN=$stage/bin DP_METHODS_DIR=$stage/methods
fi

for prog in "$@"; do
	run_one "$prog" "$prog"
done
if [ -n "${ASAN_OBJ:-}" ]; then
	export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
	export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
	for prog in "$@"; do
		case "$prog" in */tests/unit/*) ;; *) continue ;; esac
		asan_prog="$ASAN_OBJ/${prog#*/}"
		BIN=$(cd "$(dirname "$0")/.." && pwd)/$ASAN_OBJ/bin run_one "$asan_prog" "asan: $asan_prog"
	done
fi

[ "${#broken[@]}" -eq 0 ] || printf 'failed: %s\n' "${broken[@]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
