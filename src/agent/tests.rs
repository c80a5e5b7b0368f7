//! Unit tests of the agent loop on the in-memory engine.
//!
//! Each test drives [`run`] in its own task, feeding it inputs the way the
//! sources do and reading what it publishes the way the sinks do. Most run on
//! paused tokio time: intervals, debounce, shutdown grace, back-off, the
//! readiness gate and the executor's hour-long test pause all count in
//! tokio's clock, so they pass as soon as nothing else can happen, and the
//! tests are instant and their timings exact. Two back-off tests also run
//! on real time, to show the timing holds outside a paused clock.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::FutureExt;

use super::*;
use crate::execute::PausePoint;
use crate::journal::{Effect, Intent, Journal};
use crate::runtime::fake::{Call, FakeRuntime, EXIT_LABEL};
use crate::test_support::{document_in, service_image as image};

const ONE: &str = "127.0.0.1:5000/berth-test/service:1";
const TWO: &str = "127.0.0.1:5000/berth-test/service:2";

/// How long a test waits for anything on paused time (the executor's test
/// pause is one hour).
const VIRTUAL: Duration = Duration::from_secs(10 * 3600);
/// How long a test waits for anything on real time.
const REAL: Duration = Duration::from_secs(5);

fn document(activity: &str, components: &[(&str, &[(&str, &str)])]) -> String {
    document_in(spec::validate::DEFAULT_DOMAIN, activity, components)
}

/// Quick, but otherwise as shipped.
fn options() -> AgentOptions {
    AgentOptions {
        execute: ExecuteOptions {
            min_ready: Duration::ZERO,
            ..ExecuteOptions::default()
        },
        reconcile_interval: Duration::from_secs(60),
        debounce: Duration::from_secs(1),
        backoff: backoff::Policy {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(60),
            healthy_after: Duration::from_secs(300),
        },
        shutdown_grace: Duration::from_secs(600),
        ..AgentOptions::default()
    }
}

fn paused_at_activating(options: AgentOptions) -> AgentOptions {
    AgentOptions {
        execute: ExecuteOptions {
            pause_at: Some(PausePoint::Activating),
            ..options.execute
        },
        ..options
    }
}

fn running(rt: &FakeRuntime, name: &str) -> bool {
    rt.container(name)
        .is_some_and(|c| c.state.status == crate::runtime::Status::Running)
}

fn names(rt: &FakeRuntime) -> Vec<String> {
    let mut names: Vec<String> = rt
        .list()
        .now_or_never()
        .expect("the fake answers at once")
        .expect("the fake lists")
        .into_iter()
        .map(|c| c.name)
        .collect();
    names.sort();
    names
}

fn creates_of(rt: &FakeRuntime, name: &str) -> usize {
    let temporary = format!("{name}{NEW_SUFFIX}");
    rt.calls()
        .iter()
        .filter(|c| matches!(c, Call::Create(n) if *n == temporary || n == name))
        .count()
}

fn feedback(seen: &[Outbound]) -> Vec<&Feedback> {
    seen.iter()
        .filter_map(|m| match m {
            Outbound::Feedback(f) => Some(f),
            Outbound::CurrentState(_) | Outbound::Upgrades(_) => None,
        })
        .collect()
}

fn feedback_of<'a>(seen: &'a [Outbound], activity: &str) -> Vec<&'a Feedback> {
    feedback(seen)
        .into_iter()
        .filter(|f| f.activity_id == activity)
        .collect()
}

fn statuses(seen: &[Outbound], activity: &str) -> Vec<Status> {
    feedback_of(seen, activity)
        .iter()
        .map(|f| f.payload.status)
        .collect()
}

/// Where in `seen` the first message matching `what` is.
fn position(seen: &[Outbound], what: impl Fn(&Outbound) -> bool) -> usize {
    seen.iter()
        .position(what)
        .unwrap_or_else(|| panic!("not published: {}", summary(seen)))
}

fn is_feedback(m: &Outbound, activity: &str, status: Status) -> bool {
    matches!(m, Outbound::Feedback(f) if f.activity_id == activity && f.payload.status == status)
}

fn is_reconcile(f: &Feedback) -> bool {
    f.activity_id.starts_with("reconcile-")
}

/// Whether the activity did something to `name` (a kept container stays
/// `IDENTIFIED`; an ignored one is not listed).
fn acted_on(f: &Feedback, name: &str) -> bool {
    let id = format!("{}:{name}", spec::validate::DEFAULT_DOMAIN);
    f.payload
        .actions
        .iter()
        .any(|a| a.component.id == id && a.status != ActionStatus::Identified)
}

fn message(f: &Feedback) -> &str {
    f.payload.message.as_deref().unwrap_or("")
}

/// One line per message, for failure reports.
fn summary(seen: &[Outbound]) -> String {
    let lines: Vec<String> = seen
        .iter()
        .map(|m| match m {
            Outbound::Feedback(f) => format!(
                "feedback {} {:?} {}",
                f.activity_id,
                f.payload.status,
                message(f)
            ),
            Outbound::CurrentState(s) => format!("current state {}", s.activity_id),
            Outbound::Upgrades(r) => format!("upgrades {} available", r.available),
        })
        .collect();
    format!("\n  {}", lines.join("\n  "))
}

/// Asserts `wanted` occur in `statuses` in this order.
fn assert_in_order(statuses: &[Status], wanted: &[Status]) {
    let mut from = 0;
    for w in wanted {
        match statuses[from..].iter().position(|s| s == w) {
            Some(i) => from += i + 1,
            None => panic!("{w:?} missing or out of order in {statuses:?}"),
        }
    }
}

/// The ends a source and a sink hold while the loop runs.
struct Agent {
    rt: Arc<FakeRuntime>,
    tx: mpsc::UnboundedSender<Input>,
    out: mpsc::UnboundedReceiver<Outbound>,
    /// Everything published so far, in order.
    seen: Vec<Outbound>,
    limit: Duration,
}

impl Agent {
    fn send(&self, input: Input) {
        self.tx.send(input).expect("the loop takes inputs");
    }

    /// Sends a document as MQTT does; the receiver fires on acknowledgement.
    fn offer(&self, text: &str) -> oneshot::Receiver<()> {
        let (ack, acked) = oneshot::channel();
        self.send(Input::Document(Incoming::new(
            Origin::Mqtt,
            Body::Text(text.to_string()),
            Some(ack),
        )));
        acked
    }

    async fn acked(&self, acked: oneshot::Receiver<()>) {
        tokio::time::timeout(self.limit, acked)
            .await
            .expect("acknowledged in time")
            .expect("acknowledged, not dropped");
    }

    /// Reads what the loop publishes until `pick` finds something.
    async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Outbound) -> Option<T>) -> T {
        let deadline = Instant::now() + self.limit;
        loop {
            match tokio::time::timeout_at(deadline, self.out.recv()).await {
                Ok(Some(m)) => {
                    let found = pick(&m);
                    self.seen.push(m);
                    if let Some(found) = found {
                        return found;
                    }
                }
                Ok(None) => panic!("the loop stopped publishing before {what}"),
                Err(_) => panic!(
                    "no {what} within {:?}; published:{}",
                    self.limit,
                    summary(&self.seen)
                ),
            }
        }
    }

    async fn feedback_until(&mut self, what: &str, wanted: impl Fn(&Feedback) -> bool) -> Feedback {
        self.wait_for(what, |m| match m {
            Outbound::Feedback(f) if wanted(f) => Some(f.clone()),
            _ => None,
        })
        .await
    }

    /// The final feedback of `activity`.
    async fn finished(&mut self, activity: &str) -> Feedback {
        self.feedback_until(&format!("final feedback for {activity}"), |f| {
            f.activity_id == activity && f.payload.status.is_final()
        })
        .await
    }

    async fn current_state(&mut self, wanted: impl Fn(&CurrentState) -> bool) -> CurrentState {
        self.wait_for("current state", |m| match m {
            Outbound::CurrentState(s) if wanted(s) => Some(s.clone()),
            _ => None,
        })
        .await
    }

    /// Until the loop's engine watcher listens (events before that are lost).
    async fn watching(&self) {
        // A tick of tokio's clock, not a bare yield: start-up recovery does
        // its file work on the blocking pool, and a paused clock only moves
        // once that is done, so the loop gets there before the ticks run out
        // however slow the machine.
        for _ in 0..1000 {
            if self.rt.watchers() > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("the loop never watched the engine's events");
    }
}

/// How a session ended.
struct Ended<T> {
    result: Result<(), AgentError>,
    value: T,
    /// Everything published, in order, until the loop was gone.
    seen: Vec<Outbound>,
    /// How long `run` took to return after `Input::Shutdown`.
    stopping: Duration,
}

/// An engine whose registry has both images, and a state directory.
struct Fixture {
    rt: Arc<FakeRuntime>,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let rt = FakeRuntime::new();
        rt.add_registry_image(ONE, image("1"));
        rt.add_registry_image(TWO, image("2"));
        Self {
            rt: Arc::new(rt),
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    fn state(&self) -> StateDir {
        StateDir::open(self.dir.path()).expect("state directory")
    }

    /// Brings the engine to `text` as `berth apply` would, before the loop.
    async fn applied(&self, text: &str) {
        let desired = spec::parse(text, &spec::Options::default())
            .expect("a valid document")
            .desired;
        let status = execute::apply(
            &*self.rt,
            &self.state(),
            &desired,
            &plan::PlanOptions::default(),
            &options().execute,
            &mut |_: Feedback| {},
        )
        .await
        .expect("state directory");
        assert_eq!(status, Status::Completed);
    }

    async fn run<T>(
        &self,
        options: AgentOptions,
        body: impl AsyncFnOnce(&mut Agent) -> T,
    ) -> Ended<T> {
        self.session(options, &Silent, VIRTUAL, body).await
    }

    /// Runs the loop and `body` side by side, then shuts the loop down and
    /// collects what it published.
    async fn session<T>(
        &self,
        options: AgentOptions,
        notify: &dyn Notify,
        limit: Duration,
        body: impl AsyncFnOnce(&mut Agent) -> T,
    ) -> Ended<T> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let mut agent = Agent {
            rt: self.rt.clone(),
            tx: tx.clone(),
            out: out_rx,
            seen: Vec::new(),
            limit,
        };
        let looping = run(
            self.rt.clone(),
            self.state(),
            options,
            tx,
            rx,
            Some(out_tx),
            notify,
        );
        tokio::pin!(looping);
        let value = tokio::select! {
            biased;
            r = &mut looping => panic!("the loop stopped by itself: {r:?}"),
            v = body(&mut agent) => v,
        };
        // Refused when the body already shut the loop down.
        let _ = agent.tx.send(Input::Shutdown);
        let since = Instant::now();
        let result = tokio::time::timeout(limit, looping)
            .await
            .expect("the loop stops");
        let stopping = since.elapsed();
        // The channel closes once the loop and its reporter are gone.
        let drained = tokio::time::timeout(limit, async {
            while let Some(m) = agent.out.recv().await {
                agent.seen.push(m);
            }
        })
        .await;
        assert!(drained.is_ok(), "the loop's tasks outlived it");
        Ended {
            result,
            value,
            seen: agent.seen,
            stopping,
        }
    }
}

/// Records what the engine held when the loop said it was ready.
struct Startup {
    rt: Arc<FakeRuntime>,
    ready: tokio::sync::watch::Sender<Option<Vec<String>>>,
}

impl Startup {
    fn new(rt: &Arc<FakeRuntime>) -> Self {
        Self {
            rt: rt.clone(),
            ready: tokio::sync::watch::channel(None).0,
        }
    }

    /// The containers there were at `ready`, once it came.
    async fn ready(&self) -> Vec<String> {
        let mut rx = self.ready.subscribe();
        let seen = tokio::time::timeout(VIRTUAL, rx.wait_for(Option::is_some))
            .await
            .expect("ready in time")
            .expect("the sender lives");
        seen.clone().unwrap_or_default()
    }
}

impl Notify for Startup {
    fn ready(&self) {
        self.ready.send_replace(Some(names(&self.rt)));
    }
    fn alive(&self) {}
    fn status(&self, _: &str) {}
    fn stopping(&self) {}
    fn interval(&self) -> Option<Duration> {
        None
    }
}

/// Whether some file in `dir` holds exactly `text`.
fn holds(dir: &Path, text: &str) -> bool {
    std::fs::read_dir(dir)
        .expect("state directory")
        .filter_map(Result::ok)
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t == text))
}

/// A waker that looks into the state directory at the very moment the
/// acknowledgement is sent (the sender wakes the receiver synchronously).
struct PersistedWhenAcked {
    dir: PathBuf,
    text: String,
    answer: Mutex<Option<bool>>,
}

impl Wake for PersistedWhenAcked {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let persisted = holds(&self.dir, &self.text);
        self.answer
            .lock()
            .expect("not poisoned")
            .get_or_insert(persisted);
    }
}

#[tokio::test(start_paused = true)]
async fn an_accepted_document_runs_to_completed_then_its_current_state_is_published() {
    let f = Fixture::new();
    let text = document(
        "a1",
        &[("web", &[("image", ONE)]), ("db", &[("image", TWO)])],
    );
    let ended = f
        .run(options(), async |a: &mut Agent| {
            a.offer(&text);
            a.finished("a1").await;
            a.current_state(|s| s.activity_id == "a1").await
        })
        .await;
    ended.result.unwrap();

    let s = statuses(&ended.seen, "a1");
    assert_eq!(s[..2], [Status::Identifying, Status::Identified], "{s:?}");
    assert_in_order(
        &s,
        &[
            Status::Downloading,
            Status::DownloadSuccess,
            Status::Updating,
            Status::UpdateSuccess,
            Status::Activating,
            Status::ActivationSuccess,
            Status::Cleanup,
            Status::CleanupSuccess,
            Status::Completed,
        ],
    );
    assert_eq!(s.last(), Some(&Status::Completed));
    assert!(running(&f.rt, "web") && running(&f.rt, "db"));

    let completed = position(&ended.seen, |m| is_feedback(m, "a1", Status::Completed));
    let reported = position(
        &ended.seen,
        |m| matches!(m, Outbound::CurrentState(s) if s.activity_id == "a1"),
    );
    assert!(completed < reported, "{}", summary(&ended.seen));
    let nodes: Vec<&str> = ended
        .value
        .payload
        .software_nodes
        .iter()
        .map(|n| n.id.as_str())
        .collect();
    assert!(
        nodes.contains(&"containers:web") && nodes.contains(&"containers:db"),
        "{nodes:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_broken_document_gets_one_identification_failed_naming_the_problem_and_changes_nothing() {
    let f = Fixture::new();
    let unknown_key = document("a-key", &[("web", &[("image", ONE), ("imagee", ONE)])]);
    let wrong_domain = document_in("apps", "a-domain", &[("web", &[("image", ONE)])]);
    let cases = [
        ("a-key", unknown_key, ["\"imagee\"", "is not a known key"]),
        (
            "",
            "not json at all".to_string(),
            ["document", "is not valid JSON"],
        ),
        (
            "a-domain",
            wrong_domain,
            ["\"apps\"", "is not a domain berth serves"],
        ),
    ];
    let ended = f
        .run(options(), async |a: &mut Agent| {
            for (activity, text, _) in &cases {
                let acked = a.offer(text);
                a.acked(acked).await;
                a.finished(activity).await;
            }
        })
        .await;
    ended.result.unwrap();

    assert_eq!(
        feedback(&ended.seen).len(),
        cases.len(),
        "{}",
        summary(&ended.seen)
    );
    for (activity, _, words) in &cases {
        let fb = feedback_of(&ended.seen, activity);
        assert_eq!(fb.len(), 1, "{activity}: {}", summary(&ended.seen));
        assert_eq!(fb[0].payload.status, Status::IdentificationFailed);
        for w in words {
            assert!(
                message(fb[0]).contains(w),
                "{activity}: {:?} lacks {w}",
                message(fb[0])
            );
        }
    }
    assert_eq!(f.rt.calls(), []);
    assert_eq!(f.state().load_desired().unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn a_document_its_source_refused_gets_identification_failed_with_the_sources_errors() {
    let f = Fixture::new();
    let errors = vec![
        "the message is 2000000 bytes; the limit is 1048576".to_string(),
        "second problem".to_string(),
    ];
    let refused = Body::Refused {
        activity_id: "big-1".into(),
        errors: errors.clone(),
    };
    let ended = f
        .run(options(), async |a: &mut Agent| {
            let (ack, acked) = oneshot::channel();
            a.send(Input::Document(Incoming::new(
                Origin::Mqtt,
                refused,
                Some(ack),
            )));
            a.acked(acked).await;
            a.finished("big-1").await
        })
        .await;
    ended.result.unwrap();

    assert_eq!(ended.value.payload.status, Status::IdentificationFailed);
    for e in &errors {
        assert!(
            message(&ended.value).contains(e),
            "{:?}",
            message(&ended.value)
        );
    }
    assert_eq!(feedback(&ended.seen).len(), 1, "{}", summary(&ended.seen));
    assert_eq!(f.rt.calls(), []);
    assert_eq!(f.state().load_desired().unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn documents_arriving_during_an_activity_supersede_each_other_and_the_last_runs_after_it() {
    let f = Fixture::new();
    // Every activity waits an hour in ACTIVATING, so the others arrive
    // while the first runs.
    let docs: Vec<String> = (1..=4)
        .map(|i| {
            document(
                &format!("a{i}"),
                &[("web", &[("image", ONE), ("env", &format!("X={i}"))])],
            )
        })
        .collect();
    let ended = f
        .run(paused_at_activating(options()), async |a: &mut Agent| {
            for d in &docs {
                a.offer(d);
            }
            a.finished("a4").await
        })
        .await;
    ended.result.unwrap();
    let seen = &ended.seen;

    for (old, newer) in [("a2", "a3"), ("a3", "a4")] {
        let fb = feedback_of(seen, old);
        assert_eq!(fb.len(), 1, "{old}: {}", summary(seen));
        assert_eq!(fb[0].payload.status, Status::Superseded);
        assert!(message(fb[0]).contains(newer), "{:?}", message(fb[0]));
    }
    let first = statuses(seen, "a1");
    assert_eq!(first.first(), Some(&Status::Identifying), "{first:?}");
    assert_eq!(first.last(), Some(&Status::Completed), "{first:?}");
    assert!(
        !first
            .iter()
            .any(|s| matches!(s, Status::Superseded | Status::Incomplete)),
        "{first:?}"
    );
    assert_eq!(ended.value.payload.status, Status::Completed);
    let first_ended = position(seen, |m| is_feedback(m, "a1", Status::Completed));
    let last_began = position(seen, |m| is_feedback(m, "a4", Status::Identifying));
    assert!(first_ended < last_began, "{}", summary(seen));
    let web = f.rt.container("web").expect("web exists");
    assert!(web.env.contains(&"X=4".to_string()), "{:?}", web.env);
}

#[tokio::test(start_paused = true)]
async fn an_accepted_document_is_persisted_before_it_is_acknowledged() {
    let f = Fixture::new();
    let text = document("a1", &[("web", &[("image", ONE)])]);
    let probe = Arc::new(PersistedWhenAcked {
        dir: f.dir.path().to_path_buf(),
        text: text.clone(),
        answer: Mutex::new(None),
    });
    let ended = f
        .run(options(), async |a: &mut Agent| {
            let (ack, mut acked) = oneshot::channel();
            let waker = Waker::from(probe.clone());
            let polled = Pin::new(&mut acked).poll(&mut Context::from_waker(&waker));
            assert!(polled.is_pending());
            a.send(Input::Document(Incoming::new(
                Origin::Mqtt,
                Body::Text(text.clone()),
                Some(ack),
            )));
            a.finished("a1").await;
            matches!(
                Pin::new(&mut acked).poll(&mut Context::from_waker(Waker::noop())),
                Poll::Ready(Ok(()))
            )
        })
        .await;
    ended.result.unwrap();

    assert!(ended.value, "the document was never acknowledged");
    assert_eq!(
        *probe.answer.lock().unwrap(),
        Some(true),
        "acknowledged before it was persisted"
    );
    assert_eq!(f.state().load_desired().unwrap(), Some(text));
}

#[tokio::test(start_paused = true)]
async fn the_persisted_document_is_enforced_at_start_up_without_any_input() {
    let f = Fixture::new();
    let text = document(
        "a1",
        &[("web", &[("image", ONE)]), ("db", &[("image", ONE)])],
    );
    f.applied(&text).await;
    f.state().save_desired(&text).unwrap();
    let db = f.rt.container("db").unwrap().id;
    f.rt.remove(&db).await.unwrap();
    let startup = Startup::new(&f.rt);

    let ended = f
        .session(options(), &startup, VIRTUAL, async |a: &mut Agent| {
            let fb = a
                .feedback_until("the start-up reconcile", |f| {
                    is_reconcile(f) && f.payload.status.is_final()
                })
                .await;
            (fb, startup.ready().await)
        })
        .await;
    ended.result.unwrap();

    let (fb, at_ready) = ended.value;
    assert_eq!(
        fb.payload.status,
        Status::Completed,
        "{}",
        summary(&ended.seen)
    );
    assert!(acted_on(&fb, "db") && !acted_on(&fb, "web"), "{fb:?}");
    assert!(running(&f.rt, "db") && running(&f.rt, "web"));
    assert_eq!(
        at_ready,
        ["db", "web"],
        "ready before the document was enforced"
    );
}

#[tokio::test(start_paused = true)]
async fn start_up_is_silent_when_the_engine_already_matches_the_persisted_document() {
    let f = Fixture::new();
    let text = document("a1", &[("web", &[("image", ONE)])]);
    f.applied(&text).await;
    f.state().save_desired(&text).unwrap();
    let calls = f.rt.calls();
    let startup = Startup::new(&f.rt);

    let ended = f
        .session(options(), &startup, VIRTUAL, async |_: &mut Agent| {
            startup.ready().await
        })
        .await;
    ended.result.unwrap();

    assert_eq!(ended.value, ["web"]);
    assert!(feedback(&ended.seen).is_empty(), "{}", summary(&ended.seen));
    assert_eq!(f.rt.calls(), calls, "the engine was touched");
}

#[tokio::test(start_paused = true)]
async fn a_container_removed_by_hand_is_recreated_within_the_reconcile_interval() {
    let f = Fixture::new();
    let interval = Duration::from_secs(30);
    let text = document(
        "a1",
        &[("web", &[("image", ONE)]), ("db", &[("image", ONE)])],
    );
    let ended = f
        .run(
            AgentOptions {
                reconcile_interval: interval,
                ..options()
            },
            async |a: &mut Agent| {
                a.offer(&text);
                a.finished("a1").await;
                let db = a.rt.container("db").unwrap().id;
                let web = a.rt.container("web").unwrap().id;
                a.rt.remove(&web).await.unwrap();
                let since = Instant::now();
                let fb = a
                    .feedback_until("drift correction", |f| {
                        is_reconcile(f) && f.payload.status.is_final()
                    })
                    .await;
                (fb, since.elapsed(), db)
            },
        )
        .await;
    ended.result.unwrap();

    let (fb, took, db) = ended.value;
    assert_eq!(
        fb.payload.status,
        Status::Completed,
        "{}",
        summary(&ended.seen)
    );
    assert!(took <= interval, "took {took:?}");
    assert!(acted_on(&fb, "web") && !acted_on(&fb, "db"), "{fb:?}");
    assert!(running(&f.rt, "web"));
    assert_eq!(f.rt.container("db").unwrap().id, db, "db was touched");
}

#[tokio::test(start_paused = true)]
async fn an_engine_event_for_a_managed_container_triggers_a_reconcile_after_the_repair_delay() {
    let f = Fixture::new();
    let interval = Duration::from_secs(3600);
    let debounce = Duration::from_secs(2);
    let text = document("a1", &[("web", &[("image", ONE)])]);
    let ended = f
        .run(
            AgentOptions {
                reconcile_interval: interval,
                debounce,
                ..options()
            },
            async |a: &mut Agent| {
                a.offer(&text);
                a.finished("a1").await;
                a.watching().await;
                let web = a.rt.container("web").unwrap().id;
                a.rt.remove(&web).await.unwrap();
                a.rt.emit(Event {
                    action: "destroy".into(),
                    id: web,
                    name: "web".into(),
                });
                let since = Instant::now();
                let fb = a
                    .feedback_until("drift correction", |f| {
                        is_reconcile(f) && f.payload.status.is_final()
                    })
                    .await;
                (fb, since.elapsed())
            },
        )
        .await;
    ended.result.unwrap();

    let (fb, took) = ended.value;
    assert_eq!(
        fb.payload.status,
        Status::Completed,
        "{}",
        summary(&ended.seen)
    );
    // The repair waits for a burst of events to settle, then goes ahead
    // sooner than the (longer) report debounce (issue 25).
    assert!(
        took >= super::REPAIR_DELAY,
        "did not wait for the events to settle: {took:?}"
    );
    assert!(
        took < debounce,
        "waited for the report debounce, not the repair delay: {took:?}"
    );
    assert!(running(&f.rt, "web"));
}

#[tokio::test(start_paused = true)]
async fn a_zero_reconcile_interval_disables_drift_correction() {
    let f = Fixture::new();
    let text = document("a1", &[("web", &[("image", ONE)])]);
    let ended = f
        .run(
            AgentOptions {
                reconcile_interval: Duration::ZERO,
                ..options()
            },
            async |a: &mut Agent| {
                a.offer(&text);
                a.finished("a1").await;
                a.watching().await;
                let web = a.rt.container("web").unwrap().id;
                a.rt.remove(&web).await.unwrap();
                a.rt.emit(Event {
                    action: "destroy".into(),
                    id: web,
                    name: "web".into(),
                });
                tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
            },
        )
        .await;
    ended.result.unwrap();

    assert_eq!(f.rt.container("web"), None, "web was put back");
    assert_eq!(creates_of(&f.rt, "web"), 1);
    assert!(
        !feedback(&ended.seen).iter().any(|f| is_reconcile(f)),
        "{}",
        summary(&ended.seen)
    );
}

#[tokio::test]
async fn a_container_that_keeps_failing_is_backed_off_while_the_others_are_still_corrected() {
    // Real time, on purpose: the same back-off on a clock that is not paused.
    let f = Fixture::new();
    let base = Duration::from_millis(100);
    let options = AgentOptions {
        reconcile_interval: Duration::from_millis(20),
        debounce: Duration::from_millis(10),
        backoff: backoff::Policy {
            base,
            cap: Duration::from_secs(10),
            healthy_after: Duration::from_secs(60),
        },
        ..options()
    };
    let crash = format!("{EXIT_LABEL}=1");
    let healthy = document("a1", &[("good", &[("image", ONE)])]);
    let with_crasher = document(
        "a2",
        &[
            ("good", &[("image", ONE)]),
            ("bad", &[("image", ONE), ("label", &crash)]),
        ],
    );
    let ended = f
        .session(options, &Silent, REAL, async |a: &mut Agent| {
            a.offer(&healthy);
            a.finished("a1").await;
            a.offer(&with_crasher);
            let mut failed_at = Vec::new();
            let mut put_back = None;
            while failed_at.len() < 4 {
                let fb = a
                    .feedback_until("an attempt on bad", |f| {
                        f.payload.status == Status::Incomplete && message(f).contains("bad")
                    })
                    .await;
                failed_at.push(Instant::now());
                if failed_at.len() == 2 {
                    // bad now waits 2 x base; good goes meanwhile.
                    let good = a.rt.container("good").unwrap().id;
                    a.rt.remove(&good).await.unwrap();
                    let attempts = creates_of(&a.rt, "bad");
                    let fb = a
                        .feedback_until("good put back", |f| {
                            is_reconcile(f) && f.payload.status.is_final() && acted_on(f, "good")
                        })
                        .await;
                    put_back = Some((fb, creates_of(&a.rt, "bad") - attempts));
                }
                assert!(!acted_on(&fb, "good"), "{fb:?}");
            }
            (failed_at, put_back.expect("good was removed"))
        })
        .await;
    ended.result.unwrap();

    let (failed_at, (put_back, bad_meanwhile)) = ended.value;
    assert_eq!(put_back.payload.status, Status::Completed, "{put_back:?}");
    assert!(
        !acted_on(&put_back, "bad"),
        "bad was not left alone: {put_back:?}"
    );
    assert_eq!(bad_meanwhile, 0, "bad was retried before good was put back");
    assert!(running(&f.rt, "good"));
    let gaps: Vec<Duration> = failed_at.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, gap) in gaps.iter().enumerate() {
        let wait = base * 2u32.pow(i as u32);
        // A timer never fires early; allow for rounding to the millisecond.
        assert!(
            *gap + Duration::from_millis(2) >= wait,
            "attempt {} came {gap:?} after the previous one, before its back-off of {wait:?}: {gaps:?}",
            i + 2
        );
    }
}

#[tokio::test(start_paused = true)]
async fn current_state_requests_and_connecting_publish_the_current_state() {
    let f = Fixture::new();
    let text = document("a1", &[("web", &[("image", ONE)])]);
    let ended = f
        .run(options(), async |a: &mut Agent| {
            a.offer(&text);
            a.finished("a1").await;
            a.send(Input::CurrentStateGet {
                activity_id: "x".into(),
                credit: Credit::default(),
            });
            let asked = a.current_state(|s| s.activity_id == "x").await;
            a.send(Input::Connected);
            let connected = a
                .current_state(|s| s.activity_id.starts_with("initial-current-state-"))
                .await;
            (asked, connected)
        })
        .await;
    ended.result.unwrap();

    for state in [&ended.value.0, &ended.value.1] {
        assert!(
            state
                .payload
                .software_nodes
                .iter()
                .any(|n| n.id == "containers:web"),
            "{state:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_idle_returns_at_once() {
    let f = Fixture::new();
    let text = document("a1", &[("web", &[("image", ONE)])]);
    let ended = f
        .run(options(), async |a: &mut Agent| {
            a.offer(&text);
            a.finished("a1").await;
        })
        .await;
    ended.result.unwrap();
    assert!(
        ended.stopping < Duration::from_secs(1),
        "took {:?}",
        ended.stopping
    );
    assert!(running(&f.rt, "web"), "shutdown touched the engine");
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_an_activity_waits_for_it_within_the_grace() {
    let f = Fixture::new();
    let grace = Duration::from_secs(2 * 3600);
    let text = document("a1", &[("web", &[("image", ONE)])]);
    let ended = f
        .run(
            AgentOptions {
                shutdown_grace: grace,
                ..paused_at_activating(options())
            },
            async |a: &mut Agent| {
                a.offer(&text);
                a.feedback_until("ACTIVATING", |f| f.payload.status == Status::Activating)
                    .await;
            },
        )
        .await;
    ended.result.unwrap();

    // The executor's test pause lasts an hour.
    assert!(
        ended.stopping >= Duration::from_secs(3600),
        "took {:?}",
        ended.stopping
    );
    assert!(ended.stopping < grace, "took {:?}", ended.stopping);
    assert_eq!(
        statuses(&ended.seen, "a1").last(),
        Some(&Status::Completed),
        "{}",
        summary(&ended.seen)
    );
    assert!(running(&f.rt, "web"));
}

#[tokio::test(start_paused = true)]
async fn shutdown_past_the_grace_rolls_the_running_activity_back() {
    let f = Fixture::new();
    f.applied(&document("a1", &[("web", &[("image", ONE)])]))
        .await;
    let old = f.rt.container("web").unwrap().id;
    let grace = Duration::from_secs(1);
    let text = document("a2", &[("web", &[("image", TWO)])]);
    let ended = f
        .run(
            AgentOptions {
                shutdown_grace: grace,
                ..paused_at_activating(options())
            },
            async |a: &mut Agent| {
                a.offer(&text);
                a.feedback_until("ACTIVATING", |f| f.payload.status == Status::Activating)
                    .await;
            },
        )
        .await;
    ended.result.unwrap();

    assert!(ended.stopping >= grace, "took {:?}", ended.stopping);
    assert!(
        ended.stopping < Duration::from_secs(3600),
        "took {:?}",
        ended.stopping
    );
    let fb = feedback_of(&ended.seen, "a2");
    let last = fb.last().expect("feedback for a2");
    assert_eq!(
        last.payload.status,
        Status::Incomplete,
        "{}",
        summary(&ended.seen)
    );
    assert!(
        message(last).contains("berth was stopped"),
        "{:?}",
        message(last)
    );
    assert!(
        message(last).contains("restored the previous web"),
        "{:?}",
        message(last)
    );
    assert!(!fb.iter().any(|f| f.payload.status == Status::Completed));
    let web = f.rt.container("web").expect("web exists");
    assert_eq!(
        (web.id.as_str(), web.image_ref.as_str()),
        (old.as_str(), ONE)
    );
    assert!(running(&f.rt, "web"));
    assert_eq!(names(&f.rt), ["web"]);
    assert_eq!(f.state().read_journal().unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn an_activity_interrupted_by_a_crash_is_reported_incomplete_at_start_up() {
    let f = Fixture::new();
    f.applied(&document("a1", &[("web", &[("image", ONE)])]))
        .await;
    // berth died in UPDATING: the old web stopped and renamed away.
    let web = f.rt.container("web").unwrap().id;
    f.rt.stop(&web, Duration::ZERO).await.unwrap();
    f.rt.rename(&web, &format!("web{OLD_SUFFIX}"))
        .await
        .unwrap();
    let mut journal = Journal::new("a2", crate::labels::DEFAULT_INSTANCE);
    journal.phase = "updating".into();
    journal.intents = vec![Intent {
        name: "web".into(),
        action: "recreate".into(),
        old_id: Some(web.clone()),
        old_name: None,
        old_running: true,
        hooks: None,
    }];
    journal.push(Effect::Stop {
        name: "web".into(),
        id: web.clone(),
        was_running: true,
    });
    journal.push(Effect::Rename {
        name: "web".into(),
        id: web.clone(),
        from: "web".into(),
        to: format!("web{OLD_SUFFIX}"),
    });
    f.state().write_journal(&journal).unwrap();

    let ended = f
        .run(options(), async |a: &mut Agent| a.finished("a2").await)
        .await;
    ended.result.unwrap();

    let fb = ended.value;
    assert_eq!(fb.payload.status, Status::Incomplete);
    assert!(
        message(&fb).contains("stopped during updating"),
        "{:?}",
        message(&fb)
    );
    assert!(
        message(&fb).contains("restored the previous web"),
        "{:?}",
        message(&fb)
    );
    assert_eq!(
        feedback_of(&ended.seen, "a2").len(),
        1,
        "{}",
        summary(&ended.seen)
    );
    assert_eq!(f.rt.container("web").map(|c| c.id), Some(web));
    assert!(running(&f.rt, "web"));
    assert_eq!(f.state().read_journal().unwrap(), None);
}

#[tokio::test(start_paused = true)]

async fn an_event_just_before_an_activity_ends_still_triggers_a_reconcile_after_the_debounce() {
    let f = Fixture::new();
    let interval = Duration::from_secs(2 * 3600);
    let debounce = Duration::from_secs(2);
    let a1 = document(
        "a1",
        &[("web", &[("image", ONE)]), ("db", &[("image", ONE)])],
    );
    f.applied(&a1).await;
    f.state().save_desired(&a1).unwrap();
    let a2 = document(
        "a2",
        &[("web", &[("image", TWO)]), ("db", &[("image", ONE)])],
    );
    let ended = f
        .run(
            AgentOptions {
                reconcile_interval: interval,
                debounce,
                ..paused_at_activating(options())
            },
            async |a: &mut Agent| {
                a.watching().await;
                a.offer(&a2);
                a.feedback_until("ACTIVATING", |f| f.payload.status == Status::Activating)
                    .await;
                // a2 sits an hour in ACTIVATING; db goes one second before
                // it ends, inside the debounce.
                tokio::time::sleep(Duration::from_secs(3599)).await;
                let db = a.rt.container("db").unwrap().id;
                a.rt.remove(&db).await.unwrap();
                a.rt.emit(Event {
                    action: "destroy".into(),
                    id: db,
                    name: "db".into(),
                });
                let since = Instant::now();
                a.finished("a2").await;
                a.feedback_until("drift correction", |f| {
                    is_reconcile(f) && f.payload.status == Status::Identifying
                })
                .await;
                since.elapsed()
            },
        )
        .await;
    ended.result.unwrap();
    let took = ended.value;
    assert!(
        took < interval,
        "the event's reconcile waited for the interval: {took:?}"
    );
}

#[tokio::test]

async fn a_container_rolled_back_only_because_another_failed_is_not_backed_off() {
    // Real time, on purpose: the same back-off on a clock that is not paused.
    let f = Fixture::new();
    let base = Duration::from_millis(300);
    let options = AgentOptions {
        reconcile_interval: Duration::from_millis(20),
        debounce: Duration::from_millis(10),
        backoff: backoff::Policy {
            base,
            cap: Duration::from_secs(10),
            healthy_after: Duration::from_secs(60),
        },
        ..options()
    };
    let crash = format!("{EXIT_LABEL}=1");
    let text = document(
        "a1",
        &[
            ("good", &[("image", ONE)]),
            ("bad", &[("image", ONE), ("label", &crash)]),
        ],
    );
    let ended = f
        .session(options, &Silent, REAL, async |a: &mut Agent| {
            a.offer(&text);
            // bad fails, and the activity's rollback takes good with it.
            a.finished("a1").await;
            let put_back = |f: &Feedback| {
                is_reconcile(f) && f.payload.status == Status::Completed && acted_on(f, "good")
            };
            a.feedback_until("good created", put_back).await;
            // good never failed: a first repair by hand costs nothing.
            let good = a.rt.container("good").unwrap().id;
            a.rt.remove(&good).await.unwrap();
            let since = Instant::now();
            a.feedback_until("good put back", put_back).await;
            since.elapsed()
        })
        .await;
    ended.result.unwrap();
    let took = ended.value;
    assert!(took < base, "good was backed off: put back after {took:?}");
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_journal_does_not_keep_berth_from_starting() {
    let f = Fixture::new();
    std::fs::write(f.dir.path().join("journal.json"), "{ torn write").unwrap();
    let text = document("a1", &[("web", &[("image", ONE)])]);
    let ended = f
        .run(options(), async |a: &mut Agent| {
            a.offer(&text);
            a.finished("a1").await
        })
        .await;
    ended.result.unwrap();
    assert_eq!(ended.value.payload.status, Status::Completed);
    assert!(!f.dir.path().join("journal.json").exists());
}

#[tokio::test(start_paused = true)]
async fn a_document_that_arrives_while_recovery_retries_is_applied_afterwards() {
    let f = Fixture::new();
    f.applied(&document("a1", &[("web", &[("image", ONE)])]))
        .await;
    // berth died in UPDATING, and the first attempt to rename the old
    // container back fails: recovery retries.
    let web = f.rt.container("web").unwrap().id;
    f.rt.stop(&web, Duration::ZERO).await.unwrap();
    f.rt.rename(&web, &format!("web{OLD_SUFFIX}"))
        .await
        .unwrap();
    f.rt.fail_next(
        Call::Rename(web.clone(), "web".into()),
        crate::runtime::RuntimeError::Other("busy".into()),
    );
    let text = document("a2", &[("web", &[("image", TWO)])]);
    let ended = f
        .run(options(), async |a: &mut Agent| {
            a.offer(&text);
            a.finished("a2").await
        })
        .await;
    ended.result.unwrap();
    assert_eq!(ended.value.payload.status, Status::Completed);
    assert_eq!(f.rt.container("web").unwrap().image_ref, TWO);
}

#[tokio::test(start_paused = true)]
async fn r18_after_a_rollback_that_failed_the_next_reconcile_restores_the_old_version_first() {
    // Regression: the journal was cleared after a failed rollback, and the
    // next drift reconcile planned web.berth-old as an ordinary removal and
    // created web anew, without the old container's volumes.
    let f = Fixture::new();
    f.applied(&document("a1", &[("web", &[("image", ONE)])]))
        .await;
    let old = f.rt.container("web").unwrap().id;
    let crash = format!("{EXIT_LABEL}=1");
    let text = document("a2", &[("web", &[("image", TWO), ("label", &crash)])]);
    f.rt.fail_next(
        Call::Rename(old.clone(), "web".into()),
        crate::runtime::RuntimeError::Refused {
            status: 500,
            message: "injected: the engine restarted".into(),
        },
    );
    let ended = f
        .run(options(), async |a: &mut Agent| {
            a.offer(&text);
            let end = a.finished("a2").await;
            a.feedback_until("a reconcile that ends", |f| {
                is_reconcile(f) && f.payload.status.is_final()
            })
            .await;
            end
        })
        .await;
    ended.result.unwrap();
    assert_eq!(
        ended.value.payload.status,
        Status::IncompleteInconsistent,
        "{}",
        summary(&ended.seen)
    );
    let web = f.rt.container("web").expect("web exists");
    assert_eq!(web.id, old, "{}", summary(&ended.seen));
    assert!(running(&f.rt, "web"));
    assert_eq!(names(&f.rt), ["web"]);
    assert_eq!(f.state().read_journal().unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn an_activity_interrupted_during_cleanup_is_reported_completed_at_start_up() {
    let f = Fixture::new();
    f.applied(&document("a1", &[("web", &[("image", ONE)])]))
        .await;
    // berth died in CLEANUP: the new web had proven ready and the activity
    // was committed; the old web still waits on its temporary name.
    let old = f.rt.container("web").unwrap().id;
    f.rt.stop(&old, Duration::ZERO).await.unwrap();
    f.rt.rename(&old, &format!("web{OLD_SUFFIX}"))
        .await
        .unwrap();
    let a2 = spec::parse(
        &document("a2", &[("web", &[("image", TWO)])]),
        &spec::Options::default(),
    )
    .unwrap()
    .desired;
    f.rt.pull(TWO, &|_| {}).await.unwrap();
    let labels = crate::labels::for_spec(&a2.containers[0], None, crate::labels::DEFAULT_INSTANCE);
    let request = crate::runtime::CreateRequest {
        name: "web".into(),
        config: a2.containers[0].config.clone(),
        labels,
        extra_hosts: vec![],
        inherited_volumes: vec![],
        networks: vec![],
    };
    let new = f.rt.create(&request).await.unwrap();
    f.rt.start(&new).await.unwrap();
    let mut journal = Journal::new("a2", crate::labels::DEFAULT_INSTANCE);
    journal.phase = "cleanup".into();
    journal.intents = vec![Intent {
        name: "web".into(),
        action: "recreate".into(),
        old_id: Some(old.clone()),
        old_name: None,
        old_running: true,
        hooks: None,
    }];
    journal.committed.insert("web".into());
    f.state().write_journal(&journal).unwrap();

    let ended = f
        .run(options(), async |a: &mut Agent| a.finished("a2").await)
        .await;
    ended.result.unwrap();

    let fb = ended.value;
    assert_eq!(fb.payload.status, Status::Completed, "{:?}", message(&fb));
    assert!(
        message(&fb).contains("the new version stays"),
        "{:?}",
        message(&fb)
    );
    assert_eq!(f.rt.container("web").map(|c| c.id), Some(new));
    assert!(
        !names(&f.rt).contains(&format!("web{OLD_SUFFIX}")),
        "the old web is removed"
    );
    assert_eq!(names(&f.rt), ["web"]);
}

/// `text` with the sender's `timestamp` set.
fn dated(text: &str, timestamp: i64) -> String {
    let mut v: serde_json::Value = serde_json::from_str(text).expect("a document");
    v["timestamp"] = timestamp.into();
    v.to_string()
}

fn current_states<'a>(seen: &'a [Outbound], prefix: &str) -> Vec<&'a str> {
    seen.iter()
        .filter_map(|m| match m {
            Outbound::CurrentState(s) if s.activity_id.starts_with(prefix) => {
                Some(s.activity_id.as_str())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn waiting_currentstate_gets_coalesce_into_the_latest_and_berths_own_requests_into_a_few() {
    let second = Duration::from_secs(1);
    let now = Instant::now();
    let mut r = Requests::default();
    r.push(Request::Own("initial".into()));
    for i in 0..1000 {
        r.push(Request::Get(format!("get-{i}")));
    }
    for i in 0..10 {
        r.push(Request::Own(format!("own-{i}")));
    }
    assert_eq!(
        r.next(now, second, false),
        Next::Answer(Request::Get("get-999".into()), 999)
    );
    let mut own = Vec::new();
    while let Next::Answer(req, _) = r.next(now, second, false) {
        own.push(req);
    }
    assert_eq!(
        own,
        (6..10)
            .map(|i| Request::Own(format!("own-{i}")))
            .collect::<Vec<_>>(),
        "the newest of berth's own requests are kept"
    );
}

#[test]
fn a_currentstate_get_within_the_interval_of_the_last_answer_waits_for_it() {
    let second = Duration::from_secs(1);
    let now = Instant::now();
    let mut r = Requests::default();
    r.push(Request::Get("g1".into()));
    assert_eq!(
        r.next(now, second, false),
        Next::Answer(Request::Get("g1".into()), 0)
    );
    r.push(Request::Get("g2".into()));
    r.push(Request::Own("own".into()));
    r.push(Request::Get("g3".into()));
    assert_eq!(
        r.next(now, second, false),
        Next::Answer(Request::Own("own".into()), 0),
        "berth's own requests do not wait behind it"
    );
    assert_eq!(r.next(now, second, false), Next::Wait(now + second));
    assert_eq!(
        r.next(now + second, second, false),
        Next::Answer(Request::Get("g3".into()), 1)
    );
    assert_eq!(r.next(now + second, second, false), Next::Idle);
    r.push(Request::Get("g4".into()));
    assert_eq!(
        r.next(now + second, second, true),
        Next::Answer(Request::Get("g4".into()), 0),
        "at shutdown nothing waits"
    );
}

#[test]
fn inputs_kept_while_recovery_retries_are_coalesced() {
    let mut kept = Backlog::default();
    for i in 0..1000 {
        kept.push(Input::CurrentStateGet {
            activity_id: format!("get-{i}"),
            credit: Credit::default(),
        });
        kept.push(Input::Connected);
        kept.push(Input::Document(Incoming::new(
            Origin::Files("/etc/berth/state".into()),
            Body::Text(format!("file {i}")),
            None,
        )));
    }
    let (ack, _acked) = oneshot::channel();
    kept.push(Input::Document(Incoming::new(
        Origin::Mqtt,
        Body::Text("mqtt".into()),
        Some(ack),
    )));
    assert_eq!(kept.inputs.len(), 4, "{:?}", kept.inputs);
    assert!(kept.inputs.iter().any(
        |i| matches!(i, Input::CurrentStateGet { activity_id, .. } if activity_id == "get-999")
    ));
    assert!(kept.inputs.iter().any(|i| matches!(
        i,
        Input::Document(Incoming { body: Body::Text(t), .. }) if t == "file 999"
    )));
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_a_thousand_currentstate_gets_gets_a_few_answers_the_last_echoing_the_latest() {
    let f = Fixture::new();
    let ended = f
        .run(options(), async |a: &mut Agent| {
            a.offer(&document("a1", &[("web", &[("image", ONE)])]));
            a.finished("a1").await;
            for i in 0..1000 {
                a.send(Input::CurrentStateGet {
                    activity_id: format!("get-{i}"),
                    credit: Credit::default(),
                });
            }
            a.current_state(|s| s.activity_id == "get-999").await;
            // Still serving.
            a.offer(&document("a2", &[("web", &[("image", TWO)])]));
            a.finished("a2").await
        })
        .await;
    ended.result.unwrap();
    assert_eq!(ended.value.payload.status, Status::Completed);
    let answers = current_states(&ended.seen, "get-");
    // The loop takes at most one cooperative budget of inputs (128 in
    // tokio) before the reporter runs, so a burst coalesces into about one
    // answer per budget, not one per request.
    eprintln!("{} answers to 1000 requests: {answers:?}", answers.len());
    assert!(
        answers.len() <= 10,
        "{} answers: {answers:?}",
        answers.len()
    );
    assert_eq!(answers.last(), Some(&"get-999"));
}

#[tokio::test(start_paused = true)]
async fn a_document_delivered_again_after_it_completed_is_answered_completed_and_not_applied_again()
{
    let f = Fixture::new();
    let text = document("a1", &[("web", &[("image", ONE)])]);
    let ended = f
        .run(options(), async |a: &mut Agent| {
            a.offer(&text);
            a.finished("a1").await;
            let again = a.offer(&text);
            a.acked(again).await;
            a.feedback_until("the answer to the redelivery", |f| {
                f.activity_id == "a1" && message(f).contains("delivered again")
            })
            .await
        })
        .await;
    ended.result.unwrap();
    assert_eq!(ended.value.payload.status, Status::Completed);
    assert!(
        message(&ended.value).contains("answered COMPLETED before"),
        "{:?}",
        message(&ended.value)
    );
    let s = statuses(&ended.seen, "a1");
    assert_eq!(
        s.iter().filter(|s| **s == Status::Identifying).count(),
        1,
        "{s:?}"
    );
    assert_eq!(creates_of(&f.rt, "web"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_document_delivered_again_while_it_runs_gets_no_extra_feedback_and_runs_once() {
    let f = Fixture::new();
    let text = document("a1", &[("web", &[("image", ONE)])]);
    let ended = f
        .run(paused_at_activating(options()), async |a: &mut Agent| {
            a.offer(&text);
            a.feedback_until("ACTIVATING", |f| {
                f.activity_id == "a1" && f.payload.status == Status::Activating
            })
            .await;
            let again = a.offer(&text);
            a.acked(again).await;
            a.finished("a1").await
        })
        .await;
    ended.result.unwrap();
    assert_eq!(ended.value.payload.status, Status::Completed);
    let fb = feedback_of(&ended.seen, "a1");
    assert!(
        fb.iter().all(|f| !message(f).contains("delivered again")),
        "{}",
        summary(&ended.seen)
    );
    assert_eq!(
        fb.iter()
            .filter(|f| f.payload.status == Status::Identifying)
            .count(),
        1
    );
    assert_eq!(creates_of(&f.rt, "web"), 1);
}

#[tokio::test(start_paused = true)]
async fn an_earlier_document_delivered_after_a_newer_one_never_takes_the_device_back() {
    let f = Fixture::new();
    let one = document("a1", &[("web", &[("image", ONE)])]);
    let two = document("a2", &[("web", &[("image", TWO)])]);
    let ended = f
        .run(options(), async |a: &mut Agent| {
            a.offer(&one);
            a.finished("a1").await;
            a.offer(&two);
            a.finished("a2").await;
            let again = a.offer(&one);
            a.acked(again).await;
            a.feedback_until("the answer to the redelivery", |f| {
                f.activity_id == "a1" && message(f).contains("delivered again")
            })
            .await
        })
        .await;
    ended.result.unwrap();
    assert_eq!(ended.value.payload.status, Status::Completed);
    assert!(
        message(&ended.value).contains("a2 was accepted since"),
        "{:?}",
        message(&ended.value)
    );
    assert_eq!(f.rt.container("web").unwrap().image_ref, TWO);
    assert_eq!(f.state().load_desired().unwrap(), Some(two));
}

#[tokio::test(start_paused = true)]
async fn a_document_older_than_the_last_accepted_by_its_timestamp_is_superseded_not_applied() {
    let f = Fixture::new();
    let newer = dated(&document("b", &[("web", &[("image", TWO)])]), 2_000);
    let older = dated(&document("a", &[("web", &[("image", ONE)])]), 1_000);
    let ended = f
        .run(options(), async |a: &mut Agent| {
            a.offer(&newer);
            a.finished("b").await;
            let acked = a.offer(&older);
            a.acked(acked).await;
            a.finished("a").await
        })
        .await;
    ended.result.unwrap();
    assert_eq!(ended.value.payload.status, Status::Superseded);
    assert!(
        message(&ended.value).contains("older than b"),
        "{:?}",
        message(&ended.value)
    );
    assert_eq!(statuses(&ended.seen, "a"), [Status::Superseded]);
    assert_eq!(f.rt.container("web").unwrap().image_ref, TWO);
    assert_eq!(f.state().load_desired().unwrap(), Some(newer));
}

#[tokio::test(start_paused = true)]
async fn what_was_answered_is_remembered_across_a_restart() {
    let f = Fixture::new();
    let one = document("a1", &[("web", &[("image", ONE)])]);
    let two = document("a2", &[("web", &[("image", TWO)])]);
    f.run(options(), async |a: &mut Agent| {
        a.offer(&one);
        a.finished("a1").await;
        a.offer(&two);
        a.finished("a2").await;
    })
    .await
    .result
    .unwrap();
    assert!(f.dir.path().join(HISTORY_FILE).exists());

    let ended = f
        .run(options(), async |a: &mut Agent| {
            // As a broker replays them at the reconnect after a restart.
            for text in [&one, &two] {
                let acked = a.offer(text);
                a.acked(acked).await;
            }
            a.feedback_until("the answer to a1", |f| f.activity_id == "a1")
                .await;
            a.feedback_until("the answer to a2", |f| f.activity_id == "a2")
                .await;
        })
        .await;
    ended.result.unwrap();
    for (id, words) in [
        ("a1", "a2 was accepted since"),
        ("a2", "answered COMPLETED"),
    ] {
        let fb = feedback_of(&ended.seen, id);
        assert_eq!(fb.len(), 1, "{}", summary(&ended.seen));
        assert!(message(fb[0]).contains(words), "{id}: {:?}", message(fb[0]));
    }
    assert_eq!(f.rt.container("web").unwrap().image_ref, TWO);
    assert_eq!(
        creates_of(&f.rt, "web"),
        2,
        "one per document, none for the replays"
    );
}

#[tokio::test(start_paused = true)]
async fn a_persisted_document_without_a_recorded_outcome_is_answered_once_enforced() {
    let f = Fixture::new();
    let text = document("a1", &[("web", &[("image", ONE)])]);
    f.applied(&text).await;
    // As left by a berth that kept no history.
    f.state().save_desired(&text).unwrap();
    let startup = Startup::new(&f.rt);
    let ended = f
        .session(options(), &startup, VIRTUAL, async |a: &mut Agent| {
            startup.ready().await;
            let acked = a.offer(&text);
            a.acked(acked).await;
            a.finished("a1").await
        })
        .await;
    ended.result.unwrap();
    assert_eq!(ended.value.payload.status, Status::Completed);
    assert!(
        message(&ended.value).contains("delivered again"),
        "{:?}",
        message(&ended.value)
    );
    assert_eq!(creates_of(&f.rt, "web"), 1);
}

#[tokio::test(start_paused = true)]
async fn documents_a_source_replaced_unread_are_superseded_unless_answered_before() {
    let f = Fixture::new();
    let ended = f
        .run(options(), async |a: &mut Agent| {
            a.offer(&document("a1", &[("web", &[("image", ONE)])]));
            a.finished("a1").await;
            let (ack, acked) = oneshot::channel();
            let mut incoming = Incoming::new(
                Origin::Mqtt,
                Body::Text(document("a3", &[("web", &[("image", TWO)])])),
                Some(ack),
            );
            incoming.superseded = vec!["a2".into(), "a1".into(), String::new(), "a3".into()];
            a.send(Input::Document(incoming));
            a.acked(acked).await;
            a.finished("a3").await
        })
        .await;
    ended.result.unwrap();
    assert_eq!(ended.value.payload.status, Status::Completed);
    let a2 = feedback_of(&ended.seen, "a2");
    assert_eq!(a2.len(), 1, "{}", summary(&ended.seen));
    assert_eq!(a2[0].payload.status, Status::Superseded);
    assert!(message(a2[0]).contains("superseded by a3 before berth read it"));
    assert_eq!(
        statuses(&ended.seen, "a1").last(),
        Some(&Status::Completed),
        "a1, answered before, gets nothing more"
    );
    assert!(
        !statuses(&ended.seen, "a3").contains(&Status::Superseded),
        "{}",
        summary(&ended.seen)
    );
    assert!(ended
        .seen
        .iter()
        .all(|m| !matches!(m, Outbound::Feedback(f) if f.activity_id.is_empty())));
}

#[tokio::test(start_paused = true)]
async fn a_state_file_edited_without_a_new_activity_id_is_applied_again() {
    let f = Fixture::new();
    let file = |x: &str| {
        Input::Document(Incoming::new(
            Origin::Files("/etc/berth/state.json".into()),
            Body::Text(document("f1", &[("web", &[("image", ONE), ("env", x)])])),
            None,
        ))
    };
    let ended = f
        .run(options(), async |a: &mut Agent| {
            a.send(file("X=1"));
            a.finished("f1").await;
            a.send(file("X=2"));
            a.finished("f1").await
        })
        .await;
    ended.result.unwrap();
    assert_eq!(ended.value.payload.status, Status::Completed);
    assert!(
        feedback_of(&ended.seen, "f1")
            .iter()
            .all(|f| !message(f).contains("delivered again")),
        "{}",
        summary(&ended.seen)
    );
    let web = f.rt.container("web").expect("web exists");
    assert!(web.env.contains(&"X=2".to_string()), "{:?}", web.env);
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_recovery_retries_returns_at_once() {
    let f = Fixture::new();
    f.applied(&document("a1", &[("web", &[("image", ONE)])]))
        .await;
    // berth died in UPDATING, and undoing it fails the first time: recovery
    // waits to retry when the shutdown comes.
    let web = f.rt.container("web").unwrap().id;
    f.rt.stop(&web, Duration::ZERO).await.unwrap();
    f.rt.rename(&web, &format!("web{OLD_SUFFIX}"))
        .await
        .unwrap();
    f.rt.fail_next(
        Call::Rename(web.clone(), "web".into()),
        crate::runtime::RuntimeError::Other("busy".into()),
    );
    let ended = f.run(options(), async |_: &mut Agent| {}).await;
    ended.result.unwrap();
    assert!(
        ended.stopping < Duration::from_secs(1),
        "took {:?}",
        ended.stopping
    );
}

/// Limits come from the configuration, not the defaults: a document with
/// more components than `limits.max_components` is refused naming it.
#[tokio::test(start_paused = true)]
async fn a_document_above_the_configured_component_limit_is_refused_and_not_persisted() {
    let f = Fixture::new();
    let text = document(
        "a-big",
        &[("web", &[("image", ONE)]), ("db", &[("image", ONE)])],
    );
    let limited = AgentOptions {
        limits: spec::Limits {
            max_components: 1,
            ..spec::Limits::default()
        },
        ..options()
    };
    let ended = f
        .run(limited, async |a: &mut Agent| {
            let acked = a.offer(&text);
            a.acked(acked).await;
            a.finished("a-big").await
        })
        .await;
    ended.result.unwrap();

    let fb = feedback_of(&ended.seen, "a-big");
    assert_eq!(fb.len(), 1, "{}", summary(&ended.seen));
    assert_eq!(fb[0].payload.status, Status::IdentificationFailed);
    assert!(
        message(fb[0]).contains("limits.max_components"),
        "{}",
        message(fb[0])
    );
    assert_eq!(f.rt.calls(), []);
    assert_eq!(f.state().load_desired().unwrap(), None);
}

/// Regression: the persisted document was read under the default limits,
/// whatever the configuration said.
#[tokio::test(start_paused = true)]
async fn a_persisted_document_that_no_longer_validates_changes_nothing_and_the_agent_keeps_serving()
{
    let f = Fixture::new();
    let old = document(
        "a1",
        &[("web", &[("image", ONE)]), ("db", &[("image", ONE)])],
    );
    f.applied(&old).await;
    f.state().save_desired(&old).unwrap();
    // Enforcing the persisted document would create db again.
    let db = f.rt.container("db").unwrap().id;
    f.rt.remove(&db).await.unwrap();
    let calls = f.rt.calls();
    let limited = AgentOptions {
        limits: spec::Limits {
            max_components: 1,
            ..spec::Limits::default()
        },
        ..options()
    };
    let new = document("a2", &[("web", &[("image", TWO)])]);
    let startup = Startup::new(&f.rt);
    let ended = f
        .session(limited, &startup, VIRTUAL, async |a: &mut Agent| {
            startup.ready().await;
            let untouched = a.rt.calls();
            let acked = a.offer(&new);
            a.acked(acked).await;
            (untouched, a.finished("a2").await)
        })
        .await;
    ended.result.unwrap();

    let (untouched, fb) = ended.value;
    assert_eq!(untouched, calls, "the engine was touched at start-up");
    assert_eq!(
        fb.payload.status,
        Status::Completed,
        "{}",
        summary(&ended.seen)
    );
    assert_eq!(
        f.state().load_desired().unwrap().as_deref(),
        Some(new.as_str())
    );
}

/// A document that cannot be persisted is answered, never acknowledged (so
/// the broker sends it again), and changes nothing; once the state
/// directory can be written again the same document is applied.
#[tokio::test(start_paused = true)]
async fn a_document_that_cannot_be_persisted_is_not_acknowledged_and_changes_nothing() {
    let f = Fixture::new();
    // A directory where the document goes: the atomic rename fails.
    let blocker = f.dir.path().join("desired.json");
    std::fs::create_dir_all(blocker.join("x")).unwrap();
    let text = document("a1", &[("web", &[("image", ONE)])]);
    let ended = f
        .run(options(), async |a: &mut Agent| {
            let first = a.offer(&text);
            let dropped = tokio::time::timeout(a.limit, first).await;
            let fb = a
                .feedback_until("the refusal", |f| f.activity_id == "a1")
                .await;
            let calls = a.rt.calls();
            std::fs::remove_dir_all(&blocker).unwrap();
            let again = a.offer(&text);
            a.acked(again).await;
            (dropped, fb, calls, a.finished("a1").await)
        })
        .await;
    ended.result.unwrap();

    let (dropped, refused, calls, done) = ended.value;
    assert!(
        matches!(dropped, Ok(Err(_))),
        "the unpersisted document was acknowledged: {dropped:?}"
    );
    assert_eq!(refused.payload.status, Status::IdentificationFailed);
    assert!(
        message(&refused).contains("cannot persist")
            && message(&refused).contains("not acknowledged"),
        "{}",
        message(&refused)
    );
    assert_eq!(calls, [], "the engine was touched");
    assert_eq!(
        done.payload.status,
        Status::Completed,
        "{}",
        summary(&ended.seen)
    );
}

fn with_policy(policy: crate::policy::PolicyConfig) -> AgentOptions {
    AgentOptions {
        policy: policy.compile().expect("the policy compiles"),
        ..options()
    }
}

/// Issue 20: the policy is enforced in the agent, after validation and
/// before anything is persisted or planned.
#[tokio::test(start_paused = true)]
async fn a_document_the_policy_refuses_is_identification_failed_naming_the_rule_and_not_persisted()
{
    let f = Fixture::new();
    let text = document(
        "a-priv",
        &[("web", &[("image", ONE), ("privileged", "true")])],
    );
    let strict = with_policy(crate::policy::PolicyConfig {
        allow_privileged: false,
        ..Default::default()
    });
    let ended = f
        .run(strict, async |a: &mut Agent| {
            let acked = a.offer(&text);
            a.acked(acked).await;
            a.finished("a-priv").await
        })
        .await;
    ended.result.unwrap();

    let fb = ended.value;
    assert_eq!(fb.payload.status, Status::IdentificationFailed);
    assert!(
        message(&fb).contains(r#"container "web": key "privileged" value "true""#)
            && message(&fb).contains("allow_privileged = false"),
        "{}",
        message(&fb)
    );
    assert_eq!(f.rt.calls(), [], "something was pulled or created");
    assert_eq!(f.state().load_desired().unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn the_persisted_document_is_judged_against_the_policy_in_force_at_start() {
    let f = Fixture::new();
    let text = document("a1", &[("web", &[("image", ONE), ("privileged", "true")])]);
    f.state().save_desired(&text).unwrap();
    let strict = with_policy(crate::policy::PolicyConfig {
        allow_privileged: false,
        ..Default::default()
    });
    let startup = Startup::new(&f.rt);
    let ended = f
        .session(strict, &startup, VIRTUAL, async |_: &mut Agent| {
            startup.ready().await
        })
        .await;
    ended.result.unwrap();
    assert_eq!(
        f.rt.calls(),
        [],
        "the refused persisted document was enforced"
    );
}

#[tokio::test(start_paused = true)]
async fn a_document_that_changes_the_env_of_a_protected_component_is_refused_naming_the_variable() {
    let f = Fixture::new();
    let first = document("a1", &[("web", &[("image", ONE), ("env", "MODE=safe")])]);
    let second = document("a2", &[("web", &[("image", ONE), ("env", "MODE=debug")])]);
    let protected = with_policy(crate::policy::PolicyConfig {
        allow_env_change: vec!["other-*".into()],
        ..Default::default()
    });
    let ended = f
        .run(protected, async |a: &mut Agent| {
            a.offer(&first);
            let one = a.finished("a1").await;
            a.offer(&second);
            (one, a.finished("a2").await)
        })
        .await;
    ended.result.unwrap();

    let (one, two) = ended.value;
    assert_eq!(
        one.payload.status,
        Status::Completed,
        "{}",
        summary(&ended.seen)
    );
    assert_eq!(two.payload.status, Status::IdentificationFailed);
    assert!(
        message(&two).contains("MODE") && !message(&two).contains("debug"),
        "{}",
        message(&two)
    );
    assert_eq!(
        f.state().load_desired().unwrap().as_deref(),
        Some(first.as_str())
    );
}

// --- drift correction beside an orchestrated activity ---

fn owned(names: &[&str]) -> std::collections::BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn beside_an_activity_its_containers_are_left_alone() {
    assert!(orchestrated::owned_by(Some(&owned(&["web"])), "web"));
}

#[test]
fn beside_an_activity_the_temporaries_of_its_containers_are_left_alone() {
    let o = owned(&["web"]);
    assert!(orchestrated::owned_by(Some(&o), "web.berth-new"));
    assert!(orchestrated::owned_by(Some(&o), "web.berth-old"));
}

#[test]
fn beside_an_activity_the_other_containers_are_repaired() {
    assert!(!orchestrated::owned_by(Some(&owned(&["web"])), "db"));
    assert!(!orchestrated::owned_by(
        Some(&owned(&["web"])),
        "db.berth-old"
    ));
}

#[test]
fn without_an_activity_nothing_is_left_alone() {
    assert!(!orchestrated::owned_by(None, "web"));
}
