#!/usr/bin/env bash
# Checks the shipped systemd units with `systemd-analyze verify`, pointing
# their ExecStart at the binaries just built (verify insists that the
# executable exists). Usage: .ci/verify-units.sh TARGET_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
bins=$(cd "${1:?target dir}" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|/usr/bin/tallinn-relay|$bins/tallinn-relay|" config/systemd/tallinn-relay.service > "$tmp/tallinn-relay.service"
sed "s|/usr/bin/tallinn |$bins/tallinn |" config/systemd/tallinn-agent.service > "$tmp/tallinn-agent.service"
for unit in "$tmp"/*.service; do
    out=$(systemd-analyze verify "$unit" 2>&1) || { echo "$out"; exit 1; }
    # verify exits 0 on some warnings: any line about our unit is a failure.
    if grep -q "$(basename "$unit")" <<<"$out"; then echo "$out"; exit 1; fi
    echo "$(basename "$unit"): ok"
done
