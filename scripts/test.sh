#!/usr/bin/env bash
# Runs every berth test on this machine: brings up the real engine, registry
# and broker (scripts/test-env.sh), then the whole cargo test suite.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/test-env.sh
# test-hooks: the binary the integration tests drive reads BERTH_TEST_PAUSE_AT
# and BERTH_TEST_FAULTS; the release build has no such hooks.
cargo test --all-targets --locked --features test-hooks "$@"
# Tests that restart the shared engine run alone, after everything else.
cargo test --locked --features test-hooks --test integration "$@" -- --ignored --test-threads 1 serial_
