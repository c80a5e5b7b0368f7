#!/usr/bin/env bash
# A RabbitMQ cluster of N nodes on this one machine, MQTT plugin on, for the
# fleet tests (issue 26) and by hand. Debian's rabbitmq-server 3.10 only; the
# system-wide service is never touched: every node has its own name, ports,
# config, enabled_plugins, mnesia and log directories under DIR, and runs as
# the `rabbitmq` user (whose ~/.erlang.cookie the nodes and rabbitmqctl share).
#
#   scripts/rabbitmq-cluster.sh start [N] DIR   N nodes (default 3), clustered;
#                                               prints one mqtt://127.0.0.1:PORT per node
#   scripts/rabbitmq-cluster.sh stop DIR        stops every node (SIGKILL if it will not) and
#                                               discards its state: the next start is a new cluster
#   scripts/rabbitmq-cluster.sh kill I DIR      SIGKILL of node I's beam (1-based): a crash
#   scripts/rabbitmq-cluster.sh status DIR      one line per node: I NAME MQTT-URL up|down
#   scripts/rabbitmq-cluster.sh ctl I DIR ARGS  rabbitmqctl ARGS against node I
#
# Environment: RABBITMQ_EXTRA_CONF=FILE appends FILE to every node's
# rabbitmq.conf (examples/rabbitmq/rabbitmq.conf: no anonymous MQTT).
# `start` is idempotent: nodes already up are left alone, and the URLs are
# printed again. It fails loudly, with the failing node's log.
set -euo pipefail

RMQ_BIN=/usr/lib/rabbitmq/bin
RMQ_HOME=/var/lib/rabbitmq
START_TIMEOUT=${RABBITMQ_START_TIMEOUT:-90}

die() {
    echo "rabbitmq-cluster: $*" >&2
    exit 1
}

usage() {
    sed -n "2,19p" "$0" >&2
    exit 2
}

[ -x "$RMQ_BIN/rabbitmq-server" ] || die "rabbitmq-server is not installed (apt-get install rabbitmq-server)"
id rabbitmq >/dev/null 2>&1 || die "no rabbitmq user (apt-get install rabbitmq-server)"

# A port no socket uses, below the kernel's ephemeral range: a port in that
# range may be taken as the local end of any outgoing connection (a thousand
# agents' connections to a broker take a thousand of them) between the check
# and the node's bind (eaddrinuse).
free_port() {
    local p low
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    for _ in $(seq 1 200); do
        p=$((10000 + RANDOM % (low - 10000)))
        if [ -z "$(ss -Htan "sport = :$p")" ] && [ -z "$(ss -Hltn "sport = :$((p + 20000))")" ]; then
            echo "$p"
            return
        fi
    done
    die "no free port found"
}

# Runs "$@" as the rabbitmq user with node I's environment.
as_node() {
    local dir=$1 i=$2
    shift 2
    local n="$dir/node$i"
    # shellcheck disable=SC1091
    . "$n/ports"
    local envs=(
        HOME="$RMQ_HOME"
        PATH="$RMQ_BIN:/usr/bin:/bin:/usr/sbin:/sbin"
        RABBITMQ_NODENAME="$NAME"
        RABBITMQ_NODE_PORT="$AMQP"
        RABBITMQ_DIST_PORT="$DIST"
        RABBITMQ_CONFIG_FILE="$n/rabbitmq.conf"
        RABBITMQ_ENABLED_PLUGINS_FILE="$n/enabled_plugins"
        RABBITMQ_MNESIA_BASE="$n/mnesia"
        RABBITMQ_MNESIA_DIR="$n/mnesia/$NAME"
        RABBITMQ_LOG_BASE="$n/log"
        RABBITMQ_PID_FILE="$n/pid"
        RABBITMQ_ADVANCED_CONFIG_FILE="$n/advanced.config"
        RABBITMQ_CONF_ENV_FILE="$n/rabbitmq-env.conf"
        ERL_CRASH_DUMP="$n/erl_crash.dump"
    )
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups env -i "${envs[@]}" "$@"
    else
        env -i "${envs[@]}" "$@"
    fi
}

ctl() {
    local dir=$1 i=$2
    shift 2
    # shellcheck disable=SC1091
    . "$dir/node$i/ports"
    as_node "$dir" "$i" "$RMQ_BIN/rabbitmqctl" -n "$NAME" "$@"
}

nodes() {
    local dir=$1
    [ -f "$dir/nodes" ] || die "no cluster in $dir (start it first)"
    cat "$dir/nodes"
}

is_up() {
    ctl "$1" "$2" -q status >/dev/null 2>&1
}

show_log() {
    local dir=$1 i=$2
    echo "--- node $i stdout/stderr ($dir/node$i/console.log):" >&2
    tail -n 40 "$dir/node$i/console.log" >&2 2>/dev/null || true
    for f in "$dir/node$i"/log/*.log; do
        [ -f "$f" ] || continue
        echo "--- $f:" >&2
        tail -n 40 "$f" >&2
    done
}

url() {
    # shellcheck disable=SC1091
    . "$1/node$2/ports"
    echo "mqtt://127.0.0.1:$MQTT"
}

# Writes node I's directory: ports, config, plugins.
prepare() {
    local dir=$1 i=$2 tag=$3
    local n="$dir/node$i"
    [ -f "$n/ports" ] && return
    mkdir -p "$n/mnesia" "$n/log"
    local amqp mqtt dist
    amqp=$(free_port)
    mqtt=$(free_port)
    while [ "$mqtt" = "$amqp" ]; do mqtt=$(free_port); done
    dist=$(free_port)
    {
        echo "NAME=berth-$tag-$i@localhost"
        echo "AMQP=$amqp"
        echo "MQTT=$mqtt"
        echo "DIST=$dist"
    } >"$n/ports"
    {
        echo "# Node $i of a berth test cluster (scripts/rabbitmq-cluster.sh)."
        echo "listeners.tcp.default = 127.0.0.1:$amqp"
        echo "mqtt.listeners.tcp.default = 127.0.0.1:$mqtt"
        echo "mqtt.allow_anonymous = true"
        echo "mqtt.default_user = guest"
        echo "mqtt.default_pass = guest"
        echo "mqtt.vhost = /"
        echo "mqtt.exchange = amq.topic"
        # Session queues replicated on every node: a client whose node dies
        # finds its session on a survivor (classic ones stay on the dead node).
        echo "mqtt.durable_queue_type = quorum"
        echo "log.file.level = info"
        echo "log.console = false"
        echo "cluster_partition_handling = ignore"
        if [ -n "${RABBITMQ_EXTRA_CONF:-}" ]; then
            echo "# $RABBITMQ_EXTRA_CONF:"
            cat "$RABBITMQ_EXTRA_CONF"
        fi
    } >"$n/rabbitmq.conf"
    echo "[rabbitmq_mqtt]." >"$n/enabled_plugins"
    echo "[]." >"$n/advanced.config"
    : >"$n/rabbitmq-env.conf"
    echo "$i" >>"$dir/nodes"
}

start_node() {
    local dir=$1 i=$2
    if is_up "$dir" "$i"; then
        return
    fi
    # shellcheck disable=SC1091
    . "$dir/node$i/ports"
    as_node "$dir" "$i" "$RMQ_BIN/rabbitmq-server" >>"$dir/node$i/console.log" 2>&1 </dev/null &
    disown || true
}

await_node() {
    local dir=$1 i=$2
    # await_startup gives up at once while the node is not yet reachable
    # over distribution: it is asked again until the deadline.
    local deadline=$((SECONDS + START_TIMEOUT))
    until ctl "$dir" "$i" -q await_startup --timeout 10 >/dev/null 2>&1; do
        if grep -q "BOOT FAILED" "$dir/node$i/console.log" 2>/dev/null; then
            show_log "$dir" "$i"
            die "node $i failed to boot"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            show_log "$dir" "$i"
            die "node $i did not start within ${START_TIMEOUT}s"
        fi
        sleep 0.5
    done
}

cmd_start() {
    local count=3 dir
    if [ $# -eq 2 ]; then
        count=$1
        dir=$2
    elif [ $# -eq 1 ]; then
        dir=$1
    else
        usage
    fi
    [[ "$count" =~ ^[1-9][0-9]*$ ]] || die "N: '$count' is not a positive number"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    # The rabbitmq user must reach the directory (a test's temp dir is 0700).
    local tag
    tag=$(printf '%s' "$dir" | cksum | cut -d' ' -f1)
    local i
    for i in $(seq 1 "$count"); do prepare "$dir" "$i" "$tag"; done
    if [ "$(id -u)" = 0 ]; then
        chown -R rabbitmq:rabbitmq "$dir"
        chmod 0755 "$dir"
    fi
    if [ "$(id -u)" = 0 ] && ! setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups test -w "$dir/node1"; then
        die "the rabbitmq user cannot write to $dir: every directory above it must be searchable by others (chmod o+x)"
    fi
    for i in $(seq 1 "$count"); do start_node "$dir" "$i"; done
    for i in $(seq 1 "$count"); do await_node "$dir" "$i"; done
    # shellcheck disable=SC1091
    local first
    first=$(. "$dir/node1/ports" && echo "$NAME")
    for i in $(seq 2 "$count"); do
        if ctl "$dir" "$i" -q cluster_status --formatter json 2>/dev/null | grep -q "\"$first\""; then
            continue
        fi
        ctl "$dir" "$i" -q stop_app >/dev/null
        if ! ctl "$dir" "$i" -q join_cluster "$first" >"$dir/node$i/join.log" 2>&1; then
            cat "$dir/node$i/join.log" >&2
            show_log "$dir" "$i"
            die "node $i could not join $first"
        fi
        ctl "$dir" "$i" -q start_app >/dev/null
        await_node "$dir" "$i"
    done
    for i in $(seq 1 "$count"); do url "$dir" "$i"; done
}

cmd_stop() {
    [ $# -eq 1 ] || usage
    local dir=$1 i pid
    [ -f "$dir/nodes" ] || return 0
    for i in $(nodes "$dir"); do
        pid=$(cat "$dir/node$i/pid" 2>/dev/null || true)
        if is_up "$dir" "$i"; then
            ctl "$dir" "$i" -q stop >/dev/null 2>&1 || true
        fi
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        fi
        # A cluster restarted from its mnesia waits for the node that
        # stopped last, whichever order they come back in: a stopped
        # cluster starts afresh instead (the logs stay).
        rm -rf "$dir/node$i/mnesia" "$dir/node$i/pid"
        mkdir -p "$dir/node$i/mnesia"
        if [ "$(id -u)" = 0 ]; then chown rabbitmq:rabbitmq "$dir/node$i/mnesia"; fi
    done
}

cmd_kill() {
    [ $# -eq 2 ] || usage
    local i=$1 dir=$2 pid
    [ -f "$dir/node$i/ports" ] || die "no node $i in $dir"
    pid=$(cat "$dir/node$i/pid" 2>/dev/null || true)
    [ -n "$pid" ] || die "node $i has no pid file"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}

cmd_status() {
    [ $# -eq 1 ] || usage
    local dir=$1 i state
    for i in $(nodes "$dir"); do
        if is_up "$dir" "$i"; then state=up; else state=down; fi
        # shellcheck disable=SC1091
        echo "$i $(. "$dir/node$i/ports" && echo "$NAME") $(url "$dir" "$i") $state"
    done
}

[ $# -ge 1 ] || usage
what=$1
shift
case "$what" in
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
kill) cmd_kill "$@" ;;
status) cmd_status "$@" ;;
ctl)
    [ $# -ge 2 ] || usage
    i=$1 dir=$2
    shift 2
    ctl "$dir" "$i" "$@"
    ;;
*) usage ;;
esac
