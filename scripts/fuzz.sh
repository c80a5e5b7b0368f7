#!/usr/bin/env bash
# Fuzzes desired-state parsing, validation and merging (fuzz/, target
# `documents`) for SECONDS (default 1800), then prints how many inputs ran,
# the coverage reached and every crash, timeout (10 s), slow input (over
# 2 s: linear work on 64 KiB takes milliseconds) or out-of-memory input found
# (exit 1 if there is one). New inputs that reach new code are kept in
# fuzz/corpus/documents/; failures are written to fuzz/artifacts/documents/.
#
#   scripts/fuzz.sh [SECONDS]
#
# cargo-fuzz passes nightly-only flags to rustc; RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept them. FUZZ_SANITIZER=address adds AddressSanitizer
# (slower; berth's document code has no unsafe code for it to check).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-1800}"
target=documents
corpus="fuzz/corpus/$target"
artifacts="fuzz/artifacts/$target"
sanitizer="${FUZZ_SANITIZER:-none}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

mkdir -p "$corpus" "$artifacts"
# Seeds: the examples, the fixtures and the malformed corpus (copied once;
# libFuzzer adds what it finds next to them).
for f in examples/*.json examples/demo/*.json tests/fixtures/documents/*.json tests/corpus/*; do
    case "$f" in *.md | *.toml) continue ;; esac
    [ -f "$f" ] || continue
    seed="$corpus/seed-$(basename "$f")"
    [ -e "$seed" ] || cp "$f" "$seed"
done

log="$artifacts/fuzz-$(date +%Y%m%d-%H%M%S).log"
before=$(find "$artifacts" -type f ! -name '*.log' | wc -l)
set +e
cargo fuzz run --sanitizer "$sanitizer" "$target" "$corpus" -- \
    -max_total_time="$seconds" \
    -timeout=10 \
    -report_slow_units=2 \
    -rss_limit_mb=2048 \
    -max_len=65536 \
    -dict=fuzz/documents.dict \
    -artifact_prefix="$artifacts/" \
    -print_final_stats=1 >"$log" 2>&1
status=$?
set -e

echo "log: $log"
grep -E '^#[0-9]+' "$log" | tail -n 1 || true
grep -E '^Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb' "$log" || true
echo "corpus: $(find "$corpus" -type f | wc -l) inputs in $corpus"
found=$(find "$artifacts" -type f ! -name '*.log' | sort)
if [ -n "$found" ]; then
    echo "failures ($(echo "$found" | wc -l), $before before this run):"
    echo "$found"
    grep -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -n 20 || true
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "libFuzzer exited $status without an artifact; see $log"
    tail -n 30 "$log"
    exit "$status"
fi
echo "no crashes"
