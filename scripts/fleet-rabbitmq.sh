#!/usr/bin/env bash
# The RabbitMQ part of the fleet campaign (issue 26), sourced by
# scripts/fleet.sh (or run alone): `fleet_rabbitmq [AGENTS]`.
#
# On a 3-node RabbitMQ cluster of its own (scripts/rabbitmq-cluster.sh, in a
# temporary directory, stopped on the way out): AGENTS hollow agents (1000 by
# default) spread over the nodes, a rollout in one wave from a controller on
# node 1 and 2, and node 3 killed (SIGKILL) once a tenth of the devices are at
# work on the release. Prints the rollout's JSON summary; fails unless 100% COMPLETED.
# Then the RabbitMQ integration tests (tests/fleet_rabbitmq.rs).
#
# Environment: BERTH (the binary; default target/release/berth, built if
# missing), PULL (hollow pull latency, default 100ms), RABBITMQ_NODES (3).

fleet_rabbitmq() {
    local agents=${1:-1000}
    local here root
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    root=$(dirname "$here")
    local berth=${BERTH:-$root/target/release/berth}
    if [ ! -x "$berth" ]; then
        (cd "$root" && cargo build --release --bin berth) || return 1
        berth=${CARGO_TARGET_DIR:-$root/target}/release/berth
    fi
    local work
    work=$(mktemp -d /tmp/berth-fleet-rmq.XXXXXX)
    # The nodes run as the rabbitmq user, who must reach the cluster's directory.
    chmod 0755 "$work"
    local sim_pid=""
    # shellcheck disable=SC2064
    trap "[ -n \"\$sim_pid\" ] && kill \$sim_pid 2>/dev/null; bash '$here/rabbitmq-cluster.sh' stop '$work/cluster'; rm -rf '$work'; trap - RETURN" RETURN

    echo "== RabbitMQ: a ${RABBITMQ_NODES:-3}-node cluster"
    bash "$here/rabbitmq-cluster.sh" start "${RABBITMQ_NODES:-3}" "$work/cluster" >"$work/urls" || return 1
    cat "$work/urls"
    local urls p1
    urls=$(paste -sd, "$work/urls")
    p1=$(sed -n '1s/.*://p' "$work/urls")

    echo "== $agents hollow agents over every node"
    mosquitto_sub -p "$p1" -t 'devices/+/containersupdate/currentstate' -C "$agents" -W 300 >/dev/null &
    local wait_pid=$!
    sleep 1
    local t0=$SECONDS
    "$berth" fleet-sim --agents "$agents" --broker "$urls" --prefix devices/ \
        --pull-latency "${PULL:-100ms}" --create-latency 50ms --start-latency 50ms \
        --min-ready 200ms --log-level berth=info 2>"$work/sim.log" &
    sim_pid=$!
    wait "$wait_pid" || {
        echo "not every agent published its current state within 300s" >&2
        return 1
    }
    echo "all connected in $((SECONDS - t0))s"

    local release="$work/release.json"
    printf '%s' '{"activityId":"fleet-rmq-1","payload":{"domains":[{"id":"containers","components":[{"id":"app","version":"2","config":[{"key":"image","value":"127.0.0.1:5000/fleet/app:2"}]}]}]}}' >"$release"
    echo "== a rollout from nodes 1,2; node 3 killed once a tenth of the devices are at work"
    # The node dies once a tenth of the devices have said they are at work.
    mosquitto_sub -p "$p1" -t 'devices/+/containersupdate/desiredstatefeedback' -C "$((agents / 10 + 1))" -W 300 >/dev/null &
    wait_pid=$!
    sleep 1
    "$berth" fleet rollout "$release" --broker "$(sed -n '1p;2p' "$work/urls" | paste -sd,)" \
        --prefix devices/ --json --timeout 120s --discover-wait 1s \
        --devices "$(seq -f 'sim-%04g' 0 $((agents - 1)) | paste -sd,)" >"$work/report.json" 2>"$work/rollout.log" &
    local rollout_pid=$!
    wait "$wait_pid" || true
    bash "$here/rabbitmq-cluster.sh" kill 3 "$work/cluster"
    echo "node 3 killed at $((SECONDS - t0))s"
    local rc=0
    wait "$rollout_pid" || rc=$?
    tail -n 3 "$work/rollout.log"
    jq -c '.summary | {devices, ended, p50_ms, p99_ms}' "$work/report.json"
    echo "reconnects to a survivor: $(grep -c 'trying the next MQTT broker' "$work/sim.log")"
    if [ "$rc" != 0 ] || [ "$(jq '.summary.ended.COMPLETED // 0' "$work/report.json")" != "$agents" ]; then
        echo "the rollout on RabbitMQ did not complete on every device" >&2
        return 1
    fi

    kill "$sim_pid" 2>/dev/null || true
    sim_pid=""
    bash "$here/rabbitmq-cluster.sh" stop "$work/cluster"

    echo "== the RabbitMQ integration tests"
    (cd "$root" && cargo test --features test-hooks --test integration fleet_rabbitmq -- --include-ignored)
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    fleet_rabbitmq "$@"
fi
