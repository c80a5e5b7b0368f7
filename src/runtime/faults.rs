//! A [`Runtime`] wrapper that injects faults, for tests only.
//!
//! [`Faulty`] delegates every call to the runtime it wraps and counts the
//! calls of each [`CallKind`] that go through it. Rules make the Nth call of
//! a kind (1-based, counted through the wrapper), or every call from the Nth
//! on, fail, look like an engine that went away, or pause so a test can kill
//! the process right there. Rules come from a spec string such as
//! `rename#2:fail,start#1+:unavailable` (see [`parse_rules`]) or are added
//! while the wrapper is in use ([`Faulty::add_rule`]).
//!
//! Compiled only for unit tests and with the `test-hooks` feature.

use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{
    ContainerDetails, CreateRequest, EngineInfo, EventStream, ExecOutput, ImageDetails,
    PullProgress, Result, Runtime, RuntimeError,
};
use crate::spec::model::ContainerConfig;

/// How long a [`Fault::Pause`] waits before the call goes ahead: long
/// enough for any test to kill the process first.
pub const PAUSE: Duration = Duration::from_secs(3600);

/// The endpoint an injected [`Fault::Unavailable`] names.
pub const INJECTED_ENDPOINT: &str = "(fault injection)";

/// The runtime calls a rule can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallKind {
    /// [`Runtime::pull`].
    Pull,
    /// [`Runtime::create`].
    Create,
    /// [`Runtime::start`].
    Start,
    /// [`Runtime::stop`].
    Stop,
    /// [`Runtime::kill`].
    Kill,
    /// [`Runtime::unpause`].
    Unpause,
    /// [`Runtime::rename`].
    Rename,
    /// [`Runtime::remove`].
    Remove,
    /// [`Runtime::update`].
    Update,
    /// [`Runtime::inspect`].
    Inspect,
    /// [`Runtime::list`].
    List,
    /// [`Runtime::image`].
    Image,
    /// [`Runtime::exec`].
    Exec,
    /// [`Runtime::logs`].
    Logs,
}

impl CallKind {
    /// Every kind, in declaration order.
    pub const ALL: [CallKind; 14] = [
        CallKind::Pull,
        CallKind::Create,
        CallKind::Start,
        CallKind::Stop,
        CallKind::Kill,
        CallKind::Unpause,
        CallKind::Rename,
        CallKind::Remove,
        CallKind::Update,
        CallKind::Inspect,
        CallKind::List,
        CallKind::Image,
        CallKind::Exec,
        CallKind::Logs,
    ];

    /// The word a spec uses: `pull`, `create`, `start`, …
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Pull => "pull",
            CallKind::Create => "create",
            CallKind::Start => "start",
            CallKind::Stop => "stop",
            CallKind::Kill => "kill",
            CallKind::Unpause => "unpause",
            CallKind::Rename => "rename",
            CallKind::Remove => "remove",
            CallKind::Update => "update",
            CallKind::Inspect => "inspect",
            CallKind::List => "list",
            CallKind::Image => "image",
            CallKind::Exec => "exec",
            CallKind::Logs => "logs",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for CallKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CallKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        CallKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = CallKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown call kind {s:?} (expected one of {})",
                    known.join(", ")
                )
            })
    }
}

/// What happens to a call a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The call fails with [`RuntimeError::Refused`] (status 500,
    /// `injected fault: rename#2`) and never reaches the engine.
    Fail,
    /// The call fails with [`RuntimeError::Unavailable`], as if the engine
    /// went away, and never reaches the engine.
    Unavailable,
    /// One line `berth: test hook: paused before rename#2` goes to standard
    /// error, then the call waits [`PAUSE`] (a tokio sleep, so paused test
    /// time skips it) before it goes ahead.
    Pause,
    /// One line `berth: test hook: delaying rename#2 by 10s` goes to
    /// standard error, then the call waits that long and goes ahead: time
    /// for a test to restart the engine or the broker under it. Written
    /// `delay=<duration>` (`delay=10s`).
    Delay(Duration),
}

impl Fault {
    /// The word a spec uses: `fail`, `unavailable`, `pause`, `delay`.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Fail => "fail",
            Fault::Unavailable => "unavailable",
            Fault::Pause => "pause",
            Fault::Delay(_) => "delay",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Delay(d) => write!(f, "delay={}", humantime::format_duration(*d)),
            other => f.write_str(other.as_str()),
        }
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fail" => Ok(Fault::Fail),
            "unavailable" => Ok(Fault::Unavailable),
            "pause" => Ok(Fault::Pause),
            other => match other.strip_prefix("delay=") {
                Some(d) => humantime::parse_duration(d)
                    .map(Fault::Delay)
                    .map_err(|e| format!("bad delay {d:?}: {e}")),
                None => Err(format!(
                    "unknown fault {other:?} (expected fail, unavailable, pause or delay=<duration>)"
                )),
            },
        }
    }
}

/// One rule: the `nth` call of `kind` (and, with `and_after`, every later
/// one) meets `fault`. Written `<kind>#<n>[+]:<fault>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The calls it targets.
    pub kind: CallKind,
    /// Which call, 1-based.
    pub nth: usize,
    /// Every call from the `nth` on, not only the `nth`.
    pub and_after: bool,
    /// What happens to it.
    pub fault: Fault,
}

impl Rule {
    /// The `nth` call of `kind` (1-based) meets `fault`.
    pub fn nth(kind: CallKind, nth: usize, fault: Fault) -> Self {
        Self {
            kind,
            nth,
            and_after: false,
            fault,
        }
    }

    /// Every call of `kind` from the `nth` (1-based) on meets `fault`.
    pub fn from_nth_on(kind: CallKind, nth: usize, fault: Fault) -> Self {
        Self {
            and_after: true,
            ..Self::nth(kind, nth, fault)
        }
    }

    /// Whether the `n`th call of `kind` meets this rule.
    pub fn matches(&self, kind: CallKind, n: usize) -> bool {
        self.kind == kind && (n == self.nth || (self.and_after && n > self.nth))
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plus = if self.and_after { "+" } else { "" };
        write!(f, "{}#{}{plus}:{}", self.kind, self.nth, self.fault)
    }
}

impl FromStr for Rule {
    type Err = String;

    /// Parses `<kind>#<n>[+]:<fail|unavailable|pause>`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = |why: String| format!("bad fault rule {s:?}: {why}");
        let (call, fault) = s
            .split_once(':')
            .ok_or_else(|| bad("expected <kind>#<n>[+]:<fail|unavailable|pause>".into()))?;
        let (kind, n) = call
            .split_once('#')
            .ok_or_else(|| bad(format!("expected <kind>#<n> before ':', got {call:?}")))?;
        let kind: CallKind = kind.trim().parse().map_err(bad)?;
        let (n, and_after) = match n.strip_suffix('+') {
            Some(n) => (n, true),
            None => (n, false),
        };
        let nth = n
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| bad(format!("call number {n:?} is not a whole number from 1 up")))?;
        let fault: Fault = fault.trim().parse().map_err(bad)?;
        Ok(Rule {
            kind,
            nth,
            and_after,
            fault,
        })
    }
}

/// Parses a comma-separated list of rules, e.g.
/// `rename#2:fail,start#1+:unavailable,stop#3:pause`. An empty (or blank)
/// spec has no rules.
///
/// # Errors
/// A message naming the first part that is not a rule.
pub fn parse_rules(spec: &str) -> std::result::Result<Vec<Rule>, String> {
    if spec.trim().is_empty() {
        return Ok(Vec::new());
    }
    spec.split(',')
        .map(|part| {
            let part = part.trim();
            if part.is_empty() {
                Err(format!(
                    "bad fault spec {spec:?}: an empty rule between commas"
                ))
            } else {
                part.parse()
            }
        })
        .collect()
}

#[derive(Debug, Default)]
struct Counts {
    rules: Vec<Rule>,
    calls: [usize; CallKind::ALL.len()],
}

/// A runtime that delegates to `inner`, counting calls and injecting the
/// faults its rules call for.
#[derive(Debug)]
pub struct Faulty<R> {
    inner: R,
    state: Mutex<Counts>,
}

impl<R> Faulty<R> {
    /// Wraps `inner` with `rules` (the first matching rule applies).
    pub fn new(inner: R, rules: Vec<Rule>) -> Self {
        Self {
            inner,
            state: Mutex::new(Counts {
                rules,
                ..Counts::default()
            }),
        }
    }

    /// Wraps `inner` with the rules of `spec` (see [`parse_rules`]).
    ///
    /// # Errors
    /// A message naming the part of `spec` that is not a rule.
    pub fn from_spec(inner: R, spec: &str) -> std::result::Result<Self, String> {
        Ok(Self::new(inner, parse_rules(spec)?))
    }

    /// The wrapped runtime.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// Unwraps.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// How many calls of `kind` went through the wrapper so far, faulted
    /// ones included.
    pub fn calls(&self, kind: CallKind) -> usize {
        self.lock().calls[kind.index()]
    }

    /// Adds a rule; it applies from the next call on (call numbers count
    /// from the wrapper's creation, not from the rule's).
    pub fn add_rule(&self, rule: Rule) {
        self.lock().rules.push(rule);
    }

    /// The rules in force.
    pub fn rules(&self) -> Vec<Rule> {
        self.lock().rules.clone()
    }

    /// Removes every rule (the counts stay).
    pub fn clear_rules(&self) {
        self.lock().rules.clear();
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // A test that panicked while holding the lock already failed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a call of `kind` and applies the first rule that matches it.
    async fn enter(&self, kind: CallKind) -> Result<()> {
        // The lock is released before anything is awaited.
        let (n, fault) = {
            let mut state = self.lock();
            state.calls[kind.index()] += 1;
            let n = state.calls[kind.index()];
            let fault = state
                .rules
                .iter()
                .find(|r| r.matches(kind, n))
                .map(|r| r.fault);
            (n, fault)
        };
        let label = format!("{kind}#{n}");
        match fault {
            None => Ok(()),
            Some(Fault::Fail) => Err(RuntimeError::Refused {
                status: 500,
                message: format!("injected fault: {label}"),
            }),
            Some(Fault::Unavailable) => Err(RuntimeError::Unavailable {
                endpoint: INJECTED_ENDPOINT.into(),
                message: format!("injected fault: {label}"),
            }),
            Some(Fault::Pause) => {
                eprintln!("berth: test hook: paused before {label}");
                tokio::time::sleep(PAUSE).await;
                Ok(())
            }
            Some(Fault::Delay(d)) => {
                eprintln!(
                    "berth: test hook: delaying {label} by {}",
                    humantime::format_duration(d)
                );
                tokio::time::sleep(d).await;
                Ok(())
            }
        }
    }
}

impl<R: Runtime> Runtime for Faulty<R> {
    async fn info(&self) -> Result<EngineInfo> {
        self.inner.info().await
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }

    async fn list(&self) -> Result<Vec<ContainerDetails>> {
        self.enter(CallKind::List).await?;
        self.inner.list().await
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerDetails>> {
        self.enter(CallKind::Inspect).await?;
        self.inner.inspect(id).await
    }

    async fn image(&self, reference: &str) -> Result<Option<ImageDetails>> {
        self.enter(CallKind::Image).await?;
        self.inner.image(reference).await
    }

    async fn registry_digest(&self, reference: &str) -> Result<String> {
        self.inner.registry_digest(reference).await
    }

    async fn networks(&self) -> Result<Vec<String>> {
        self.inner.networks().await
    }

    async fn pull(
        &self,
        reference: &str,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<()> {
        self.enter(CallKind::Pull).await?;
        self.inner.pull(reference, progress).await
    }

    async fn create(&self, request: &CreateRequest) -> Result<String> {
        self.enter(CallKind::Create).await?;
        self.inner.create(request).await
    }

    async fn start(&self, id: &str) -> Result<()> {
        self.enter(CallKind::Start).await?;
        self.inner.start(id).await
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<()> {
        self.enter(CallKind::Stop).await?;
        self.inner.stop(id, timeout).await
    }

    async fn kill(&self, id: &str, signal: &str) -> Result<()> {
        self.enter(CallKind::Kill).await?;
        self.inner.kill(id, signal).await
    }

    async fn unpause(&self, id: &str) -> Result<()> {
        self.enter(CallKind::Unpause).await?;
        self.inner.unpause(id).await
    }

    async fn rename(&self, id: &str, new_name: &str) -> Result<()> {
        self.enter(CallKind::Rename).await?;
        self.inner.rename(id, new_name).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.enter(CallKind::Remove).await?;
        self.inner.remove(id).await
    }

    async fn update(&self, id: &str, config: &ContainerConfig) -> Result<()> {
        self.enter(CallKind::Update).await?;
        self.inner.update(id, config).await
    }

    async fn logs(&self, id: &str) -> Result<String> {
        self.enter(CallKind::Logs).await?;
        self.inner.logs(id).await
    }

    async fn exec(&self, id: &str, cmd: &[String]) -> Result<ExecOutput> {
        self.enter(CallKind::Exec).await?;
        self.inner.exec(id, cmd).await
    }

    async fn host_path_exists(&self, path: &str) -> Option<bool> {
        self.inner.host_path_exists(path).await
    }

    fn events(&self) -> EventStream {
        self.inner.events()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::{Call, FakeRuntime};
    use crate::runtime::{ContainerState, Status};

    /// A fake engine with running containers named `names`.
    fn engine(names: &[&str]) -> FakeRuntime {
        let fake = FakeRuntime::new();
        for (i, name) in names.iter().enumerate() {
            fake.add_container(ContainerDetails {
                id: format!("{:064x}", i + 1),
                name: name.to_string(),
                state: ContainerState {
                    status: Status::Running,
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        fake
    }

    fn renames(fake: &FakeRuntime) -> usize {
        fake.calls()
            .iter()
            .filter(|c| matches!(c, Call::Rename(..)))
            .count()
    }

    #[tokio::test]
    async fn only_the_second_rename_fails() {
        let rt = Faulty::from_spec(engine(&["a", "b", "c"]), "rename#2:fail").unwrap();
        rt.rename("a", "a-old").await.expect("first rename");
        let err = rt.rename("b", "b-old").await.unwrap_err();
        assert_eq!(
            err,
            RuntimeError::Refused {
                status: 500,
                message: "injected fault: rename#2".into()
            }
        );
        rt.rename("c", "c-old").await.expect("third rename");
        assert_eq!(rt.calls(CallKind::Rename), 3);
        assert_eq!(
            renames(rt.inner()),
            2,
            "the failed call never reached the engine"
        );
        assert!(rt.inner().container("b").is_some());
        assert!(rt.inner().container("c-old").is_some());
    }

    #[tokio::test]
    async fn a_plus_rule_keeps_failing_from_its_call_on() {
        let rt = Faulty::from_spec(engine(&["a"]), "start#2+:unavailable").unwrap();
        rt.start("a").await.expect("first start");
        for n in 2..=5 {
            let err = rt.start("a").await.unwrap_err();
            assert!(
                matches!(&err, RuntimeError::Unavailable { message, .. }
                    if *message == format!("injected fault: start#{n}")),
                "{err:?}"
            );
        }
        assert_eq!(rt.calls(CallKind::Start), 5);
    }

    #[tokio::test]
    async fn calls_are_counted_per_kind_and_other_kinds_pass() {
        let rt = Faulty::from_spec(engine(&["a"]), "rename#1:fail").unwrap();
        assert!(rt.inspect("a").await.unwrap().is_some());
        assert_eq!(rt.list().await.unwrap().len(), 1);
        assert!(rt.image("nothing:1").await.unwrap().is_none());
        rt.stop("a", Duration::ZERO).await.unwrap();
        assert!(rt.rename("a", "b").await.is_err());
        assert_eq!(rt.calls(CallKind::Inspect), 1);
        assert_eq!(rt.calls(CallKind::List), 1);
        assert_eq!(rt.calls(CallKind::Image), 1);
        assert_eq!(rt.calls(CallKind::Stop), 1);
        assert_eq!(rt.calls(CallKind::Rename), 1);
        assert_eq!(rt.calls(CallKind::Start), 0);
    }

    #[tokio::test]
    async fn a_rule_added_later_counts_calls_from_the_start() {
        let rt = Faulty::new(engine(&["a"]), Vec::new());
        rt.stop("a", Duration::ZERO).await.unwrap();
        rt.add_rule(Rule::nth(CallKind::Stop, 2, Fault::Fail));
        assert!(rt.stop("a", Duration::ZERO).await.is_err());
        rt.stop("a", Duration::ZERO).await.unwrap();
        rt.add_rule(Rule::from_nth_on(CallKind::Stop, 1, Fault::Unavailable));
        assert!(matches!(
            rt.stop("a", Duration::ZERO).await,
            Err(RuntimeError::Unavailable { .. })
        ));
        rt.clear_rules();
        rt.stop("a", Duration::ZERO).await.unwrap();
        assert_eq!(rt.calls(CallKind::Stop), 5);
    }

    #[tokio::test]
    async fn the_first_matching_rule_applies() {
        let rt = Faulty::from_spec(engine(&["a"]), "kill#1:unavailable,kill#1+:fail").unwrap();
        assert!(matches!(
            rt.kill("a", "SIGKILL").await,
            Err(RuntimeError::Unavailable { .. })
        ));
        assert!(matches!(
            rt.kill("a", "SIGKILL").await,
            Err(RuntimeError::Refused { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_blocks_the_call_before_it_reaches_the_engine() {
        let rt = Faulty::from_spec(engine(&["a", "b"]), "rename#2:pause").unwrap();
        rt.rename("a", "a-old").await.unwrap();
        let blocked = tokio::time::timeout(Duration::from_secs(600), rt.rename("b", "b-old")).await;
        assert!(blocked.is_err(), "the paused call returned: {blocked:?}");
        assert_eq!(rt.calls(CallKind::Rename), 2);
        assert_eq!(renames(rt.inner()), 1, "the paused call reached the engine");
        assert!(rt.inner().container("b").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_delayed_call_goes_ahead_after_its_delay() {
        let rt = Faulty::from_spec(engine(&["a"]), "remove#1:delay=10s").unwrap();
        let started = tokio::time::Instant::now();
        rt.remove("a").await.expect("remove after the delay");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited < PAUSE,
            "{waited:?}"
        );
        assert!(rt.inner().container("a").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_call_goes_ahead_after_the_pause() {
        let rt = Faulty::from_spec(engine(&["a"]), "remove#1:pause").unwrap();
        let started = tokio::time::Instant::now();
        rt.remove("a").await.expect("remove after the pause");
        assert!(started.elapsed() >= PAUSE);
        assert!(rt.inner().container("a").is_none());
    }

    #[test]
    fn specs_parse_and_print_back() {
        let spec =
            "rename#2:fail,start#1+:unavailable,stop#3:pause,pull#10+:fail,start#2:delay=15s";
        let rules = parse_rules(spec).unwrap();
        assert_eq!(
            rules[1],
            Rule::from_nth_on(CallKind::Start, 1, Fault::Unavailable)
        );
        let printed: Vec<String> = rules.iter().map(Rule::to_string).collect();
        assert_eq!(printed.join(","), spec);
        assert_eq!(
            parse_rules(" rename#2:fail , image#1:pause ")
                .unwrap()
                .len(),
            2
        );
        assert!(parse_rules("").unwrap().is_empty());
        for kind in CallKind::ALL {
            assert_eq!(kind.as_str().parse::<CallKind>(), Ok(kind));
        }
    }

    #[test]
    fn parse_errors_name_the_bad_part() {
        for (spec, expected) in [
            (
                "rename#2:fail,renam#1:fail",
                "\"renam#1:fail\": unknown call kind \"renam\"",
            ),
            ("rename#0:fail", "\"rename#0:fail\": call number \"0\""),
            ("rename#x:fail", "call number \"x\""),
            ("rename#:fail", "call number \"\""),
            ("rename#2++:fail", "call number \"2+\""),
            (
                "rename2:fail",
                "expected <kind>#<n> before ':', got \"rename2\"",
            ),
            ("rename#2", "\"rename#2\": expected <kind>#<n>[+]:"),
            ("rename#2:explode", "unknown fault \"explode\""),
            (
                "rename#2:fail,,start#1:fail",
                "an empty rule between commas",
            ),
        ] {
            let err = parse_rules(spec).unwrap_err();
            assert!(err.contains(expected), "{spec}: {err}");
        }
        let err = Faulty::from_spec(FakeRuntime::new(), "start#1:nope")
            .map(|_| ())
            .unwrap_err();
        assert!(err.contains("start#1:nope"), "{err}");
    }
}
