#!/usr/bin/env bash
# The whole suite with every CPU kept busy by a hog (issue 12: the suite must pass on a loaded machine).
# Usage: scripts/test-under-load.sh [RUNS] -- PYTEST-COMMAND...   (make test-under-load runs it 3 times)
set -uo pipefail
runs=${1:-3}
shift
[ "${1:-}" = "--" ] && shift
hogs=()
cleanup() { for pid in "${hogs[@]}"; do kill "$pid" 2>/dev/null; done; }
trap cleanup EXIT
trap 'echo "== stopped"; exit 130' INT TERM  # Ctrl+C stops every run, not just the current one
for _ in $(seq "$(nproc)"); do
  ( while :; do :; done ) &
  hogs+=("$!")
done
echo "== $(nproc) CPU hogs running (pids ${hogs[*]})"
failed=0
for i in $(seq "$runs"); do
  echo "== run $i of $runs: $*"
  start=$(date +%s)
  if "$@"; then result=passed; else result=FAILED; failed=$((failed + 1)); fi
  echo "== run $i $result in $(( $(date +%s) - start )) s"
done
echo "== $((runs - failed)) of $runs runs passed under load"
[ "$failed" -eq 0 ]
