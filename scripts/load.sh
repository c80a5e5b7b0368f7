#!/usr/bin/env bash
# Load against the real engine and broker, `berth run` as on a device:
#   burst   BURST desired states published over MQTT within one second (QoS 1);
#           the last one wins, the rest are superseded.
#   churn   a CONTAINERS-container state file changed at random every INTERVAL
#           seconds for SECONDS seconds (env values, and now and then the image).
# Sampled every change: berth's resident memory, open file descriptors and
# threads. At the end: the device equals the last document (`berth plan`
# finds nothing to do), no container is left on a temporary name, none leaked.
# Usage: scripts/load.sh [SECONDS, default 600] [CONTAINERS, default 50]
#                        [INTERVAL seconds, default 3] [BURST, default 100]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_TOTAL=${1:-600}
N=${2:-50}
INTERVAL=${3:-3}
BURST=${4:-100}
PREFIX=load-
IMAGES=(127.0.0.1:5000/berth-test/service:1 127.0.0.1:5000/berth-test/service:2)
PORT=${BERTH_TEST_MQTT_PORT:-1883}

bash scripts/test-env.sh >/dev/null
cargo build --release --locked --quiet
berth=${CARGO_TARGET_DIR:-$(pwd)/target}/release/berth

work=$(mktemp -d)
agent=
cleanup() {
  [[ -n $agent ]] && kill -TERM "$agent" 2>/dev/null && wait "$agent" 2>/dev/null || true
  docker ps -aq --filter "name=^${PREFIX}" | xargs -r docker rm -f >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cleanup; work=$(mktemp -d)

doc() { # $1 = activity, $2.. = "image env" per container
  local activity=$1; shift
  printf '{"activityId":"%s","payload":{"domains":[{"id":"containers","components":[' "$activity"
  local i=0
  for spec in "$@"; do
    i=$((i + 1))
    [ "$i" -gt 1 ] && printf ','
    printf '{"id":"%s%d","version":"1","config":[{"key":"image","value":"%s"},{"key":"env","value":"V=%s"}]}' \
      "$PREFIX" "$i" "${spec% *}" "${spec#* }"
  done
  printf ']}]}}'
}
sample() { # rss_kib fds threads
  printf '%s %s %s\n' "$(awk '$1 == "VmRSS:" {print $2}' "/proc/$agent/status")" \
    "$(ls "/proc/$agent/fd" | wc -l)" "$(awk '$1 == "Threads:" {print $2}' "/proc/$agent/status")"
}
in_sync() { # $1 = document file
  "$berth" plan --instance load --detailed-exitcode "$1" >/dev/null 2>&1
}
wait_in_sync() { # $1 = document file, $2 = seconds
  for _ in $(seq 1 $(($2 * 10))); do in_sync "$1" && return 0; sleep 0.1; done
  return 1
}

specs=()
for i in $(seq 1 "$N"); do specs+=("${IMAGES[0]} 0"); done
doc churn-0 "${specs[@]}" >"$work/state.json"

"$berth" run --state-dir "$work/state" --instance load --files "$work/state.json" \
  --files-poll-interval 200ms --min-ready 1ms --reconcile-interval 30s \
  --mqtt-url "mqtt://127.0.0.1:${PORT}" --mqtt-client-id "berth-load-$$" \
  --mqtt-topic-prefix "load-$$/" --log-level warn 2>"$work/agent.log" &
agent=$!
wait_in_sync "$work/state.json" 120 || { echo "load: never converged" >&2; tail "$work/agent.log" >&2; exit 1; }
read -r rss0 fds0 threads0 < <(sample)

# Burst: BURST documents within one second over MQTT; the last one wins.
# One connection, one document per line, in order: the last line is the
# last to arrive.
for b in $(seq 1 "$BURST"); do
  specs=()
  for i in $(seq 1 "$N"); do specs+=("${IMAGES[0]} burst-$b"); done
  doc "burst-$b" "${specs[@]}"
  echo
done >"$work/burst.lines"
burst_start=$(date +%s%N)
mosquitto_pub -p "$PORT" -q 1 -t "load-$$/containersupdate/desiredstate" -l <"$work/burst.lines"
burst_ms=$(( ($(date +%s%N) - burst_start) / 1000000 ))
doc "burst-$BURST" "${specs[@]}" >"$work/burst.json"
burst_converge_start=$(date +%s%N)
wait_in_sync "$work/burst.json" 300 || { echo "load: the burst's last document never applied" >&2; exit 1; }
burst_converge_ms=$(( ($(date +%s%N) - burst_converge_start) / 1000000 ))
# The state file is still the source it was; make it the burst's last word
# too, so the churn starts from a known document.
cp "$work/burst.json" "$work/state.json"

# Churn: a random handful of containers change every INTERVAL seconds.
changes=0 max_rss=$rss0 max_fds=$fds0 max_threads=$threads0
started=$(date +%s)
end=$(( started + SECONDS_TOTAL ))
echo "0 $rss0" >"$work/rss"
current=()
for i in $(seq 1 "$N"); do current+=("${IMAGES[0]} burst-$BURST"); done
while [ "$(date +%s)" -lt "$end" ]; do
  changes=$((changes + 1))
  for _ in $(seq 1 $((RANDOM % 5 + 1))); do
    k=$((RANDOM % N))
    current[$k]="${IMAGES[$((RANDOM % 2))]} c$changes"
  done
  doc "churn-$changes" "${current[@]}" >"$work/next.json"
  mv "$work/next.json" "$work/state.json"
  sleep "$INTERVAL"
  read -r rss fds threads < <(sample)
  echo "$(( $(date +%s) - started )) $rss" >>"$work/rss"
  [ "$rss" -gt "$max_rss" ] && max_rss=$rss
  [ "$fds" -gt "$max_fds" ] && max_fds=$fds
  [ "$threads" -gt "$max_threads" ] && max_threads=$threads
done
cp "$work/state.json" "$work/last.json"
converged=yes
wait_in_sync "$work/last.json" 300 || converged=no
read -r rss1 fds1 threads1 < <(sample)
leftovers=$(docker ps -a --format '{{.Names}}' | grep -c "^${PREFIX}.*\.berth-" || true)
total=$(docker ps -a --format '{{.Names}}' | grep -c "^${PREFIX}" || true)
alive=$(kill -0 "$agent" 2>/dev/null && echo yes || echo no)

echo "machine: $(nproc) cores, $(docker version --format 'engine {{.Server.Version}}')"
echo "burst: $BURST documents over MQTT in ${burst_ms} ms; the last applied ${burst_converge_ms} ms after the burst"
echo "churn: $N containers, $changes changes every ${INTERVAL}s over ${SECONDS_TOTAL}s"
echo "final state equals the last document: $converged; berth still running: $alive"
echo "containers: $total (expected $N), on temporary names: $leftovers"
echo "resident memory KiB: start $rss0, end $rss1, max $max_rss"
# The curve: resident memory at each tenth of the run (the last sample at or
# before it), so growth that levels off shows as flat, and growth that goes
# on as a slope.
printf 'resident memory KiB by elapsed time:'
for tenth in 0 1 2 3 4 5 6 7 8 9 10; do
  at=$(( SECONDS_TOTAL * tenth / 10 ))
  printf ' %ss=%s' "$at" "$(awk -v at="$at" '$1 <= at { v = $2 } END { print v }' "$work/rss")"
done
echo
echo "open file descriptors: start $fds0, end $fds1, max $max_fds"
echo "threads: start $threads0, end $threads1, max $max_threads"
panics=$(grep -c -i "panic" "$work/agent.log" || true)
echo "panics in the log: $panics"
[ "$panics" -eq 0 ] && [ "$converged" = yes ] && [ "$alive" = yes ] && [ "$leftovers" -eq 0 ] && [ "$total" -eq "$N" ]
