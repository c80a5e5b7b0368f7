#!/usr/bin/env bash
# The agent (`berth run`) against the real engine, with the peer measured in
# the same run where one exists:
#   converge   state file written -> all N containers running
#              (peer: docker-compose `up -d` on an equivalent file, timed to return)
#   drift      a container removed by hand -> running again (no peer repairs drift)
#   memory     berth's resident set after converging and idling (VmRSS, VmHWM)
#   idle CPU   berth's CPU time over IDLE seconds with reconcile_interval 10s
# The readiness gate is at its minimum (1ms) so the figures are engine work.
# Usage: scripts/bench-agent.sh [N containers, default 20] [IDLE seconds, default 60]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${1:-20}
IDLE=${2:-60}
IMAGE=127.0.0.1:5000/berth-test/service:1

bash scripts/test-env.sh >/dev/null
command -v docker-compose >/dev/null || { apt-get install -y -qq docker-compose >/dev/null; }
cargo build --release --locked --quiet
berth=$(pwd)/target/release/berth

work=$(mktemp -d)
agent=
cleanup() {
  [[ -n $agent ]] && kill -TERM "$agent" 2>/dev/null && wait "$agent" 2>/dev/null || true
  docker ps -aq --filter "name=^benchagent-" | xargs -r docker rm -f >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

doc() {
  printf '{"activityId":"bench-agent","payload":{"domains":[{"id":"containers","components":['
  for i in $(seq 1 "$N"); do
    [ "$i" -gt 1 ] && printf ','
    printf '{"id":"benchagent-berth-%d","version":"1","config":[{"key":"image","value":"%s"}]}' "$i" "$IMAGE"
  done
  printf ']}]}}'
}
compose() {
  echo "version: '3'"
  echo "services:"
  for i in $(seq 1 "$N"); do
    printf '  s%d:\n    image: %s\n    container_name: benchagent-compose-%d\n' "$i" "$IMAGE" "$i"
  done
}
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
running() { docker ps -q --filter "name=^benchagent-berth-" --filter status=running | wc -l; }
wait_running() { # $1 = count
  for _ in $(seq 1 3000); do [[ $(running) -ge $1 ]] && return 0; sleep 0.02; done
  echo "bench-agent: timed out" >&2; exit 1
}
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

doc >"$work/doc.json"
compose >"$work/docker-compose.yml"

"$berth" run --state-dir "$work/state" --instance bench-agent --files "$work/state.json" \
  --files-poll-interval 100ms --min-ready 1ms --reconcile-interval 10s \
  --log-level warn 2>"$work/agent.log" &
agent=$!
sleep 1

t0=$(now_ms); cp "$work/doc.json" "$work/state.json"; wait_running "$N"; converge=$(( $(now_ms) - t0 ))
t0=$(now_ms); (cd "$work" && docker-compose -p benchagent up -d >/dev/null 2>&1); compose_ms=$(( $(now_ms) - t0 ))

sleep 2
t0=$(now_ms); docker rm -f benchagent-berth-1 >/dev/null; wait_running "$N"; drift=$(( $(now_ms) - t0 ))

sleep 2
ticks0=$(cpu_ticks "$agent"); sleep "$IDLE"; ticks1=$(cpu_ticks "$agent")
hz=$(getconf CLK_TCK)
cpu_ms=$(( (ticks1 - ticks0) * 1000 / hz ))
rss=$(status_kb "$agent" VmRSS); hwm=$(status_kb "$agent" VmHWM)

ratio() { awk "BEGIN {printf \"%.2f\", $1/$2}"; }
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(docker version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}})'), $(docker-compose version --short 2>/dev/null | head -1 | sed 's/^/docker-compose /')"
echo "containers: $N"
printf '| %-48s | %10s | %12s | %8s |\n' measure berth docker-compose ratio
printf '| %-48s | %7s ms | %9s ms | %8s |\n' "state file -> all running (compose: up -d)" "$converge" "$compose_ms" "$(ratio "$converge" "$compose_ms")"
printf '| %-48s | %7s ms | %12s | %8s |\n' "container removed by hand -> running again" "$drift" "no repair" "-"
printf '| %-48s | %6s KiB | %12s | %8s |\n' "resident memory after idling (VmRSS)" "$rss" "-" "-"
printf '| %-48s | %6s KiB | %12s | %8s |\n' "peak resident memory (VmHWM)" "$hwm" "-" "-"
printf '| %-48s | %7s ms | %12s | %8s |\n' "CPU time over ${IDLE}s idle (reconcile every 10s)" "$cpu_ms" "-" "-"
