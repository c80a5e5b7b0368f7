#!/usr/bin/env bash
# The fault campaign's long form: every fault of tests/faults.rs, N times
# (default 20), against the real engine and registry, then one table row per
# fault: runs, ended new / old / other, data lost, leftovers, final feedback
# right. The rows are what docs/RELIABILITY.md publishes; CI runs each fault
# once as part of scripts/test.sh.
#
# Usage: scripts/faults.sh [RUNS] [FILTER]
#   RUNS    how many times each fault runs (default 20)
#   FILTER  a test-name filter inside faults:: (default: all of them)
# The serial fault (dockerd restarted mid-activity) restarts the shared
# engine, so it runs on its own after the others, RUNS times; SERIAL=0 leaves
# it out (when something else uses the engine meanwhile).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUNS=${1:-20}
FILTER=${2:-}
LOG=$(mktemp -d)/faults.log
RESULTS=$(dirname "$LOG")/results
export BERTH_FAULT_RESULTS=$RESULTS

bash scripts/test-env.sh >/dev/null
cargo test --locked --features test-hooks --test integration --no-run --quiet

started=$(date +%s)
for i in $(seq 1 "$RUNS"); do
  printf 'faults: run %d of %d\n' "$i" "$RUNS" >&2
  cargo test --locked --features test-hooks --test integration --quiet "faults::${FILTER}" \
    -- --nocapture --test-threads 4 2>&1 | tee -a "$LOG" | grep -E '^(test result|.*FAILED)' >&2 || true
  if [ -z "$FILTER" ] && [ "${SERIAL:-1}" != 0 ]; then
    cargo test --locked --features test-hooks --test integration --quiet faults::serial_ \
      -- --ignored --nocapture --test-threads 1 2>&1 | tee -a "$LOG" | grep -E '^(test result|.*FAILED)' >&2 || true
  fi
done
elapsed=$(( $(date +%s) - started ))

echo
echo "Fault campaign: ${RUNS} runs of each fault, $(date -u +%Y-%m-%d), ${elapsed}s, $(nproc) cores, $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?') engine"
echo
echo "| fault | runs | ended new | ended old | other | data lost | leftovers | feedback right |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
touch "$RESULTS"
awk '
  {
    for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    k = f["fault"]; runs[k]++
    if (f["ended"] == "new") nw[k]++
    else if (f["ended"] == "old") od[k]++
    else other[k]++
    if (f["data"] != "ok") lost[k]++
    left[k] += f["leftovers"]
    if (f["feedback"] == "right") right[k]++
  }
  END {
    for (k in runs)
      printf "| %s | %d | %d | %d | %d | %d | %d | %d |\n", k, runs[k], nw[k], od[k], other[k], lost[k], left[k], right[k]
  }' "$RESULTS" | sort
failed=$(grep -c -E '^test .* FAILED$' "$LOG" || true)
echo
echo "failed test runs: ${failed} (log: ${LOG})"
[ "$failed" -eq 0 ]
