#!/usr/bin/env bash
# The fleet campaign (issue 26) against Debian's mosquitto, with hollow
# agents (`berth fleet-sim`, release build) and the rollout controller
# (`berth fleet rollout`):
#   1. N agents connect; memory per agent;
#   2. a rollout to all of them in one wave: share COMPLETED, p50/p99 from
#      publish to COMPLETED, broker CPU during the rollout;
#   3. a broker restart under N agents: time until every agent has
#      republished its current state, and the histogram of when they did;
#   4. a rollout in waves to agents with 5% injected pull failures: it
#      must stop at the first wave and name the failed devices.
# Then the RabbitMQ part (scripts/fleet-rabbitmq.sh) when it exists.
# Writes the tables to docs/FLEET-results.md (or --out FILE).
# Usage: scripts/fleet.sh [--agents N] [--quick] [--out FILE]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=1000
OUT=docs/FLEET-results.md
while [ $# -gt 0 ]; do
  case "$1" in
    --agents) N=$2; shift 2 ;;
    --quick) N=50; OUT=$(mktemp /tmp/berth-fleet-quick.XXXXXX.md); shift ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: $0 [--agents N] [--quick] [--out FILE]" >&2; exit 2 ;;
  esac
done

log() { echo "fleet: $*" >&2; }
command -v mosquitto >/dev/null || apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --locked --quiet
berth=$(pwd)/target/release/berth

work=$(mktemp -d /tmp/berth-fleet.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url=mqtt://127.0.0.1:$port
broker_pid=
sim_pid=
cleanup() {
  [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
  [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
max_queued_messages 100000
persistence false
# As root mosquitto would switch to the mosquitto user, who cannot write here.
user root
log_dest file $work/mosquitto.log
EOF

start_broker() {
  mosquitto -c "$work/mosquitto.conf" &
  broker_pid=$!
  for _ in $(seq 100); do
    (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  log "mosquitto did not start"; cat "$work/mosquitto.log" >&2; exit 1
}

# CPU seconds (user + system) a process has used.
cpu_s() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
now() { date +%s.%N; }

# Waits until N devices have a current state retained on the broker.
wait_states() { # $1 = how many, $2 = seconds
  local deadline=$(( $(date +%s) + $2 )) seen
  while :; do
    # -W ends mosquitto_sub with status 27: not a failure here.
    seen=$( (mosquitto_sub -p "$port" -t 'devices/+/containersupdate/currentstate' \
      --retained-only -W 2 -F '%t' 2>/dev/null || true) | sort -u | wc -l)
    [ "$seen" -ge "$1" ] && return 0
    [ "$(date +%s)" -ge "$deadline" ] && { log "only $seen of $1 current states"; return 1; }
  done
}

start_sim() { # extra args…
  "$berth" fleet-sim --agents "$N" --broker "$url" --prefix devices/ \
    --state-dir "$work/sim-$RANDOM" "$@" 2> "$work/sim.log" &
  sim_pid=$!
}

stop_sim() { kill "$sim_pid"; wait "$sim_pid" 2>/dev/null || true; sim_pid=; }

release() { # $1 = activity, $2 = version
  printf '{"activityId":"%s","payload":{"domains":[{"id":"containers","components":[{"id":"app","version":"%s","config":[{"key":"image","value":"127.0.0.1:5000/fleet/app:%s"}]}]}]}}' \
    "$1" "$2" "$2" > "$work/$1.json"
  echo "$work/$1.json"
}

json() { python3 -c "import json,sys; r=json.load(open('$1')); print($2)"; }

start_broker
log "1. $N hollow agents connecting to mosquitto"
t0=$(now)
start_sim
wait_states "$N" 300
t1=$(now)
connect_s=$(python3 -c "print(round($t1 - $t0, 1))")
sleep 2
sim_rss=$(rss_kib "$sim_pid")
per_agent=$(( sim_rss / N ))

log "2. a rollout to all $N in one wave"
mosquitto_sub -p "$port" -t 'devices/#' -F '%t' > "$work/messages.txt" 2>/dev/null &
counter=$!
sleep 0.5
b0=$(cpu_s "$broker_pid"); s0=$(cpu_s "$sim_pid"); r0=$(now)
code=0
"$berth" fleet rollout "$(release fleet-one-wave 2)" --broker "$url" --prefix devices/ \
  --discover --discover-wait 5s --timeout 5m --json > "$work/one.json" || code=$?
r1=$(now); b1=$(cpu_s "$broker_pid"); s1=$(cpu_s "$sim_pid")
sleep 1; kill "$counter" 2>/dev/null || true
count() { grep -c -- "$1\$" "$work/messages.txt" || true; }
m_desired=$(count '/containersupdate/desiredstate')
m_feedback=$(count '/containersupdate/desiredstatefeedback')
m_current=$(count '/containersupdate/currentstate')
m_get=$(count '/containersupdate/currentstate/get')
completed=$(json "$work/one.json" "r['summary']['ended'].get('COMPLETED', 0)")
p50=$(json "$work/one.json" "r['summary']['p50_ms']")
p99=$(json "$work/one.json" "r['summary']['p99_ms']")
took=$(json "$work/one.json" "r['took_ms']")
wall=$(python3 -c "print($r1 - $r0)")
broker_cpu=$(python3 -c "print(round(100 * ($b1 - $b0) / $wall, 1))")
sim_cpu=$(python3 -c "print(round(100 * ($s1 - $s0) / $wall, 1))")
log "   exit $code, COMPLETED $completed/$N, p50 $p50 ms, p99 $p99 ms"

log "3. a broker restart under $N agents"
kill "$broker_pid"; wait "$broker_pid" 2>/dev/null || true
sleep 3
start_broker
restart_at=$(now)
mosquitto_sub -p "$port" -t 'devices/+/containersupdate/currentstate' -F '@s.@N %t' -W 90 \
  > "$work/restart.txt" 2>/dev/null &
sub=$!
deadline=$(( $(date +%s) + 90 ))
while [ "$(awk '{print $2}' "$work/restart.txt" | sort -u | wc -l)" -lt "$N" ] && [ "$(date +%s)" -lt "$deadline" ]; do
  sleep 1
done
kill "$sub" 2>/dev/null || true
python3 - "$work/restart.txt" "$restart_at" "$N" > "$work/restart.md" <<'EOF'
import sys, collections
path, at, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
first = {}
for line in open(path):
    ts, topic = line.split()
    first.setdefault(topic, float(ts) - at)
times = sorted(first.values())
print(f"| agents back | {len(times)} of {n} |")
print(f"| last back after | {times[-1]:.1f} s |" if times else "| last back after | - |")
print(f"| median | {times[len(times)//2]:.1f} s |" if times else "| median | - |")
print()
print("| seconds after the restart | agents that republished their state |")
print("| --- | ---: |")
buckets = collections.Counter(int(t) for t in times)
for s in range(0, (int(times[-1]) + 1) if times else 0):
    print(f"| {s}–{s+1} | {buckets.get(s, 0)} |")
EOF

log "4. waves with 5% injected failures"
stop_sim
start_sim --failure-rate 0.05 --seed 11
wait_states "$N" 300
code4=0
"$berth" fleet rollout "$(release fleet-failing 3)" --broker "$url" --prefix devices/ \
  --discover --discover-wait 5s --waves 10%,100% --timeout 5m --json > "$work/fail.json" || code4=$?
waves4=$(json "$work/fail.json" "len(r['waves'])")
stopped4=$(json "$work/fail.json" "r['stopped']")
failed4=$(json "$work/fail.json" "len(r['summary']['failed'])")
named4=$(json "$work/fail.json" "', '.join(f['device'] for f in r['summary']['failed'][:5])")
asked4=$(json "$work/fail.json" "r['summary']['devices'] - r['summary']['pending']")
stop_sim

machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), mosquitto $( (mosquitto -h 2>/dev/null || true) | awk 'NR==1 {print $3}')"
{
  echo "# Fleet campaign results"
  echo
  echo "From one run of \`scripts/fleet.sh --agents $N\` on $(date -u +%Y-%m-%d) ($machine), commit $(git rev-parse --short HEAD)."
  echo "Hollow latencies: pull 100 ms, create 50 ms, start 50 ms; readiness gate 1 s."
  echo
  echo "## $N agents on one mosquitto"
  echo
  echo "| what | measured | target |"
  echo "| --- | ---: | --- |"
  echo "| all connected and their current state retained | $connect_s s | — |"
  echo "| memory of the fleet-sim process | $(( sim_rss / 1024 )) MiB, $per_agent KiB per agent | — |"
  echo "| rollout in one wave: COMPLETED | $completed of $N (exit $code) | 100% |"
  echo "| publish → COMPLETED, p50 | $p50 ms | — |"
  echo "| publish → COMPLETED, p99 | $p99 ms | under 30 s |"
  echo "| rollout wall time (with 5 s discovery) | $took ms | — |"
  echo "| broker CPU during the rollout | $broker_cpu% of one core | — |"
  echo "| fleet-sim CPU during the rollout | $sim_cpu% of one core | — |"
  echo
  echo "Messages on the broker during that rollout (as one subscriber to \`devices/#\` saw them):"
  echo
  echo "| topic | messages | per device |"
  echo "| --- | ---: | ---: |"
  for t in desired:$m_desired feedback:$m_feedback current:$m_current get:$m_get; do
    echo "| ${t%%:*} | ${t#*:} | $(python3 -c "print(round(${t#*:} / $N, 1))") |"
  done
  echo
  echo "## Broker restart under $N agents"
  echo
  echo "mosquitto stopped, down 3 s, started again (no persistence, so every current"
  echo "state below is one an agent published after reconnecting)."
  echo
  echo "| what | measured |"
  echo "| --- | ---: |"
  cat "$work/restart.md"
  echo
  echo "## Waves with 5% injected failures"
  echo
  echo "| what | measured | expected |"
  echo "| --- | ---: | --- |"
  echo "| waves run | $waves4 | 1 (stops at the first) |"
  echo "| stopped | $stopped4 (exit $code4) | True (exit 1) |"
  echo "| devices asked | $asked4 of $N | the first wave only |"
  echo "| failed devices named | $failed4 ($named4 …) | about 5% of the wave |"
} > "$OUT"
log "wrote $OUT"
cat "$OUT"
# The same rollout on a 3-node RabbitMQ cluster with a node killed mid-way
# (scripts/fleet-rabbitmq.sh), its summary appended to the results.
if [ -f scripts/fleet-rabbitmq.sh ]; then
  rmq_rc=0
  BERTH=$berth bash scripts/fleet-rabbitmq.sh "$N" > "$work/rmq.log" 2>&1 || rmq_rc=$?
  {
    echo
    echo "## $N agents on a 3-node RabbitMQ cluster, node 3 killed mid-rollout"
    echo
    echo "\`scripts/fleet-rabbitmq.sh $N\` (exit $rmq_rc), its own words:"
    echo
    echo '```'
    grep -E '^(==|all connected|node 3 killed|reconnects|\{|wave)' "$work/rmq.log" || true
    echo '```'
  } >> "$OUT"
  tail -n 20 "$OUT"
fi
