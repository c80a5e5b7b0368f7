#!/usr/bin/env bash
# The main job on the embedded default, no broker needed: validate the
# example documents, show how a broken one is refused, then plan and apply
# the multi-container example against the real engine, apply it again (a
# no-op), show a failed update rolling back, and finally remove what the
# demo created by applying an empty document.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== preparing the engine, registry and test images (scripts/test-env.sh)"
bash scripts/test-env.sh | grep -E 'installing|started|built|pushed|summary|engine:' || true
cargo build --release --locked --quiet
berth=target/release/berth

echo
echo "== berth validate examples/*.json"
"$berth" validate examples/*.json

echo
echo "== berth validate tests/fixtures/documents/ten-mistakes.json (expected to fail)"
if "$berth" validate tests/fixtures/documents/ten-mistakes.json; then
  echo "demo: the broken document was accepted, which is a bug" >&2
  exit 1
fi
echo "demo: refused, every problem named"

state_dir=$(mktemp -d /tmp/berth-demo.XXXXXX)
echo
echo "== berth plan examples/multi.json"
"$berth" plan examples/multi.json

echo
echo "== berth apply examples/multi.json"
"$berth" apply --state-dir "$state_dir" examples/multi.json

echo
echo "== berth apply examples/multi.json again: nothing to do"
"$berth" apply --state-dir "$state_dir" examples/multi.json

echo
echo "== a new collector version that crashes at start: rolled back"
sed 's#berth-test/service:2#berth-test/crash:1#; s#monitoring-rollout-7#monitoring-rollout-8#' examples/multi.json >"$state_dir/crashing.json"
if "$berth" apply --state-dir "$state_dir" "$state_dir/crashing.json"; then
  echo "demo: the crashing version was accepted, which is a bug" >&2
  exit 1
fi

echo
echo "== berth state"
"$berth" state

echo
echo "== berth apply examples/empty.json: remove what the demo created"
"$berth" apply --state-dir "$state_dir" examples/empty.json
rm -rf "$state_dir"
