#!/usr/bin/env bash
# The main job: berth's agent (`berth run`) on the embedded default, a state
# file, with no broker. It prepares the engine, the local registry and the demo
# images if needed, starts the agent on a copy of examples/demo/desired-state.json
# and shows, against the real engine:
#   1. the containers converging from nothing;
#   2. a container removed by hand coming back (drift correction);
#   3. an edited state file rolling out a new version;
#   4. a version that crashes at start being rolled back, the old one kept;
#   5. an empty state removing everything the demo created;
# then stops the agent with SIGTERM (exit 0).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "preparing the engine, registry and demo images (scripts/test-env.sh)"
bash scripts/test-env.sh | grep -E 'installing|started|built|pushed|engine:' || true
cargo build --release --locked --quiet
berth=$PWD/target/release/berth
export BERTH_INSTANCE=demo

work=$(mktemp -d /tmp/berth-demo.XXXXXX)
state_file=$work/desired-state.json
cp examples/demo/desired-state.json "$state_file"
names=(demo-store demo-collector demo-gateway)

agent_pid=
cleanup() {
  if [[ -n $agent_pid ]] && kill -0 "$agent_pid" 2>/dev/null; then
    kill -TERM "$agent_pid" 2>/dev/null || true
    wait "$agent_pid" 2>/dev/null || true
  fi
  # Whatever an interrupted demo left behind.
  "$berth" apply --state-dir "$work/state" examples/empty.json >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# Waits (up to 90 s) until "$@" succeeds.
wait_until() {
  local what=$1; shift
  for _ in $(seq 1 450); do
    if "$@" >/dev/null 2>&1; then
      echo "demo: $what"
      return 0
    fi
    sleep 0.2
  done
  echo "demo: FAILED waiting for: $what (agent log: $work/agent.log)" >&2
  exit 1
}

# berth creates from the digest it pulled and labels the document's reference.
image_of() { docker inspect -f '{{index .Config.Labels "berth.image"}} {{.State.Running}}' "$1" 2>/dev/null; }
runs() { [[ $(image_of "$1") == "$2 true" ]]; }
all_run() {
  runs demo-store 127.0.0.1:5000/berth-test/volume:1 &&
    runs demo-collector "$1" &&
    runs demo-gateway 127.0.0.1:5000/berth-test/healthy:1
}
completed() { grep -q "activityId=$1}: berth::agent: COMPLETED" "$work/agent.log"; }
gone() { ! docker inspect "$1" >/dev/null 2>&1; }
none_left() { for n in "${names[@]}"; do gone "$n" || return 1; done; }

step "berth run --config examples/demo/config.toml --files $state_file"
"$berth" run --config examples/demo/config.toml --files "$state_file" \
  --state-dir "$work/state" 2> >(tee "$work/agent.log" | sed 's/^/    agent | /' >&2) &
agent_pid=$!

step "1. the containers converge from nothing"
wait_until "all three run" all_run 127.0.0.1:5000/berth-test/service:1
wait_until "activity demo-rollout-1 COMPLETED" completed demo-rollout-1
"$berth" state | grep -E 'NAME|demo-'

step "2. someone removes demo-collector by hand: drift correction puts it back"
docker rm -f demo-collector >/dev/null
wait_until "demo-collector is back" all_run 127.0.0.1:5000/berth-test/service:1

step "3. the state file is edited: collector version 2"
sed 's#berth-test/service:1#berth-test/service:2#; s#"demo-rollout-1"#"demo-rollout-2"#' \
  examples/demo/desired-state.json >"$work/next.json"
mv "$work/next.json" "$state_file"
wait_until "activity demo-rollout-2 COMPLETED" completed demo-rollout-2
wait_until "collector 2 runs, the others untouched" all_run 127.0.0.1:5000/berth-test/service:2

step "4. a collector version that crashes at start: rolled back, version 2 keeps running"
sed 's#berth-test/service:1#berth-test/crash:1#; s#"demo-rollout-1"#"demo-rollout-3"#' \
  examples/demo/desired-state.json >"$work/next.json"
mv "$work/next.json" "$state_file"
wait_until "the agent reports the rollback" grep -q 'ROLLBACK_SUCCESS' "$work/agent.log"
wait_until "collector 2 still runs" all_run 127.0.0.1:5000/berth-test/service:2
wait_until "drift correction retried the crashing version and backs off" \
  grep -q 'backing off container=demo-collector failures=2' "$work/agent.log"
wait_until "collector 2 still runs" all_run 127.0.0.1:5000/berth-test/service:2
echo "demo: drift correction retries the crashing version with growing back-off;"
echo "      the fleet controller (or this file) decides what comes next"

step "5. an empty desired state: the agent removes what the demo created"
cp examples/empty.json "$state_file"
wait_until "no demo container left" none_left

step "SIGTERM: the agent stops cleanly"
kill -TERM "$agent_pid"
status=0
wait "$agent_pid" || status=$?
agent_pid=
echo "demo: berth run exited with status $status"
[[ $status -eq 0 ]]
docker volume rm berth-demo-store >/dev/null 2>&1 || true
