#!/usr/bin/env bash
# Users and permissions for a berth fleet on RabbitMQ's MQTT plugin (3.10).
#
#   provision.sh controller USER   the fleet controller: every device's topics
#   provision.sh device USER       one device: only devices/USER/... Its MQTT client
#                                  id must be USER (as berth fleet-sim does, and
#                                  `mqtt.client_id = "USER"` for berth run) or USER.ANY
#                                  for a second client (a device name has no dot)
#
# The password is read from stdin (never from the command line, which `ps` shows).
# RABBITMQCTL is the rabbitmqctl to run (default `rabbitmqctl`); for the test
# cluster: RABBITMQCTL="scripts/rabbitmq-cluster.sh ctl 1 DIR".
#
# How the plugin authorises (3.10): an MQTT topic is an AMQP routing key on
# amq.topic with `/` turned into `.` (and `+` into `*`), so devices/sim-0001/#
# is checked as devices.sim-0001.#. Publishing needs write access to the
# routing key and subscribing read access to the filter (topic permissions),
# and the subscription's queue mqtt-subscription-<client id>qos0|qos1 needs the
# vhost permissions configure, write and read. A device's topic permissions
# match its own prefix only, so `#` or devices/+/... are refused as well.
set -euo pipefail

ctl() {
    # shellcheck disable=SC2086
    ${RABBITMQCTL:-rabbitmqctl} -q "$@"
}

[ $# -eq 2 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
role=$1 user=$2
case "$user" in
*[!A-Za-z0-9_-]* | "") echo "provision.sh: user '$user': only letters, digits, '-' and '_' (it becomes part of a regular expression and of a routing key)" >&2; exit 2 ;;
esac
IFS= read -r password || true
[ -n "$password" ] || { echo "provision.sh: no password on stdin" >&2; exit 2; }

ctl delete_user "$user" >/dev/null 2>&1 || true
printf '%s\n' "$password" | ctl add_user "$user" >/dev/null
case "$role" in
controller)
    ctl set_permissions -p / "$user" '.*' '.*' '.*'
    ctl set_topic_permissions -p / "$user" amq.topic '^devices\.' '^devices\.'
    ;;
device)
    queue="mqtt-subscription-${user}(\\.[^.]+)?qos[01]"
    ctl set_permissions -p / "$user" "^${queue}\$" "^(amq\\.topic|${queue})\$" "^(amq\\.topic|${queue})\$"
    ctl set_topic_permissions -p / "$user" amq.topic "^devices\\.${user}\\." "^devices\\.${user}\\."
    ;;
*)
    echo "provision.sh: role '$role': controller or device" >&2
    exit 2
    ;;
esac
