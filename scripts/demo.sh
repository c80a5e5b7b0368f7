#!/usr/bin/env bash
# The main job on the embedded default, no broker needed: validate the
# example documents, show how a broken one is refused, then plan the
# multi-container example against the real engine and show its inventory.
# (Applying arrives with `berth apply`; nothing here changes a container.)
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

echo
echo "== berth plan examples/multi.json"
"$berth" plan examples/multi.json

echo
echo "== berth state"
"$berth" state
