//! Any bytes through `spec::parse_bytes`, and the same bytes split at 0x1E
//! (ASCII record separator, which no JSON text needs) into state files for
//! `spec::merge::merge`: neither may panic, and both must answer with a
//! bounded list of non-empty lines whose count is exact. libFuzzer's
//! `-timeout` (set by `scripts/fuzz.sh`) turns any superlinear input into a
//! reported failure.
#![no_main]

use berth::spec::limits::MAX_LISTED;
use berth::spec::merge::{merge, Part};
use berth::spec::{parse_bytes, Limits, Options};
use libfuzzer_sys::fuzz_target;

/// Splits state files apart in a merge input.
const SEPARATOR: u8 = 0x1e;

fuzz_target!(|data: &[u8]| {
    // The first byte picks between the default limits and small ones, so
    // both the limits' own refusals and the checks behind them are reached.
    let options = match data.first() {
        Some(b) if b % 4 == 0 => Options {
            limits: Limits {
                max_components: 3,
                max_depth: 9,
            },
            ..Options::default()
        },
        _ => Options::default(),
    };

    match parse_bytes(data, &options) {
        Ok(accepted) => {
            assert!(accepted.warnings.len() <= MAX_LISTED + 1);
            for w in &accepted.warnings {
                assert!(!w.to_string().trim().is_empty(), "an empty warning");
            }
        }
        Err(rejection) => {
            assert!(rejection.count >= 1, "a rejection without a problem");
            assert!(rejection.errors.len() <= MAX_LISTED + 1);
            assert_eq!(
                rejection.errors.len(),
                rejection.count.min(MAX_LISTED + 1),
                "the list is cut exactly at the bound"
            );
            for e in &rejection.errors {
                assert!(!e.message.trim().is_empty(), "an empty message: {e:?}");
                assert!(!e.to_string().trim().is_empty());
            }
        }
    }

    if data.contains(&SEPARATOR) {
        let parts: Vec<Part> = data
            .split(|&b| b == SEPARATOR)
            .enumerate()
            .map(|(i, bytes)| Part {
                name: format!("part-{i}.json"),
                text: String::from_utf8_lossy(bytes).into_owned(),
            })
            .collect();
        if let Err(lines) = merge(&parts, &options) {
            assert!(!lines.is_empty(), "a refusal without a line");
            assert!(lines.len() <= MAX_LISTED + 1, "{} lines", lines.len());
            for line in &lines {
                assert!(!line.trim().is_empty(), "an empty line");
            }
        }
    }
});
