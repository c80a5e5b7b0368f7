#!/usr/bin/env bash
# berth against docker-compose, a docker CLI loop and the engine floor, every
# scenario of issue 25 in one run, peers alternating, and docs/BENCHMARKS.md
# written from the results (machine, one table per scenario, notes).
#
#   1 cold deploy            N = 10, 20, 50 (and berth's --parallel swept)
#   2 no-op re-apply         N = 10, 20, 50, 200, and the agent's idle reconcile
#   3 update k of N          k = 1, 10; N = 20, 50; env change and image tag change
#   4 downtime               a TCP client probing every 5 ms; stop-first, start-first
#   5 agent reaction         file -> first engine call, MQTT -> IDENTIFYING, repair
#   6 footprint              berth apply N=50 (peak RSS, CPU), berth run idle
#   7 plan for 1,000         cargo bench --bench plan
#
# Every client (berth, docker-compose, the docker CLI, the floor) talks to the
# engine through the same counting proxy (benches/harness/proxy.rs), so each
# pays the same small toll and every run's engine calls are counted by method
# and path. berth runs with --min-ready 1ms: the figures compare engine work,
# not the readiness wait berth adds by default (2 s per wave).
#
# Usage: scripts/bench.sh [--quick] [--reps N] [--idle SECONDS] [--out FILE]
#   --quick   N = 10 everywhere, one repetition, 10 s idle, results to a
#             temporary file (never docs/); asserts only that every scenario
#             ran and produced numbers, never a time. CI runs this.
#   --reps    repetitions per measurement (default 5)
#   --idle    how long `berth run` idles for its footprint (default 600)
#   --out     where the report goes (default docs/BENCHMARKS.md)
#   --only    comma-separated scenarios to run (cold,noop,update,downtime,
#             agent,footprint,plan), when working on one; a partial report
# Supersedes scripts/bench-apply.sh, bench-agent.sh and bench-plan.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

QUICK=0
REPS=5
IDLE=600
OUT=docs/BENCHMARKS.md
ONLY=
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) QUICK=1 ;;
    --reps) REPS=$2; shift ;;
    --idle) IDLE=$2; shift ;;
    --out) OUT=$2; shift ;;
    --only) ONLY=$2; shift ;;
    -h | --help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
COLD_SIZES=(10 20 50)
NOOP_SIZES=(10 20 50 200)
UPDATE_SIZES=(20 50)
UPDATE_COUNTS=(1 10)
SWEEP_N=20
SWEEP_PARALLEL=(1 2 4 8)
AGENT_N=20
FOOT_N=50
if [[ $QUICK -eq 1 ]]; then
  REPS=1 IDLE=10
  COLD_SIZES=(10) NOOP_SIZES=(10) UPDATE_SIZES=(10) SWEEP_N=10 SWEEP_PARALLEL=(1 4)
  AGENT_N=10 FOOT_N=10
  [[ $OUT == docs/BENCHMARKS.md ]] && OUT=$(mktemp --suffix=-BENCHMARKS.md)
fi
PAR=4 # berth's --parallel default (src/cli/activity.rs, src/config.rs)

REG=127.0.0.1:5000/berth-test
IMG1=$REG/service:1
IMG2=$REG/service:2
HEALTHY1=$REG/healthy:1
HEALTHY2=$REG/healthy:2
export BERTH_INSTANCE=bench-$$

log() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: ERROR: %s\n' "$*" >&2; exit 1; }

bash scripts/test-env.sh >/dev/null
if ! command -v docker-compose >/dev/null; then
  log "installing Debian's docker-compose"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
fi
command -v /usr/bin/time >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null

TGT=${CARGO_TARGET_DIR:-$ROOT/target}
log "building berth and the harness (release)"
cargo build --release --locked --quiet --bin berth
HARNESS=$(cargo bench --locked --bench harness --no-run --message-format=json 2>/dev/null |
  jq -r 'select(.reason == "compiler-artifact" and .target.name == "harness" and .executable != null) | .executable' | tail -n 1)
BERTH=$TGT/release/berth
# The full run also measures the idle agent built for devices (smaller, and
# slower to build: not in --quick).
DEVICE_BERTH=
DEVICE_IDLE=120
if [[ $QUICK -eq 0 ]]; then
  log "building berth with --profile device"
  cargo build --profile device --locked --quiet --bin berth
  DEVICE_BERTH=$TGT/device/berth
fi
[[ -x $BERTH && -x $HARNESS ]] || die "no berth ($BERTH) or harness ($HARNESS) binary"
ENGINE_SOCK=/var/run/docker.sock

WORK=$(mktemp -d /tmp/bench.XXXXXX)
RESULTS=$WORK/results.tsv
PLOG=$WORK/proxy.log
: >"$RESULTS"
: >"$PLOG"
PIDS=()
BROKER_PID=
AGENT_PID=
PROXY_PID=

cleanup_containers() {
  docker ps -aq --filter "name=^bench-" | xargs -r docker rm -f >/dev/null 2>&1 || true
}
cleanup() {
  local rc=$?
  [[ -n $AGENT_PID ]] && { kill -TERM "$AGENT_PID" 2>/dev/null; wait "$AGENT_PID" 2>/dev/null; } || true
  [[ -n $BROKER_PID ]] && { kill -TERM "$BROKER_PID" 2>/dev/null; wait "$BROKER_PID" 2>/dev/null; } || true
  for d in "$WORK"/compose-*; do
    [[ -d $d ]] && (cd "$d" && DOCKER_HOST=unix://$ENGINE_SOCK docker-compose -p "bench${d##*-}" down -t 1 >/dev/null 2>&1) || true
  done
  cleanup_containers
  docker network rm bench-net >/dev/null 2>&1 || true
  [[ -n $PROXY_PID ]] && { kill -TERM "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null; } || true
  if [[ $rc -ne 0 ]]; then
    log "failed; the last output of the failing step:"
    tail -n 30 "$WORK/step.log" >&2 2>/dev/null || true
  fi
  [[ -n ${BENCH_KEEP:-} ]] && log "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
cleanup_containers

# --- the counting proxy: every client goes through it ------------------------
"$HARNESS" proxy --listen "$WORK/engine.sock" --upstream "$ENGINE_SOCK" --log "$PLOG" &
PROXY_PID=$!
for _ in $(seq 1 100); do [[ -S $WORK/engine.sock ]] && break; sleep 0.05; done
[[ -S $WORK/engine.sock ]] || die "the counting proxy did not come up"
export DOCKER_HOST=unix://$WORK/engine.sock
export COMPOSE_HTTP_TIMEOUT=300

# --- results ------------------------------------------------------------------
# One line per figure: scenario, case, peer, repetition, metric, value.
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; }
now() { echo "$EPOCHREALTIME"; }
ms_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", (b - a) * 1000 }'; }
proxy_lines() { wc -l <"$PLOG"; }

# Engine calls since proxy line $1, as "count METHOD path" lines.
calls_since() { tail -n +"$(($1 + 1))" "$PLOG" | awk '{ print $2, $3 }' | sort | uniq -c | sort -k1,1nr -k2; }

# measure SCENARIO CASE PEER REP -- command...: wall time and engine calls.
measure() {
  local s=$1 c=$2 p=$3 r=$4 before t0 took calls
  shift 5
  before=$(proxy_lines)
  t0=$(now)
  "$@" >"$WORK/step.log" 2>&1 || die "$s / $c / $p: '$*' failed"
  took=$(ms_since "$t0")
  sleep 0.02
  calls=$(calls_since "$before" | awk '{ n += $1 } END { print n + 0 }')
  record "$s" "$c" "$p" "$r" wall_ms "$took"
  record "$s" "$c" "$p" "$r" calls "$calls"
  # the last repetition's: the first also pays for what the peers did before it
  [[ $r -eq $REPS ]] && calls_since "$before" >"$WORK/calls.$s.$c.$p"
  return 0
}

# Peers in a different order every repetition: each takes every position.
rotated() { # REP peer...
  local r=$1 n i
  shift
  n=$#
  local a=("$@")
  for ((i = 0; i < n; i++)); do printf '%s\n' "${a[$(((i + r) % n))]}"; done
}

# --- the desired state, as each peer spells it -------------------------------
# Per container i: MODE[i] and IMAGE[i]; every peer is given the same.
declare -a MODE IMAGE
reset_state() { # N
  MODE=() IMAGE=()
  local i
  for ((i = 1; i <= $1; i++)); do MODE[i]=base IMAGE[i]=$IMG1; done
}
berth_doc() { # N PREFIX FILE [extra config JSON per component]
  local n=$1 prefix=$2 i sep=
  {
    printf '{"activityId":"bench-%s","payload":{"domains":[{"id":"containers","components":[' "$RANDOM$RANDOM"
    for ((i = 1; i <= n; i++)); do
      printf '%s{"id":"%s-%d","version":"1","config":[{"key":"image","value":"%s"},{"key":"env","value":"MODE=%s"}%s]}' \
        "$sep" "$prefix" "$i" "${IMAGE[i]}" "${MODE[i]}" "${4:-}"
      sep=,
    done
    printf ']}]}}'
  } >"$3"
}
compose_file() { # N PREFIX DIR
  local n=$1 prefix=$2 i
  mkdir -p "$3"
  {
    echo "version: '3'"
    echo "services:"
    for ((i = 1; i <= n; i++)); do
      printf '  s%d:\n    image: %s\n    container_name: %s-%d\n    network_mode: bridge\n    environment:\n      MODE: "%s"\n' \
        "$i" "${IMAGE[i]}" "$prefix" "$i" "${MODE[i]}"
    done
  } >"$3/docker-compose.yml"
}
floor_specs() { # FROM TO PREFIX FILE
  local i
  for ((i = $1; i <= $2; i++)); do printf '%s-%d %s MODE=%s\n' "$3" "$i" "${IMAGE[i]}" "${MODE[i]}"; done >"$4"
}

berth_apply() { "$BERTH" apply --state-dir "$WORK/state" --min-ready 1ms "$@"; }
compose_up() { (cd "$1" && docker-compose -p "bench${1##*-}" up -d --remove-orphans); }
cli_run() { # FROM TO PREFIX
  local i
  for ((i = $1; i <= $2; i++)); do docker run -d --name "$3-$i" -e "MODE=${MODE[i]}" "${IMAGE[i]}"; done
}
cli_replace() { # FROM TO PREFIX
  local i
  for ((i = $1; i <= $2; i++)); do
    docker rm -f "$3-$i"
    docker run -d --name "$3-$i" -e "MODE=${MODE[i]}" "${IMAGE[i]}"
  done
}
cli_inspect() { # N PREFIX: what a CLI loop must do to know nothing changed
  local i
  for ((i = 1; i <= $1; i++)); do docker inspect "$2-$i"; done
}
floor() { "$HARNESS" floor "$@"; }

# Run one peer's deploy / update / no-op for scenario-wide names.
#   berth: bench-b-i  compose: bench-k-i  cli: bench-c-i  floor: bench-f-i  floor-par: bench-p-i
do_peer() { # ACTION PEER N [K]
  local action=$1 peer=$2 n=$3 k=${4:-0}
  case $peer:$action in
    berth:deploy | berth:update | berth:noop)
      berth_doc "$n" bench-b "$WORK/doc.json"; berth_apply "$WORK/doc.json" ;;
    compose:deploy | compose:update | compose:noop)
      compose_file "$n" bench-k "$WORK/compose-k"; compose_up "$WORK/compose-k" ;;
    cli:deploy) cli_run 1 "$n" bench-c ;;
    cli:update) cli_replace 1 "$k" bench-c ;;
    cli:noop) cli_inspect "$n" bench-c ;;
    floor:deploy) floor_specs 1 "$n" bench-f "$WORK/f.specs"; floor cold --specs "$WORK/f.specs" ;;
    floor:update) floor_specs 1 "$k" bench-f "$WORK/f.specs"; floor update --specs "$WORK/f.specs" ;;
    floor:noop) floor noop --specs /dev/null ;;
    floorpar:deploy) floor_specs 1 "$n" bench-p "$WORK/p.specs"; floor cold --parallel "$PAR" --specs "$WORK/p.specs" ;;
    floorpar:update) floor_specs 1 "$k" bench-p "$WORK/p.specs"; floor update --parallel "$PAR" --specs "$WORK/p.specs" ;;
    *) die "no $action for $peer" ;;
  esac
}
remove_peer() { # PEER N
  case $1 in
    compose) (cd "$WORK/compose-k" && docker-compose -p benchk down -t 1) ;;
    *)
      local prefix
      case $1 in berth) prefix=bench-b ;; cli) prefix=bench-c ;; floor) prefix=bench-f ;; floorpar) prefix=bench-p ;; esac
      docker ps -aq --filter "name=^$prefix-" | xargs -r docker rm -f
      ;;
  esac
}

PEERS=(berth compose cli floor floorpar)

# --- 1. cold deploy -------------------------------------------------------------
scenario_cold() {
  local n r peer
  for n in "${COLD_SIZES[@]}"; do
    log "1 cold deploy, N=$n"
    reset_state "$n"
    for ((r = 1; r <= REPS; r++)); do
      for peer in $(rotated "$r" "${PEERS[@]}"); do
        remove_peer "$peer" "$n" >/dev/null 2>&1 || true
        measure cold "N=$n" "$peer" "$r" -- do_peer deploy "$peer" "$n"
      done
    done
    for peer in "${PEERS[@]}"; do remove_peer "$peer" "$n" >/dev/null 2>&1 || true; done
  done
  log "1b berth --parallel sweep, N=$SWEEP_N"
  reset_state "$SWEEP_N"
  local k
  for ((r = 1; r <= REPS; r++)); do
    for k in "${SWEEP_PARALLEL[@]}"; do
      remove_peer berth >/dev/null 2>&1 || true
      berth_doc "$SWEEP_N" bench-b "$WORK/doc.json"
      measure sweep "parallel=$k" berth "$r" -- berth_apply --parallel "$k" "$WORK/doc.json"
      remove_peer floorpar >/dev/null 2>&1 || true
      floor_specs 1 "$SWEEP_N" bench-p "$WORK/p.specs"
      measure sweep "parallel=$k" floorpar "$r" -- floor cold --parallel "$k" --specs "$WORK/p.specs"
    done
  done
  remove_peer berth >/dev/null 2>&1 || true
  remove_peer floorpar >/dev/null 2>&1 || true
}

# --- 2. no-op -------------------------------------------------------------------
scenario_noop() {
  local n r peer
  for n in "${NOOP_SIZES[@]}"; do
    log "2 no-op, N=$n"
    reset_state "$n"
    for peer in berth compose cli; do do_peer deploy "$peer" "$n" >"$WORK/step.log" 2>&1 || die "deploying $peer N=$n"; done
    for ((r = 1; r <= REPS; r++)); do
      for peer in $(rotated "$r" berth compose cli floor); do
        measure noop "N=$n" "$peer" "$r" -- do_peer noop "$peer" "$n"
      done
    done
    for peer in berth compose cli; do remove_peer "$peer" "$n" >/dev/null 2>&1 || true; done
  done
}

# --- 3. update k of N -----------------------------------------------------------
STEP=0
scenario_update() {
  local n k kind r peer i
  for n in "${UPDATE_SIZES[@]}"; do
    reset_state "$n"
    for peer in "${PEERS[@]}"; do do_peer deploy "$peer" "$n" >"$WORK/step.log" 2>&1 || die "deploying $peer N=$n"; done
    for kind in env image; do
      for k in $(printf '%s\n' "${UPDATE_COUNTS[@]}" "$n" | sort -nu); do
        ((k <= n)) || continue
        log "3 update $k of $n ($kind)"
        for ((r = 1; r <= REPS; r++)); do
          STEP=$((STEP + 1))
          for ((i = 1; i <= k; i++)); do
            if [[ $kind == env ]]; then MODE[i]=v$STEP
            elif [[ ${IMAGE[i]} == "$IMG1" ]]; then IMAGE[i]=$IMG2
            else IMAGE[i]=$IMG1
            fi
          done
          for peer in $(rotated "$r" "${PEERS[@]}"); do
            measure update "$kind $k of $n" "$peer" "$r" -- do_peer update "$peer" "$n" "$k"
          done
        done
        # Back to one image for all, untimed, so the next k changes exactly k.
        if [[ $kind == image ]]; then
          local back=0
          for ((i = 1; i <= n; i++)); do [[ ${IMAGE[i]} == "$IMG1" ]] || { IMAGE[i]=$IMG1; back=$i; }; done
          if ((back > 0)); then
            for peer in "${PEERS[@]}"; do do_peer update "$peer" "$n" "$back" >"$WORK/step.log" 2>&1 || die "resetting $peer"; done
          fi
        fi
      done
    done
    for peer in "${PEERS[@]}"; do remove_peer "$peer" "$n" >/dev/null 2>&1 || true; done
  done
}

# --- 4. downtime ----------------------------------------------------------------
# The service listens on 8080 (busybox nc, a fresh connection closed at once)
# in the healthy image (health check passes within ~1 s), on a user network.
# The client is the harness's probe in a container on that network, resolving
# the service's name through the engine's DNS every 5 ms, as a client that
# follows a service name does (a host port cannot be used: start-first needs
# old and new to bind no common host port).
LISTEN="trap 'exit 0' TERM; nc -ll -p 8080 -e true & wait"
probe_start() { # NAME TARGET
  docker run -d --name "$1" --network bench-net --entrypoint /probe \
    -v "$HARNESS:/probe:ro" -v /lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu:ro -v /lib64:/lib64:ro \
    "$IMG1" probe --target "$2:8080" --interval 5ms --connect-timeout 100ms >/dev/null
}
probe_stop() { # NAME -> summary line
  docker stop -t 10 "$1" >/dev/null
  docker logs "$1" 2>&1 | grep '^probes=' | tail -n 1
  docker rm -f "$1" >/dev/null
}
dt_berth_doc() { # NAME IMAGE STRATEGY FILE
  printf '{"activityId":"bench-dt-%s","payload":{"domains":[{"id":"containers","components":[{"id":"%s","version":"1","config":[{"key":"image","value":"%s"},{"key":"network","value":"bench-net"},{"key":"updateStrategy","value":"%s"},{"key":"cmd","value":"/bin/sh"},{"key":"cmd","value":"-c"},{"key":"cmd","value":"%s"}]}]}]}}' \
    "$RANDOM" "$1" "$2" "$3" "$LISTEN" >"$4"
}
dt_compose() { # NAME IMAGE DIR
  mkdir -p "$3"
  cat >"$3/docker-compose.yml" <<EOF
version: '3'
services:
  dt:
    image: $2
    container_name: $1
    command: ["/bin/sh", "-c", "$LISTEN"]
networks:
  default:
    external:
      name: bench-net
EOF
}
dt_update() { # PEER IMAGE: one update of that peer's service
  case $1 in
    # Each with an instance and state directory of its own: one document
    # does not remove the other's container.
    berth-stop-first) dt_berth_doc bench-dt-bs "$2" stop-first "$WORK/dt.json"
      BERTH_INSTANCE=$BERTH_INSTANCE-bs "$BERTH" apply --state-dir "$WORK/state-bs" --min-ready 1ms "$WORK/dt.json" ;;
    berth-start-first) dt_berth_doc bench-dt-bf "$2" start-first "$WORK/dt.json"
      BERTH_INSTANCE=$BERTH_INSTANCE-bf "$BERTH" apply --state-dir "$WORK/state-bf" --min-ready 1ms "$WORK/dt.json" ;;
    compose) dt_compose bench-dt-k "$2" "$WORK/compose-dt"; (cd "$WORK/compose-dt" && docker-compose -p benchdt up -d) ;;
    cli) docker rm -f bench-dt-c && docker run -d --name bench-dt-c --network bench-net "$2" /bin/sh -c "$LISTEN" ;;
    floor) printf 'bench-dt-f %s\n' "$2" >"$WORK/dt.specs"
      floor update --network bench-net --stop-timeout 10 --specs "$WORK/dt.specs" --cmd /bin/sh --cmd=-c --cmd "$LISTEN" ;;
  esac
}
dt_target() {
  case $1 in berth-stop-first) echo bench-dt-bs ;; berth-start-first) echo bench-dt-bf ;;
    compose) echo bench-dt-k ;; cli) echo bench-dt-c ;; floor) echo bench-dt-f ;; esac
}
scenario_downtime() {
  log "4 downtime"
  docker network create bench-net >/dev/null 2>&1 || true
  local peer r img=$HEALTHY1 summary v
  local dt_peers=(berth-stop-first berth-start-first compose cli floor)
  # First deployment, untimed.
  for peer in "${dt_peers[@]}"; do
    case $peer in
      cli) docker run -d --name bench-dt-c --network bench-net "$img" /bin/sh -c "$LISTEN" ;;
      floor) printf 'bench-dt-f %s\n' "$img" >"$WORK/dt.specs"
        floor cold --network bench-net --specs "$WORK/dt.specs" --cmd /bin/sh --cmd=-c --cmd "$LISTEN" ;;
      *) dt_update "$peer" "$img" ;;
    esac >"$WORK/step.log" 2>&1 || die "deploying $peer for the downtime probe"
  done
  for ((r = 1; r <= REPS; r++)); do
    [[ $img == "$HEALTHY1" ]] && img=$HEALTHY2 || img=$HEALTHY1
    for peer in $(rotated "$r" "${dt_peers[@]}"); do
      probe_start bench-probe "$(dt_target "$peer")"
      sleep 1
      measure downtime "$peer" "$peer" "$r" -- dt_update "$peer" "$img"
      if [[ $peer == floor ]]; then
        record downtime "$peer" "$peer" "$r" stop_ms "$(awk -F= '/stop_ms/ { print $2 }' "$WORK/step.log")"
        record downtime "$peer" "$peer" "$r" start_ms "$(awk -F= '/start_ms/ { print $2 }' "$WORK/step.log")"
      fi
      sleep 0.5
      summary=$(probe_stop bench-probe)
      [[ -n $summary ]] || die "the probe of $peer printed nothing"
      for v in $summary; do record downtime "$peer" "$peer" "$r" "${v%%=*}" "${v#*=}"; done
    done
  done
  (cd "$WORK/compose-dt" && docker-compose -p benchdt down -t 1 >/dev/null 2>&1) || true
  docker ps -aq --filter "name=^bench-dt-" | xargs -r docker rm -f >/dev/null
  docker network rm bench-net >/dev/null 2>&1 || true
}

# --- 5 and 6. the agent ---------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_broker() {
  MQTT_PORT=$(free_port)
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n' "$MQTT_PORT" >"$WORK/mosquitto.conf"
  /usr/sbin/mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$MQTT_PORT") 2>/dev/null && return 0; sleep 0.05; done
  die "mosquitto did not listen on $MQTT_PORT"
}
stop_pid() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
start_agent() { # LOG extra flags...
  local logf=$1
  shift
  BERTH_INSTANCE=$BERTH_INSTANCE-agent "$BERTH" --log-format json --log-level "${AGENT_LOG_LEVEL:-info}" run --state-dir "$WORK/agent-state" \
    --files "$WORK/agent.json" --mqtt-url "mqtt://127.0.0.1:$MQTT_PORT" --min-ready 1ms "$@" 2>"$logf" &
  AGENT_PID=$!
}
running_count() { docker ps -q --filter "name=^$1-" --filter status=running | wc -l; }
wait_running() { # PREFIX N
  local i
  for ((i = 0; i < 6000; i++)); do [[ $(running_count "$1") -ge $2 ]] && return 0; sleep 0.05; done
  die "$2 containers $1-* not running within 300 s"
}
# Waits until the agent's log has said $2 (a JSON fragment) $1 times.
wait_log() { # COUNT FRAGMENT FILE
  local i
  for ((i = 0; i < 1200; i++)); do
    [[ $(grep -c -- "$2" "$3" || true) -ge $1 ]] && return 0
    sleep 0.05
  done
  die "the agent never logged $2 $1 times (log $3)"
}
# An atomic rewrite of the agent's state file with a fresh activityId.
write_state() { # N
  berth_doc "$1" bench-a "$WORK/agent.json.tmp"
  mv "$WORK/agent.json.tmp" "$WORK/agent.json"
}

scenario_agent() {
  local n=$AGENT_N r t0 before line first ms
  log "5 agent reaction, N=$n"
  start_broker
  reset_state "$n"
  write_state "$n"
  start_agent "$WORK/agent.log" --reconcile-interval 10m
  wait_running bench-a "$n"
  sleep 3
  for ((r = 1; r <= REPS; r++)); do
    # state file written -> first engine call (the proxy's timestamp)
    before=$(proxy_lines)
    berth_doc "$n" bench-a "$WORK/agent.json.tmp"
    t0=$(date +%s%N)
    mv "$WORK/agent.json.tmp" "$WORK/agent.json"
    first=
    for _ in $(seq 1 2000); do
      first=$(tail -n +"$((before + 1))" "$PLOG" | awk -v t="$t0" '$1 > t { print $1; exit }')
      [[ -n $first ]] && break
      sleep 0.005
    done
    [[ -n $first ]] || die "no engine call within 10 s of writing the state file"
    record agent "file -> first engine call" berth "$r" ms "$(awk -v a="$t0" -v b="$first" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')"
    sleep 3
    # MQTT message -> IDENTIFYING feedback
    berth_doc "$n" bench-a "$WORK/mqtt.json"
    ms=$(DOCKER_HOST=unix://$ENGINE_SOCK "$HARNESS" mqtt-reaction --port "$MQTT_PORT" --doc "$WORK/mqtt.json") ||
      die "no IDENTIFYING feedback over MQTT"
    record agent "MQTT -> IDENTIFYING" berth "$r" ms "$ms"
    sleep 1
    # container removed by hand / killed -> running again
    ms=$(DOCKER_HOST=unix://$ENGINE_SOCK "$HARNESS" repair remove --name bench-a-1) || die "bench-a-1 not repaired after its removal"
    record agent "container removed -> running again" berth "$r" ms "$ms"
    sleep 2
    ms=$(DOCKER_HOST=unix://$ENGINE_SOCK "$HARNESS" repair kill --name bench-a-2) || die "bench-a-2 not repaired after SIGKILL"
    record agent "container killed -> running again" berth "$r" ms "$ms"
    sleep 2
  done

  log "6 berth run idle for ${IDLE}s (file source + MQTT, default intervals)"
  stop_pid "$AGENT_PID"
  AGENT_PID=
  start_agent "$WORK/agent-idle.log"
  sleep 5
  local hz ticks0 ticks1 t_idle pid=$AGENT_PID
  hz=$(getconf CLK_TCK)
  ticks0=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
  t0=$(now)
  sleep "$IDLE"
  ticks1=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
  t_idle=$(ms_since "$t0")
  record footprint "berth run idle" berth 1 rss_kib "$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$pid/status")"
  record footprint "berth run idle" berth 1 hwm_kib "$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$pid/status")"
  record footprint "berth run idle" berth 1 anon_kib "$(awk '$1 == "RssAnon:" { print $2 }' "/proc/$pid/status")"
  record footprint "berth run idle" berth 1 cpu_pct "$(awk -v t="$((ticks1 - ticks0))" -v hz="$hz" -v ms="$t_idle" 'BEGIN { printf "%.3f", t / hz * 1000 / ms * 100 }')"
  record footprint "berth run idle" berth 1 cpu_ms "$(((ticks1 - ticks0) * 1000 / hz))"
  record footprint "berth run idle" berth 1 idle_s "$(awk -v ms="$t_idle" 'BEGIN { printf "%.0f", ms / 1000 }')"
  stop_pid "$AGENT_PID"
  AGENT_PID=
  if [[ -n $DEVICE_BERTH ]]; then
    # The same idle agent built with the device profile (Cargo.toml), for a
    # minute: its resident set settles within seconds.
    log "6 berth run idle for ${DEVICE_IDLE}s, built with --profile device"
    BERTH=$DEVICE_BERTH start_agent "$WORK/agent-idle-device.log"
    sleep 10
    pid=$AGENT_PID
    ticks0=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    t0=$(now)
    sleep "$DEVICE_IDLE"
    ticks1=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    t_idle=$(ms_since "$t0")
    record footprint "berth run idle, device profile" berth 1 rss_kib "$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$pid/status")"
    record footprint "berth run idle, device profile" berth 1 anon_kib "$(awk '$1 == "RssAnon:" { print $2 }' "/proc/$pid/status")"
    record footprint "berth run idle, device profile" berth 1 cpu_pct "$(awk -v t="$((ticks1 - ticks0))" -v hz="$hz" -v ms="$t_idle" 'BEGIN { printf "%.3f", t / hz * 1000 / ms * 100 }')"
    stop_pid "$AGENT_PID"
    AGENT_PID=
  fi

  log "2b the agent's idle reconcile, N=$n"
  AGENT_LOG_LEVEL=berth=debug start_agent "$WORK/agent-reconcile.log" --reconcile-interval 1s
  wait_log "$((REPS + 2))" '"nothing drifted"' "$WORK/agent-reconcile.log"
  stop_pid "$AGENT_PID"
  AGENT_PID=
  # Each timer reconcile: from "reconciling" to "nothing drifted", and the
  # engine calls the proxy saw in between.
  jq -r 'select(.fields.message == "reconciling" or .fields.message == "nothing drifted") | [.timestamp, .fields.message] | @tsv' \
    "$WORK/agent-reconcile.log" >"$WORK/reconciles.tsv" 2>/dev/null || true
  local count=0 start_ts= ts msg s_ns e_ns
  while IFS=$'\t' read -r ts msg; do
    if [[ $msg == reconciling ]]; then start_ts=$ts; continue; fi
    [[ -n $start_ts ]] || continue
    count=$((count + 1))
    s_ns=$(date -d "$start_ts" +%s%N)
    e_ns=$(date -d "$ts" +%s%N)
    # the first one after start-up may overlap the start-up's own work
    if ((count > 1 && count <= REPS + 1)); then
      record noop "agent idle reconcile, N=$n" berth "$((count - 1))" wall_ms "$(awk -v a="$s_ns" -v b="$e_ns" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')"
      record noop "agent idle reconcile, N=$n" berth "$((count - 1))" calls \
        "$(awk -v a="$s_ns" -v b="$e_ns" '$1 >= a && $1 <= b' "$PLOG" | wc -l)"
      ((count == 2)) && awk -v a="$s_ns" -v b="$e_ns" '$1 >= a && $1 <= b { print $2, $3 }' "$PLOG" | sort | uniq -c | sort -k1,1nr -k2 \
        >"$WORK/calls.noop.agent idle reconcile, N=$n.berth"
    fi
    start_ts=
  done <"$WORK/reconciles.tsv"
  stop_pid "$BROKER_PID"
  BROKER_PID=
  docker ps -aq --filter "name=^bench-a-" | xargs -r docker rm -f >/dev/null
}

# --- 6. footprint of berth apply ----------------------------------------------
timed() { # SCENARIO CASE PEER REP -- command: peak RSS and CPU time via GNU time
  local s=$1 c=$2 p=$3 r=$4
  shift 5
  /usr/bin/time -f 'TIME %M %U %S' -o "$WORK/time.out" "$@" >"$WORK/step.log" 2>&1 || die "$s / $c / $p failed"
  read -r _ rss user sys <"$WORK/time.out"
  record "$s" "$c" "$p" "$r" rss_kib "$rss"
  record "$s" "$c" "$p" "$r" cpu_ms "$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.0f", (u + s) * 1000 }')"
}
scenario_footprint() {
  local n=$FOOT_N r
  log "6 footprint of berth apply and docker-compose, N=$n"
  reset_state "$n"
  for ((r = 1; r <= REPS; r++)); do
    remove_peer berth >/dev/null 2>&1 || true
    berth_doc "$n" bench-b "$WORK/doc.json"
    timed footprint "cold deploy, N=$n" berth "$r" -- "$BERTH" apply --state-dir "$WORK/state" --min-ready 1ms "$WORK/doc.json"
    timed footprint "no-op, N=$n" berth "$r" -- "$BERTH" apply --state-dir "$WORK/state" --min-ready 1ms "$WORK/doc.json"
    remove_peer compose >/dev/null 2>&1 || true
    compose_file "$n" bench-k "$WORK/compose-k"
    (cd "$WORK/compose-k" && timed footprint "cold deploy, N=$n" compose "$r" -- docker-compose -p benchk up -d)
    (cd "$WORK/compose-k" && timed footprint "no-op, N=$n" compose "$r" -- docker-compose -p benchk up -d)
  done
  remove_peer berth >/dev/null 2>&1 || true
  remove_peer compose >/dev/null 2>&1 || true
}

# --- 7. the planner -------------------------------------------------------------
scenario_plan() {
  log "7 plan for 1,000 containers (cargo bench --bench plan)"
  cargo bench --locked --quiet --bench plan >"$WORK/plan.out" 2>"$WORK/step.log" || die "cargo bench --bench plan failed"
  local label c
  while IFS= read -r line; do
    case $line in
      "plan 1000 in sync:"*) c="in sync (1,000 keep)" ;;
      "plan 1000 all env changed:"*) c="all changed (1,000 recreate)" ;;
      "plan 1000 on an empty engine:"*) c="empty engine (1,000 create)" ;;
      *) continue ;;
    esac
    record plan "$c" planner 1 median_ms "$(to_ms "$(sed -E 's/.*median ([^,]+),.*/\1/' <<<"$line")")"
    record plan "$c" planner 1 p95_ms "$(to_ms "$(sed -E 's/.*p95 ([^ ]+) over.*/\1/' <<<"$line")")"
  done <"$WORK/plan.out"
}
# Rust's Duration Debug (1.234ms, 567.8µs, 1.2s) in milliseconds.
to_ms() {
  awk -v d="$1" 'BEGIN {
    if (d ~ /µs$/) { sub(/µs$/, "", d); printf "%.3f", d / 1000 }
    else if (d ~ /ns$/) { sub(/ns$/, "", d); printf "%.6f", d / 1e6 }
    else if (d ~ /ms$/) { sub(/ms$/, "", d); printf "%.3f", d }
    else if (d ~ /s$/) { sub(/s$/, "", d); printf "%.3f", d * 1000 }
    else print "nan" }'
}

# --- the run ----------------------------------------------------------------------
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
T_RUN=$(now)
for scenario in cold noop update downtime agent footprint plan; do
  if [[ -z $ONLY || ,$ONLY, == *,$scenario,* ]]; then "scenario_$scenario"; fi
done
RUN_S=$(awk -v a="$T_RUN" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the report ---------------------------------------------------------------------
export RESULTS WORK
# shellcheck source=scripts/bench-report.sh
source scripts/bench-report.sh
report >"$OUT"
log "report written to $OUT (run took ${RUN_S}s)"
if [[ $QUICK -eq 1 && -z $ONLY ]]; then
  check_complete
  log "quick run complete: every scenario produced numbers"
fi
