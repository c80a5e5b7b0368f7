#!/usr/bin/env bash
# End-to-end planning against the real engine, with the peers measured in
# the same run:
#   berth plan          validate + list/inspect every container + plan
#   docker inspect      one `docker inspect` call over all containers (the
#                       least any docker-CLI-based reconciler must do)
#   docker CLI loop     one `docker inspect` per container (a shell loop)
# and the pure planner micro-benchmark (benches/plan.rs).
# Usage: scripts/bench-plan.sh [N containers, default 100] [runs, default 5]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${1:-100}
RUNS=${2:-5}
IMAGE=127.0.0.1:5000/berth-test/service:1
PREFIX=berth-bench

bash scripts/test-env.sh >/dev/null
cargo build --release --locked --quiet
berth=target/release/berth

cleanup() { docker ps -aq --filter "name=^${PREFIX}-" | xargs -r docker rm -f >/dev/null; }
trap cleanup EXIT
cleanup

doc=$(mktemp --suffix=.json)
{
  printf '{"activityId":"bench","payload":{"domains":[{"id":"containers","components":['
  for i in $(seq 1 "$N"); do
    [ "$i" -gt 1 ] && printf ','
    printf '{"id":"%s-%d","version":"1","config":[{"key":"image","value":"%s"},{"key":"env","value":"INDEX=%d"}]}' "$PREFIX" "$i" "$IMAGE" "$i"
  done
  printf ']}]}}'
} >"$doc"

echo "bench: starting $N containers"
for i in $(seq 1 "$N"); do
  docker run -d --name "$PREFIX-$i" -e "INDEX=$i" "$IMAGE" >/dev/null
done

# Median wall time in ms of "$@" over $RUNS runs.
median_ms() {
  local times=()
  for _ in $(seq 1 "$RUNS"); do
    local t0 t1
    t0=$(date +%s%N)
    "$@" >/dev/null
    t1=$(date +%s%N)
    times+=($(( (t1 - t0) / 1000000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p"
}

inspect_loop() { for i in $(seq 1 "$N"); do docker inspect "$PREFIX-$i"; done; }
inspect_all() { docker inspect $(docker ps -aq --filter "name=^${PREFIX}-"); }

keeps=$("$berth" plan --json "$doc" | grep -c '"action": "keep"' || true)
[ "$keeps" -eq "$N" ] || { echo "bench: expected $N keep actions, got $keeps" >&2; exit 1; }

berth_ms=$(median_ms "$berth" plan "$doc")
all_ms=$(median_ms inspect_all)
loop_ms=$(median_ms inspect_loop)

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(docker version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}})')"
echo "containers: $N, runs: $RUNS (median wall time)"
printf 'berth plan (validate+observe+plan): %6d ms\n' "$berth_ms"
printf 'docker inspect, one call:           %6d ms  (berth/peer = %s)\n' "$all_ms" "$(awk "BEGIN {printf \"%.2f\", $berth_ms/$all_ms}")"
printf 'docker inspect, CLI loop:           %6d ms  (berth/peer = %s)\n' "$loop_ms" "$(awk "BEGIN {printf \"%.2f\", $berth_ms/$loop_ms}")"
echo
echo "pure planner (benches/plan.rs):"
cargo bench --locked --quiet --bench plan 2>/dev/null | grep -v '^$'
rm -f "$doc"
