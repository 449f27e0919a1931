#!/usr/bin/env bash
# Installs every Debian and npm package that building, testing, the demo and
# the benchmarks need. Idempotent: packages already present are skipped, so a
# second run does nothing and needs no network. This is the only list of
# packages in the project.
set -euo pipefail

# Build: compiler, libraries (headers), tooling.
BUILD_PKGS=(
  build-essential pkg-config clang-format
  libarchive-dev libzstd-dev libssl-dev libcurl4-openssl-dev
  libsqlite3-dev libcjson-dev libyaml-dev libmicrohttpd-dev check
)
# Tests and demo: real servers and the peers we check interoperability with
# (b3sum: the reference BLAKE3 the chunk-id hash is checked against).
TEST_PKGS=(
  postgresql-15 postgresql-client-15 mariadb-server mariadb-backup redis-server
  awscli zstd util-linux procps psmisc jq b3sum
)
# Node.js runs s3rver and the browser tests. A machine may already carry a
# Node.js outside Debian's packages; Debian's npm conflicts with it, so take
# Debian's only where there is none.
command -v npm >/dev/null 2>&1 || TEST_PKGS+=(nodejs npm)
# Benchmarks: the reference tools dp is measured against.
BENCH_PKGS=(restic pgbackrest time)

want=("${BUILD_PKGS[@]}")
case "${1:-all}" in
  build) ;;
  test) want+=("${TEST_PKGS[@]}") ;;
  all) want+=("${TEST_PKGS[@]}" "${BENCH_PKGS[@]}") ;;
  *) echo "usage: $0 [build|test|all]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]}; run this script as root" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Do not start the distribution's own database services: tests run their own.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  rm -f /usr/sbin/policy-rc.d
fi

# npm packages (pinned in tests/package.json) for the S3-protocol server and the
# browser tests.
if [ "${1:-all}" != build ]; then
  here=$(cd "$(dirname "$0")/.." && pwd)
  if [ -f "$here/tests/package.json" ] && [ ! -d "$here/tests/node_modules/s3rver" ]; then
    (cd "$here/tests" && npm install --no-audit --no-fund --loglevel=error)
  fi
fi
