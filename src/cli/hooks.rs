//! Test hooks. Only a `test-hooks` build (the integration tests') reads
//! them: there `BERTH_TEST_PAUSE_AT` makes an activity wait at a named
//! point so a test can kill berth there, and `BERTH_TEST_FAULTS` wraps the
//! engine in [`berth::runtime::faults::Faulty`] (e.g. `rename#2:fail`). The
//! release binary has neither, and reads no such variable.

use berth::execute::PausePoint;
use berth::runtime::docker::DockerRuntime;

/// The engine the commands talk to.
#[cfg(feature = "test-hooks")]
pub type Engine = berth::runtime::faults::Faulty<DockerRuntime>;
/// The engine the commands talk to.
#[cfg(not(feature = "test-hooks"))]
pub type Engine = DockerRuntime;

/// Wraps a connected engine with the faults `BERTH_TEST_FAULTS` asks for.
///
/// # Errors
/// When the variable does not parse.
#[cfg(feature = "test-hooks")]
pub fn engine(rt: DockerRuntime) -> anyhow::Result<Engine> {
    let spec = std::env::var("BERTH_TEST_FAULTS").unwrap_or_default();
    berth::runtime::faults::Faulty::from_spec(rt, &spec)
        .map_err(|e| anyhow::anyhow!("BERTH_TEST_FAULTS: {e}"))
}

/// The engine as connected.
///
/// # Errors
/// Never.
#[cfg(not(feature = "test-hooks"))]
pub fn engine(rt: DockerRuntime) -> anyhow::Result<Engine> {
    Ok(rt)
}

/// Where `BERTH_TEST_PAUSE_AT` asks an activity to wait.
#[cfg(feature = "test-hooks")]
pub fn pause_at() -> Option<PausePoint> {
    let at = std::env::var("BERTH_TEST_PAUSE_AT").ok()?;
    match at.as_str() {
        "updating" => Some(PausePoint::Updating),
        "activating" => Some(PausePoint::Activating),
        _ => at
            .strip_prefix("journal#")
            .and_then(|n| n.parse().ok())
            .map(PausePoint::JournalWrite),
    }
}

/// No pause points outside test builds.
#[cfg(not(feature = "test-hooks"))]
pub fn pause_at() -> Option<PausePoint> {
    None
}

/// Panics with the message `BERTH_TEST_PANIC` holds, so a test can see what
/// the panic hook prints.
#[cfg(feature = "test-hooks")]
pub fn panic_if_asked() {
    if let Ok(message) = std::env::var("BERTH_TEST_PANIC") {
        panic!("{message}");
    }
}

/// No panics on request outside test builds.
#[cfg(not(feature = "test-hooks"))]
pub fn panic_if_asked() {}
