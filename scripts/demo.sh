#!/usr/bin/env bash
# The main job on the embedded default, no broker needed. Today berth checks
# desired-state documents; it validates every example and then shows how a
# broken document is refused, every problem named.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --locked --quiet
berth=target/release/berth

echo "== berth validate examples/*.json"
"$berth" validate examples/*.json

echo
echo "== berth validate tests/fixtures/documents/ten-mistakes.json (expected to fail)"
if "$berth" validate tests/fixtures/documents/ten-mistakes.json; then
  echo "demo: the broken document was accepted, which is a bug" >&2
  exit 1
fi
echo "demo: refused, as it should be"
