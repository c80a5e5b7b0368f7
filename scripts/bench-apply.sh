#!/usr/bin/env bash
# Applying against the real engine, with the peers measured in the same run:
#   berth apply       (download-first, temporary names, readiness gate)
#   docker-compose    Debian's docker-compose, `up -d` on an equivalent file
#   docker CLI loop   `docker run -d` per container (rm + run to replace)
# Three steps each: fresh start of N containers, an env change that replaces
# all of them, and a no-op re-apply. The readiness gate is set to its
# minimum (--min-ready 1ms) so the figures compare the engine work, not the
# deliberate 2 s wait berth adds per container by default.
# Usage: scripts/bench-apply.sh [N containers, default 20]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${1:-20}
IMAGE=127.0.0.1:5000/berth-test/service:1

bash scripts/test-env.sh >/dev/null
command -v docker-compose >/dev/null || { apt-get install -y -qq docker-compose >/dev/null; }
cargo build --release --locked --quiet
berth=$(pwd)/target/release/berth

work=$(mktemp -d)
cleanup() {
  docker ps -aq --filter "name=^bench-" | xargs -r docker rm -f >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cleanup; work=$(mktemp -d)

doc() { # $1 = env value
  printf '{"activityId":"bench-%s","payload":{"domains":[{"id":"containers","components":[' "$1"
  for i in $(seq 1 "$N"); do
    [ "$i" -gt 1 ] && printf ','
    printf '{"id":"bench-berth-%d","version":"1","config":[{"key":"image","value":"%s"},{"key":"env","value":"MODE=%s"}]}' "$i" "$IMAGE" "$1"
  done
  printf ']}]}}'
}
compose() { # $1 = env value
  echo "version: '3'"
  echo "services:"
  for i in $(seq 1 "$N"); do
    printf '  s%d:\n    image: %s\n    container_name: bench-compose-%d\n    environment:\n      MODE: "%s"\n' "$i" "$IMAGE" "$i" "$1"
  done
}
ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000000 )); }

berth_apply() { "$berth" apply --state-dir "$work/state" --min-ready 1ms "$work/doc-$1.json"; }
compose_up() { cp "$work/compose-$1.yml" "$work/docker-compose.yml"; (cd "$work" && docker-compose -p bench up -d); }
cli_run() { for i in $(seq 1 "$N"); do docker run -d --name "bench-cli-$i" -e "MODE=$1" "$IMAGE"; done; }
cli_replace() { for i in $(seq 1 "$N"); do docker rm -f "bench-cli-$i"; docker run -d --name "bench-cli-$i" -e "MODE=$1" "$IMAGE"; done; }

for v in a b; do doc "$v" >"$work/doc-$v.json"; compose "$v" >"$work/compose-$v.yml"; done

b1=$(ms berth_apply a); c1=$(ms compose_up a); l1=$(ms cli_run a)
b2=$(ms berth_apply b); c2=$(ms compose_up b); l2=$(ms cli_replace b)
b3=$(ms berth_apply b); c3=$(ms compose_up b)

ratio() { awk "BEGIN {printf \"%.2f\", $1/$2}"; }
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(docker version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}})'), $(docker-compose version --short 2>/dev/null | head -1 | sed 's/^/docker-compose /')"
echo "containers: $N (wall time, ms)"
printf '%-22s %8s %16s %8s %10s %8s\n' step berth docker-compose ratio "CLI loop" ratio
printf '%-22s %8d %16d %8s %10d %8s\n' "fresh start" "$b1" "$c1" "$(ratio "$b1" "$c1")" "$l1" "$(ratio "$b1" "$l1")"
printf '%-22s %8d %16d %8s %10d %8s\n' "replace all (env)" "$b2" "$c2" "$(ratio "$b2" "$c2")" "$l2" "$(ratio "$b2" "$l2")"
printf '%-22s %8d %16d %8s %10s %8s\n' "no-op re-apply" "$b3" "$c3" "$(ratio "$b3" "$c3")" "-" "-"
(cd "$work" && docker-compose -p bench down >/dev/null 2>&1) || true
