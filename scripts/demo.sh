#!/usr/bin/env bash
# The demo of the README: the main job on the embedded default database,
# over the fixtures in testdata/. It shows a first run, a rerun that has
# nothing to do, a rechecked rerun that writes nothing, and the seed
# article's late file run with yesterday's files.
set -euo pipefail
cd "$(dirname "$0")/.."
bb=${BALANCEBEAM:-bin/balancebeam}
# The fixtures hold three rejected rows on purpose (see testdata/README.md).
flags=(--max_rejects=3 --progress=0 "$@")

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "day 1: two files (Prism, the default runner)"
"$bb" --input 'testdata/day1/*.csv' "${flags[@]}"

step "day 1 again: the same inputs are the same batch, committed already: nothing to do"
"$bb" --input 'testdata/day1/*.csv' "${flags[@]}"

step "day 1 again with --recheck, on the direct runner: the whole pipeline again, no row written"
"$bb" --input 'testdata/day1/*.csv' --runner=direct --recheck "${flags[@]}"

step "the late file, run with yesterday's files: a new batch; every transaction counted once"
"$bb" --input 'testdata/day1/*.csv,testdata/day2/*.csv' "${flags[@]}"

port=$(cat .balancebeam/pg/balancebeam.port 2>/dev/null || true)
if [ -n "$port" ] && command -v psql >/dev/null 2>&1; then
  step "the accounts table"
  psql -h 127.0.0.1 -p "$port" -U postgres -d balancebeam -P pager=off \
    -c 'SELECT account_id, balance, batch_id, txn_count, last_updated FROM accounts ORDER BY account_id' \
    -c 'SELECT batch_id, status, runs, counts->>'"'"'rows_read'"'"' AS rows_read, counts->>'"'"'rows_upserted'"'"' AS upserted FROM batches ORDER BY batch_id'
fi
printf '\nThe database keeps running for psql; stop it with: %s db stop\n' "$bb"
