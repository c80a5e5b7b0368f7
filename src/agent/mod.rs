//! The long-running agent (`berth run`): one reconcile loop fed by the
//! sources (MQTT, state files, the persisted document), reporting through
//! the sinks (feedback, current state, logs).
//!
//! The loop owns every decision about *when* to act; the pure parts decide
//! *what*: [`queue`] picks the next job and supersedes waiting documents,
//! [`backoff`] holds back containers that keep failing, and the planner and
//! executor do the rest. Jobs run one at a time in their own task, so the
//! loop keeps answering requests, superseding documents and pinging the
//! systemd watchdog while an activity runs.
//!
//! Every source is hostile input. None can grow the loop's memory without
//! bound (the MQTT source hands over one document and one request at a
//! time and coalesces the rest; `currentstate/get` requests waiting for the
//! reporter coalesce into the latest; what arrives while recovery retries
//! is coalesced too), and none can take the device back: a document
//! answered before, or older than the last accepted one, is acknowledged
//! and answered but never applied again ([`queue::History`], kept in the
//! state directory across restarts).

pub mod backoff;
pub mod files;
pub mod mqtt;
mod orchestrated;
pub mod queue;

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};
use tokio::time::Instant;
use tracing::Instrument;

use crate::execute::{self, Activity, ExecuteOptions, RollbackMode, NEW_SUFFIX, OLD_SUFFIX};
use crate::feedback::{now_ms, ActionStatus, Feedback, Status, Tracker};
use crate::inventory::{self, CurrentState, InventoryOptions};
use crate::journal::StateDir;
use crate::observe;
use crate::plan::{self, Action, PlanOptions};
use crate::runtime::{Event, Runtime};
use crate::spec::{self, DesiredState};

use backoff::Backoff;
use queue::{History, Job, Queue, Reason, Verdict};

/// How the activity ids berth makes up for documents it refused unread
/// begin (`refused-<epoch ms>`): the document's own id is unknown.
pub const REFUSED_PREFIX: &str = "refused-";

/// An activity id for the feedback about a document whose own id cannot be
/// known (it was refused without being read).
pub fn refused_activity_id() -> String {
    format!("{REFUSED_PREFIX}{}", now_ms())
}

/// Where a document came from, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The desired-state topic.
    Mqtt,
    /// The state file or directory.
    Files(PathBuf),
    /// The last accepted document, kept in the state directory.
    Persisted,
    /// The local HTTP API ([`crate::api`]): a document derived from the
    /// last accepted one, or posted whole.
    Api,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Mqtt => f.write_str("mqtt"),
            Origin::Files(p) => write!(f, "file {}", p.display()),
            Origin::Persisted => f.write_str("the state directory"),
            Origin::Api => f.write_str("the API"),
        }
    }
}

/// A document as a source delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// The text, to validate.
    Text(String),
    /// The source already found it unusable (too large, files overlapping).
    Refused {
        /// For the feedback, when it could be read.
        activity_id: String,
        /// Every problem.
        errors: Vec<String>,
    },
}

/// A document on its way to the loop.
#[derive(Debug)]
pub struct Incoming {
    /// Its source.
    pub origin: Origin,
    /// Its contents.
    pub body: Body,
    /// Fulfilled once the document is persisted (or refused), so the
    /// source can acknowledge it; dropped when it is not.
    pub ack: Option<oneshot::Sender<()>>,
    /// Activity ids of older documents from the same source that this one
    /// replaced before the loop read them: each is answered `SUPERSEDED`
    /// (unless it was answered before).
    pub superseded: Vec<String>,
}

impl Incoming {
    /// A document that replaced no other.
    pub fn new(origin: Origin, body: Body, ack: Option<oneshot::Sender<()>>) -> Self {
        Self {
            origin,
            body,
            ack,
            superseded: Vec::new(),
        }
    }
}

/// A source's hold on a place in the loop's input channel, given back
/// when the loop is done with the input (it drops it). A source that waits
/// for its credit before sending the next input keeps the channel bounded
/// however fast its own input comes; meanwhile it coalesces.
#[derive(Debug, Default)]
pub struct Credit {
    /// Only held: dropping it gives the permit back.
    _permit: Option<OwnedSemaphorePermit>,
}

impl Credit {
    /// A hold on one of the source's permits.
    pub fn new(permit: OwnedSemaphorePermit) -> Self {
        Self {
            _permit: Some(permit),
        }
    }
}

/// What the engine watcher reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineSignal {
    /// A container event.
    Event(Event),
    /// The engine stopped answering.
    Lost(String),
    /// The engine answers again.
    Back,
}

/// Everything the loop reacts to.
#[derive(Debug)]
pub enum Input {
    /// A desired state.
    Document(Incoming),
    /// A `currentstate/get` request.
    CurrentStateGet {
        /// Echoed in the answer.
        activity_id: String,
        /// Given back once the loop has taken the request.
        credit: Credit,
    },
    /// An Update Manager's `desiredstate/command` (orchestrated mode).
    Command {
        /// The command.
        command: crate::orchestrate::Command,
        /// Given back once the loop has taken it.
        credit: Credit,
    },
    /// The broker connection is (re)established.
    Connected,
    /// The broker connection was lost (berth reconnects by itself): for
    /// whoever watches the sources, such as the API's metrics.
    Disconnected,
    /// From the engine watcher.
    Engine(EngineSignal),
    /// SIGTERM or SIGINT.
    Shutdown,
}

/// What the loop publishes.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A `desiredstatefeedback` message.
    Feedback(Feedback),
    /// A `currentstate` message.
    CurrentState(CurrentState),
    /// A round of the periodic registry check (`check_interval`), for
    /// `containersupdate/upgrades`.
    Upgrades(crate::check::watch::Report),
}

/// How the loop behaves.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Removal scope, system containers, instance.
    pub plan: PlanOptions,
    /// Limits of each activity.
    pub execute: ExecuteOptions,
    /// The update domain documents must name.
    pub domain: String,
    /// How large and deep a document may be, from every source.
    pub limits: spec::Limits,
    /// What a document may ask for ([`crate::policy`]); checked for every
    /// document before it is persisted, the persisted one at start too.
    pub policy: crate::policy::Policy,
    /// Env names whose values the current state hides.
    pub redact_env: Vec<String>,
    /// Drift correction period; zero disables drift correction.
    pub reconcile_interval: Duration,
    /// Quiet time after engine events before re-planning and reporting.
    pub debounce: Duration,
    /// Back-off for containers that keep failing.
    pub backoff: backoff::Policy,
    /// How long a running activity may take to finish at shutdown before it
    /// is stopped and rolled back.
    pub shutdown_grace: Duration,
    /// The shortest time between two answers to `currentstate/get`: the
    /// first is answered at once, the ones that come within this time are
    /// coalesced into the latest, answered when it is over.
    pub get_interval: Duration,
    /// Whether berth runs the phases itself or an Update Manager commands
    /// them ([`crate::orchestrate`]).
    pub mode: crate::orchestrate::Mode,
    /// Orchestrated: the longest wait for the next command.
    pub phase_timeout: Duration,
    /// Strict, or lenient with the entries Kanto drops.
    pub validation: spec::validate::Validation,
    /// Every parameter in the current state, defaults included.
    pub verbose_inventory: bool,
}

/// [`AgentOptions::get_interval`] by default: a flood of requests costs
/// How long the loop waits after a managed container died or was removed
/// before it repairs: enough to take a burst of events (a `docker stop` of
/// many containers) in one plan, short enough that a service is back
/// within about a second (issue 25). Repeated failures back off
/// ([`backoff`]); the current-state report keeps the longer `debounce`.
pub const REPAIR_DELAY: Duration = Duration::from_millis(250);

/// one inventory a second; an Update Manager asks once per activity.
pub const DEFAULT_GET_INTERVAL: Duration = Duration::from_secs(1);

impl AgentOptions {
    /// How documents are read: the domain served and the limits.
    pub fn spec_options(&self) -> spec::Options {
        spec::Options {
            domain: self.domain.clone(),
            limits: self.limits,
            validation: self.validation,
        }
    }
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            plan: PlanOptions::default(),
            execute: ExecuteOptions::default(),
            domain: spec::validate::DEFAULT_DOMAIN.to_string(),
            limits: spec::Limits::default(),
            policy: crate::policy::Policy::default(),
            redact_env: inventory::DEFAULT_REDACT
                .iter()
                .map(|s| s.to_string())
                .collect(),
            reconcile_interval: Duration::from_secs(60),
            debounce: Duration::from_secs(1),
            backoff: backoff::Policy::default(),
            shutdown_grace: Duration::from_secs(60),
            get_interval: DEFAULT_GET_INTERVAL,
            mode: crate::orchestrate::Mode::Autonomous,
            phase_timeout: crate::orchestrate::DEFAULT_PHASE_TIMEOUT,
            validation: spec::validate::Validation::Strict,
            verbose_inventory: false,
        }
    }
}

/// Why the agent stopped other than by a signal.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The state directory failed under an activity.
    #[error("state directory: {0}")]
    State(#[from] crate::journal::StateError),
}

/// What the loop tells systemd (or nobody).
pub trait Notify: Send {
    /// Start-up is over: recovery ran and the last document was enforced.
    fn ready(&self);
    /// The loop is alive.
    fn alive(&self);
    /// A one-line status for `systemctl status`.
    fn status(&self, text: &str);
    /// Shutdown began.
    fn stopping(&self);
    /// How often [`Notify::alive`] must be called, if at all.
    fn interval(&self) -> Option<Duration>;
}

/// Notifies nobody.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Notify for Silent {
    fn ready(&self) {}
    fn alive(&self) {}
    fn status(&self, _: &str) {}
    fn stopping(&self) {}
    fn interval(&self) -> Option<Duration> {
        None
    }
}

/// A document the loop accepted.
#[derive(Debug, Clone)]
struct Document {
    desired: Arc<DesiredState>,
    origin: Origin,
    /// What validation warned about (fields ignored, entries dropped), for
    /// the activity's first feedback message.
    warnings: Arc<[String]>,
}

/// What a job did, for the loop's bookkeeping.
#[derive(Debug, Default)]
struct Report {
    activity_id: String,
    /// The back-off generation the job started in.
    generation: u64,
    /// Whether anything was published for it (an activity ran).
    visible: bool,
    /// Containers acted on, and whether that worked.
    attempted: Vec<(String, bool)>,
    /// Containers found as desired.
    in_sync: Vec<String>,
    /// Set for reconciles.
    reason: Option<Reason>,
    /// How a document's activity ended; `None` for reconciles.
    status: Option<Status>,
}

/// Shared by the loop and its jobs.
struct Shared<R> {
    rt: Arc<R>,
    state: StateDir,
    options: AgentOptions,
    out: Option<mpsc::UnboundedSender<Outbound>>,
    /// Activities' ends being written to the history, awaited at shutdown.
    recording: std::sync::Mutex<tokio::task::JoinSet<()>>,
}

impl<R> Shared<R> {
    fn publish(&self, m: Outbound) {
        if let Some(out) = &self.out {
            let _ = out.send(m);
        }
    }

    /// A one-off feedback message (refusals, supersessions, recoveries).
    fn feedback(&self, f: Feedback) {
        log_feedback(&f, &mut None);
        self.publish(Outbound::Feedback(f));
    }
}

/// One line per change of the overall status, or per message with words:
/// per-container progress goes to debug.
fn log_feedback(f: &Feedback, last: &mut Option<Status>) {
    let status = status_name(f.payload.status);
    let failed: Vec<String> = f
        .payload
        .actions
        .iter()
        .filter(|a| is_failure(a.status))
        .map(|a| format!("{}: {}", a.component.id, a.message.as_deref().unwrap_or("")))
        .collect();
    let new = *last != Some(f.payload.status);
    *last = Some(f.payload.status);
    match &f.payload.message {
        Some(m) if failed.is_empty() => tracing::info!("{status}: {m}"),
        Some(m) => tracing::warn!(failed = ?failed, "{status}: {m}"),
        None if new => tracing::info!("{status}"),
        None => tracing::debug!("{status}"),
    }
}

/// Kanto's name of a status (`COMPLETED`).
fn status_name(s: Status) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn is_failure(s: ActionStatus) -> bool {
    matches!(
        s,
        ActionStatus::DownloadFailure
            | ActionStatus::UpdateFailure
            | ActionStatus::ActivationFailure
            | ActionStatus::RemovalFailure
    )
}

/// Runs the agent until [`Input::Shutdown`] (or until every input sender
/// is gone). `inputs_tx` lets the loop's own watchers feed it. The runtime
/// is shared so the caller (a test) can watch the engine too.
///
/// # Errors
/// Only a state directory that cannot be written.
pub async fn run<R: Runtime + 'static>(
    rt: Arc<R>,
    state: StateDir,
    options: AgentOptions,
    inputs_tx: mpsc::UnboundedSender<Input>,
    mut inputs: mpsc::UnboundedReceiver<Input>,
    out: Option<mpsc::UnboundedSender<Outbound>>,
    notify: &dyn Notify,
) -> Result<(), AgentError> {
    let shared = Arc::new(Shared {
        rt,
        state,
        options,
        out,
        recording: Default::default(),
    });
    let (history, history_rx) = watch::channel(load_history(shared.state.path()).await);
    let writer = tokio::spawn(write_history(shared.state.path().to_path_buf(), history_rx));
    notify.status("recovering");
    let result = match recover(&shared, &history, &mut inputs, notify).await {
        None => {
            // The writer ends when its sender does.
            drop(history);
            Ok(())
        }
        Some(early) => {
            let mut lp = Loop {
                shared: shared.clone(),
                queue: Queue::default(),
                backoff: Backoff::new(shared.options.backoff),
                generation: 0,
                current: None,
                running: None,
                ready: false,
                reconcile_at: None,
                report_at: None,
                report_since: None,
                reporter: spawn_reporter(shared.clone()),
                history,
                orders: None,
                pending: None,
                aside: Default::default(),
            };
            lp.load_persisted();
            for input in early.inputs {
                lp.input(input).await;
            }
            let watcher = tokio::spawn(watch_engine(shared.clone(), inputs_tx));
            let result = lp.run(&mut inputs, notify).await;
            watcher.abort();
            result
        }
    };
    // The loop and its history are gone: the writer stores the last word.
    if let Err(e) = writer.await {
        tracing::error!(error = %e, "the history writer failed");
    }
    let mut recording = std::mem::take(
        &mut *shared
            .recording
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    while recording.join_next().await.is_some() {}
    result
}

/// The history's file in the state directory, next to the persisted
/// document (which is written first: the history may lag behind it).
const HISTORY_FILE: &str = "activities.json";
/// The history file's format.
const HISTORY_VERSION: u32 = 1;

/// The history as stored.
#[derive(Debug, Serialize, Deserialize)]
struct HistoryFile {
    version: u32,
    #[serde(flatten)]
    history: History,
}

/// The stored history; an empty one when there is none or it cannot be
/// read (then only the persisted document is known).
async fn load_history(dir: &Path) -> History {
    let path = dir.join(HISTORY_FILE);
    let bytes = match tokio::fs::read(&path).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return History::default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the history of documents; starting without it");
            return History::default();
        }
    };
    match serde_json::from_slice::<HistoryFile>(&bytes) {
        Ok(f) if f.version == HISTORY_VERSION => f.history,
        Ok(f) => {
            tracing::warn!(path = %path.display(), version = f.version, "the history of documents has another format; starting without it");
            History::default()
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the history of documents is unreadable; starting without it");
            History::default()
        }
    }
}

/// Stores every change of the history, the latest first when changes come
/// faster than the disk: on tokio's blocking pool, so the loop never waits.
/// Returns once the loop has dropped its end and the last change is stored.
async fn write_history(dir: PathBuf, mut history: watch::Receiver<History>) {
    while history.changed().await.is_ok() {
        let file = HistoryFile {
            version: HISTORY_VERSION,
            history: history.borrow_and_update().clone(),
        };
        let bytes = match serde_json::to_vec(&file) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the history of documents");
                continue;
            }
        };
        let target = dir.clone();
        match tokio::task::spawn_blocking(move || {
            crate::journal::write_atomic(&target, HISTORY_FILE, &bytes)
        })
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot store the history of documents")
            }
            Err(e) => tracing::warn!(error = %e, "cannot store the history of documents"),
        }
    }
}

/// Inputs kept while recovery retries, for the loop. Coalesced, so that a
/// flood during a long recovery cannot grow them: the latest
/// `currentstate/get`, the latest state files, one engine event and one
/// engine signal, one connect. MQTT documents are not coalesced here: the
/// MQTT source hands over one at a time and waits for its answer.
#[derive(Debug, Default)]
struct Backlog {
    inputs: Vec<Input>,
}

impl Backlog {
    fn push(&mut self, input: Input) {
        let same = |kept: &Input| match (kept, &input) {
            (Input::CurrentStateGet { .. }, Input::CurrentStateGet { .. })
            | (Input::Connected, Input::Connected)
            | (Input::Disconnected, Input::Disconnected)
            | (Input::Engine(EngineSignal::Event(_)), Input::Engine(EngineSignal::Event(_))) => {
                true
            }
            (Input::Engine(a), Input::Engine(b)) => {
                !matches!(a, EngineSignal::Event(_)) && !matches!(b, EngineSignal::Event(_))
            }
            (Input::Document(a), Input::Document(b)) => {
                matches!((&a.origin, &b.origin), (Origin::Files(_), Origin::Files(_)))
            }
            _ => false,
        };
        self.inputs.retain(|kept| !same(kept));
        self.inputs.push(input);
    }
}

/// Undoes what an interrupted activity left, retrying while the engine is
/// away. Inputs that arrive meanwhile are kept for the loop, in order.
/// Returns `None` when shutdown came first.
async fn recover<R: Runtime>(
    shared: &Shared<R>,
    history: &watch::Sender<History>,
    inputs: &mut mpsc::UnboundedReceiver<Input>,
    notify: &dyn Notify,
) -> Option<Backlog> {
    let mut kept = Backlog::default();
    let interrupted = match shared.state.read_journal() {
        Ok(journal) => journal,
        // Not berth's JSON: recovery works from the temporary names alone
        // (and sets the journal aside); keeping it would block every start.
        Err(e @ crate::journal::StateError::Corrupt { .. }) => {
            tracing::error!(error = %e, "the journal is unreadable; recovering from container names alone");
            None
        }
        // A disk that cannot be read now may be readable later: recovery
        // retries, and the journal is never thrown away for it.
        Err(e) => {
            tracing::error!(error = %e, "cannot read the journal; recovery retries");
            None
        }
    };
    let mut delay = Duration::from_millis(500);
    loop {
        match execute::recover(&*shared.rt, &shared.state, &shared.options.plan.instance).await {
            Ok(lines) => {
                for line in &lines {
                    tracing::warn!("recovered: {line}");
                }
                orchestrated::forget_aside(shared.state.path()).await;
                let word = interrupted
                    .as_ref()
                    .and_then(|j| execute::final_word(j, &lines, &shared.options.domain));
                if let Some(word) = word {
                    let status = word.payload.status;
                    history.send_modify(|h| h.finished(&word.activity_id, status));
                    crate::history::close_logged(
                        shared.state.path(),
                        &word.activity_id,
                        status,
                        word.payload.message.clone(),
                    )
                    .await;
                    shared.feedback(word);
                }
                return Some(kept);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = %humantime::format_duration(delay), "cannot recover yet");
                notify.status(&format!("waiting to recover: {e}"));
            }
        }
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                input = inputs.recv() => match input {
                    None | Some(Input::Shutdown) => return None,
                    Some(input) => kept.push(input),
                },
            }
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// The loop's state.
struct Loop<R> {
    shared: Arc<Shared<R>>,
    queue: Queue<Document>,
    backoff: Backoff,
    /// Bumped when a new document resets the back-off, so a job that was
    /// running for the previous document does not count against the new one.
    generation: u64,
    /// The last accepted document: what drift correction converges to.
    current: Option<Document>,
    running: Option<(JobFuture, String)>,
    ready: bool,
    reconcile_at: Option<Instant>,
    report_at: Option<Instant>,
    report_since: Option<Instant>,
    reporter: Reporter,
    /// What was answered before, owned here and stored by its writer.
    history: watch::Sender<History>,
    /// Orchestrated: the way to the running activity waiting for commands.
    orders: Option<(String, mpsc::Sender<execute::Order>)>,
    /// Orchestrated: the accepted document not persisted yet, with its
    /// text; it becomes the one enforced only once its activity completes.
    pending: Option<(Document, String)>,
    /// Orchestrated: drift correction beside the activity that waits.
    aside: orchestrated::Aside,
}

/// A job in progress. Polled by the loop itself rather than spawned: the
/// executor's futures are not `Send`, and dropping this future is how a job
/// is stopped at shutdown.
type JobFuture = Pin<Box<dyn Future<Output = Result<Report, AgentError>>>>;

/// Far enough away to mean "never" for a timer.
fn never() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

impl<R: Runtime + 'static> Loop<R> {
    fn options(&self) -> &AgentOptions {
        &self.shared.options
    }

    fn load_persisted(&mut self) {
        let text = match self.shared.state.load_desired() {
            Ok(Some(text)) => text,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the persisted document");
                return;
            }
        };
        let parsed = spec::parse(&text, &self.options().spec_options())
            .map_err(|rejection| rejection.lines());
        // The policy may have changed since the document was accepted: it
        // is judged again, against the policy in force now.
        let checked = parsed.and_then(|accepted| {
            self.refused_by_policy(&accepted.desired, &crate::policy::EnvBaseline::none())
                .map_or(Ok(accepted), Err)
        });
        match checked {
            Ok(accepted) => {
                tracing::info!(activity = %accepted.desired.activity_id, "enforcing the persisted document");
                let (id, timestamp) = (&accepted.desired.activity_id, accepted.desired.timestamp);
                self.history.send_if_modified(|h| {
                    let before = h.last().cloned();
                    h.persisted(id, timestamp);
                    h.last() != before.as_ref()
                });
                self.current = Some(Document {
                    desired: Arc::new(accepted.desired),
                    origin: Origin::Persisted,
                    warnings: Arc::from([]),
                });
                self.queue.request_reconcile(Reason::Startup);
            }
            Err(errors) => tracing::error!(
                errors = ?errors,
                "the persisted document is no longer valid or allowed; waiting for a new one"
            ),
        }
    }

    async fn run(
        &mut self,
        inputs: &mut mpsc::UnboundedReceiver<Input>,
        notify: &dyn Notify,
    ) -> Result<(), AgentError> {
        let alive_every = notify.interval();
        let mut alive = tokio::time::interval(alive_every.unwrap_or(Duration::from_secs(3600)));
        self.schedule_reconcile();
        loop {
            if self.running.is_none() && self.aside.job.is_none() {
                self.start_next();
            } else if self.running.is_some() {
                self.start_aside();
            }
            if !self.ready && self.running.is_none() && self.queue.is_empty() {
                self.ready = true;
                notify.ready();
                notify.status("enforcing the desired state");
                tracing::info!("ready");
            }
            let reconcile_at = self.reconcile_at.unwrap_or_else(never);
            let report_at = self.report_at.unwrap_or_else(never);
            tokio::select! {
                input = inputs.recv() => match input {
                    None | Some(Input::Shutdown) => {
                        notify.stopping();
                        return self.shutdown(inputs, notify).await;
                    }
                    Some(input) => self.input(input).await,
                },
                done = running(&mut self.running), if self.running.is_some() => {
                    self.running = None;
                    self.finished(done?);
                }
                done = running(&mut self.aside.job), if self.aside.job.is_some() => {
                    self.aside.job = None;
                    self.finished(done?);
                }
                () = tokio::time::sleep_until(reconcile_at), if self.reconcile_at.is_some() => {
                    self.reconcile_at = None;
                    let retry = self.backoff.next_retry(Instant::now()).is_some();
                    self.queue.request_reconcile(if retry { Reason::Retry } else { Reason::Interval });
                }
                () = tokio::time::sleep_until(report_at), if self.report_at.is_some() => {
                    self.report_at = None;
                    self.report_since = None;
                    self.reporter.request(Request::Own(format!("current-state-{}", now_ms())));
                }
                _ = alive.tick(), if alive_every.is_some() => notify.alive(),
            }
        }
    }

    async fn input(&mut self, input: Input) {
        match input {
            Input::Document(incoming) => self.document(incoming).await,
            Input::CurrentStateGet { activity_id, .. } => {
                self.reporter.request(Request::Get(activity_id));
            }
            Input::Command { command, .. } => self.command(command),
            Input::Connected => {
                self.reporter
                    .request(Request::Own(format!("initial-current-state-{}", now_ms())));
            }
            // The MQTT source logs it and reconnects; nothing to do here.
            Input::Disconnected => {}
            Input::Engine(EngineSignal::Event(event)) => self.engine_event(&event),
            Input::Engine(EngineSignal::Lost(why)) => {
                tracing::warn!(error = %why, "lost the Docker engine; waiting for it")
            }
            Input::Engine(EngineSignal::Back) => {
                tracing::info!("the Docker engine answers again");
                self.soon_reconcile();
                self.soon_report();
            }
            Input::Shutdown => {}
        }
    }

    async fn document(&mut self, incoming: Incoming) {
        let Incoming {
            origin,
            body,
            ack: acker,
            superseded,
        } = incoming;
        let domain = self.options().domain.clone();
        let refuse = |activity_id: &str, errors: Vec<String>| {
            tracing::warn!(origin = %origin, activity = %activity_id, errors = ?errors, "refused a desired state");
            let message = errors.join("; ");
            let tracker = Tracker::new(activity_id, &domain);
            self.shared
                .feedback(tracker.message(Status::IdentificationFailed, Some(message)));
        };
        let newest = match &body {
            Body::Text(text) => activity_id_in(text),
            Body::Refused { activity_id, .. } => activity_id.clone(),
        };
        self.superseded_unread(&superseded, &newest);
        let text = match body {
            Body::Refused {
                activity_id,
                errors,
            } => {
                refuse(&activity_id, errors);
                ack(acker);
                return;
            }
            Body::Text(text) => text,
        };
        let accepted = match spec::parse(&text, &self.options().spec_options()) {
            Ok(a) => a,
            Err(rejection) => {
                refuse(&newest, rejection.lines());
                ack(acker);
                return;
            }
        };
        let activity_id = accepted.desired.activity_id.clone();
        // What a broker delivers may be delivered again (QoS 1 after a lost
        // acknowledgement or a broker restart) or replayed (a retained
        // message at every subscription). A state file is read only when it
        // changed, and editing it without a new activity id is how files
        // are used: only MQTT documents are judged.
        if origin == Origin::Mqtt && !activity_id.is_empty() {
            let verdict = self
                .history
                .borrow()
                .judge(&activity_id, accepted.desired.timestamp);
            if verdict != Verdict::New {
                self.not_again(&activity_id, verdict);
                ack(acker);
                return;
            }
        }
        let baseline = self
            .current
            .as_ref()
            .map_or_else(crate::policy::EnvBaseline::none, |d| {
                crate::policy::EnvBaseline::from_desired(&d.desired)
            });
        if let Some(errors) = self.refused_by_policy(&accepted.desired, &baseline) {
            refuse(&activity_id, errors);
            ack(acker);
            return;
        }
        for w in &accepted.warnings {
            tracing::warn!(activity = %activity_id, "{w}");
        }
        let warnings: Arc<[String]> = accepted.warnings.iter().map(ToString::to_string).collect();
        if self.orchestrated() && origin == Origin::Mqtt {
            self.accept_orchestrated(accepted.desired, origin, text, warnings);
            ack(acker);
            return;
        }
        if let Err(e) = self.shared.state.store_desired(&text).await {
            // Not acknowledged: a document berth could not keep must come
            // again (the MQTT connection asks the broker for it later), or
            // a restart would lose it while its sender thinks it arrived.
            let again = if origin == Origin::Mqtt {
                "; not acknowledged, so the broker sends it again"
            } else {
                ""
            };
            refuse(
                &activity_id,
                vec![format!("cannot persist the document: {e}{again}")],
            );
            drop(acker);
            return;
        }
        ack(acker);
        tracing::info!(origin = %origin, activity = %activity_id, "accepted a desired state");
        self.history
            .send_modify(|h| h.accepted(&activity_id, accepted.desired.timestamp));
        let document = Document {
            desired: Arc::new(accepted.desired),
            origin,
            warnings,
        };
        self.current = Some(document.clone());
        self.backoff.reset();
        self.generation += 1;
        if let Some(old) = self.queue.offer(document) {
            let old_id = &old.desired.activity_id;
            let tracker = Tracker::new(old_id, &domain);
            self.shared.feedback(tracker.message(
                Status::Superseded,
                Some(format!("superseded by {activity_id} before it started")),
            ));
            self.history
                .send_modify(|h| h.finished(old_id, Status::Superseded));
        }
    }

    /// The policy's refusal of `desired`, one line per violation; `None`
    /// when it is allowed. The env rule compares with `baseline`, the
    /// document enforced now.
    fn refused_by_policy(
        &self,
        desired: &spec::DesiredState,
        baseline: &crate::policy::EnvBaseline,
    ) -> Option<Vec<String>> {
        let options = self.options();
        options
            .policy
            .check(
                desired,
                baseline,
                &options.plan.system_containers,
                &crate::policy::RealHostPaths,
            )
            .err()
            .map(|refusal| refusal.lines())
    }

    /// Answers the documents a source replaced with a newer one before the
    /// loop read them: `SUPERSEDED`, unless one was answered before (a
    /// redelivery of the running activity must not be called superseded).
    fn superseded_unread(&self, superseded: &[String], newest: &str) {
        let mut answered = Vec::new();
        for id in superseded {
            if id.is_empty() || id == newest || self.history.borrow().knows(id) {
                continue;
            }
            let tracker = Tracker::new(id, &self.options().domain);
            let by = if newest.is_empty() {
                "a newer message".to_string()
            } else {
                newest.to_string()
            };
            self.shared.feedback(tracker.message(
                Status::Superseded,
                Some(format!("superseded by {by} before berth read it")),
            ));
            answered.push(id.as_str());
        }
        if !answered.is_empty() {
            self.history.send_modify(|h| {
                for id in &answered {
                    h.answered(id, Status::Superseded);
                }
            });
        }
    }

    /// Whether the document's activity is running or waiting to run (or,
    /// for the persisted document, being enforced at start-up).
    fn in_progress(&self, activity_id: &str) -> bool {
        self.running
            .as_ref()
            .is_some_and(|(_, id)| id == activity_id)
            || self
                .queue
                .waiting()
                .is_some_and(|d| d.desired.activity_id == activity_id)
            || (!self.ready
                && self
                    .current
                    .as_ref()
                    .is_some_and(|d| d.desired.activity_id == activity_id))
    }

    /// Answers a document that is not applied: it was answered before, or
    /// it is older than the last accepted one. The answer for a document
    /// seen before is what it got then, so an Update Manager that missed
    /// it hears it now; one whose activity still runs gets nothing extra,
    /// its own feedback follows.
    fn not_again(&self, activity_id: &str, verdict: Verdict) {
        let again = "delivered again, it is not applied twice";
        let (status, message) = match verdict {
            Verdict::New => return,
            Verdict::Again { .. } if self.in_progress(activity_id) => {
                tracing::info!(activity = %activity_id, "delivered again while it is being applied; acknowledged, not applied twice");
                return;
            }
            Verdict::Again {
                status: Some(status),
                since,
            } => {
                let since = since
                    .map(|newer| format!(", and {newer} was accepted since"))
                    .unwrap_or_default();
                let then = status_name(status);
                (
                    status,
                    format!("{activity_id} was answered {then} before{since}; {again}"),
                )
            }
            Verdict::Again {
                status: None,
                since: Some(newer),
            } => (
                Status::Superseded,
                format!("{activity_id} was accepted before and {newer} since; {again}"),
            ),
            Verdict::Again {
                status: None,
                since: None,
            } => {
                let blocked = self.backoff.blocked(Instant::now());
                if blocked.is_empty() {
                    (
                        Status::Completed,
                        format!("{activity_id} was accepted before and the device runs it; {again}"),
                    )
                } else {
                    let names: Vec<&str> = blocked.iter().map(String::as_str).collect();
                    (
                        Status::Incomplete,
                        format!(
                            "{activity_id} was accepted before; {} not converged yet ({again})",
                            names.join(", ")
                        ),
                    )
                }
            }
            Verdict::Stale {
                newer,
                timestamp,
                newer_timestamp,
            } => (
                Status::Superseded,
                format!(
                    "{activity_id} (timestamp {timestamp}) is older than {newer} (timestamp {newer_timestamp}), which was accepted; not applied"
                ),
            ),
        };
        let tracker = Tracker::new(activity_id, &self.options().domain);
        self.shared.feedback(tracker.message(status, Some(message)));
    }

    fn engine_event(&mut self, event: &Event) {
        tracing::debug!(action = %event.action, name = %event.name, "engine event");
        self.soon_report();
        let ours = self.current.as_ref().is_some_and(|d| {
            d.desired.container(&event.name).is_some() || event.action == "rename"
        });
        let temporary = event.name.ends_with(NEW_SUFFIX) || event.name.ends_with(OLD_SUFFIX);
        if ours
            && !temporary
            && matches!(event.action.as_str(), "die" | "destroy" | "rename" | "stop")
        {
            self.soon_reconcile();
        }
    }

    /// Reports the current state after the events settle, but at least every
    /// few debounce periods while they keep coming.
    fn soon_report(&mut self) {
        let now = Instant::now();
        let since = *self.report_since.get_or_insert(now);
        let debounce = self.options().debounce;
        self.report_at = Some((now + debounce).min(since + debounce * 5));
    }

    fn soon_reconcile(&mut self) {
        if self.options().reconcile_interval.is_zero() || self.current.is_none() {
            return;
        }
        let at = Instant::now() + self.options().debounce.min(REPAIR_DELAY);
        self.reconcile_at = Some(self.reconcile_at.map_or(at, |t| t.min(at)));
    }

    /// The next periodic reconcile, or an earlier back-off retry.
    fn schedule_reconcile(&mut self) {
        let interval = self.options().reconcile_interval;
        if interval.is_zero() || self.current.is_none() {
            self.reconcile_at = None;
            return;
        }
        let now = Instant::now();
        let mut at = now + interval;
        if let Some(retry) = self.backoff.next_retry(Instant::now()) {
            let wait = retry.saturating_duration_since(Instant::now());
            at = at.min(now + wait);
        }
        // An event-driven reconcile already due earlier stays due.
        if let Some(pending) = self.reconcile_at {
            at = at.min(pending);
        }
        self.reconcile_at = Some(at);
    }

    fn start_next(&mut self) {
        let Some(next) = self.queue.take() else {
            return;
        };
        self.running = self.start(next, None);
    }

    /// Starts a job; `aside` is for a drift correction beside an
    /// orchestrated activity, which leaves the containers it owns alone.
    fn start(
        &mut self,
        next: Job<Document>,
        aside: Option<BTreeSet<String>>,
    ) -> Option<(JobFuture, String)> {
        let (document, activity_id, rollback, reason) = match next {
            Job::Apply(d) => {
                let id = d.desired.activity_id.clone();
                (d, id, self.options().execute.rollback, None)
            }
            Job::Reconcile(reason) => {
                let current = self.current.clone()?;
                // Converge container by container: one that fails is
                // rolled back alone and backed off, the others go on.
                (
                    current,
                    format!("reconcile-{}", now_ms()),
                    RollbackMode::Container,
                    Some(reason),
                )
            }
        };
        let now = Instant::now();
        let blocked: BTreeSet<String> = match reason {
            None => BTreeSet::new(),
            Some(_) => self.backoff.blocked(now),
        };
        let span = tracing::info_span!("activity", activityId = %activity_id);
        span.in_scope(|| match reason {
            None => tracing::info!(origin = %document.origin, "applying a desired state"),
            Some(r) => tracing::debug!(reason = r.as_str(), blocked = ?blocked, "reconciling"),
        });
        let shared = self.shared.clone();
        let id = activity_id.clone();
        let commanded = self.orchestrated() && document.origin == Origin::Mqtt;
        let orders = (reason.is_none() && commanded).then(|| {
            let (tx, rx) = mpsc::channel(orchestrated::ORDERS);
            self.orders = Some((activity_id.clone(), tx));
            rx
        });
        let owned = orders.as_ref().map(|_| self.aside.watch());
        let work = Work {
            desired: document.desired,
            activity_id: id,
            rollback,
            reason,
            blocked,
            generation: self.generation,
            source: match document.origin {
                Origin::Mqtt => crate::history::Source::Mqtt,
                Origin::Files(_) => crate::history::Source::File,
                Origin::Persisted => crate::history::Source::State,
                Origin::Api => crate::history::Source::Api,
            },
            orders,
            warnings: match reason {
                None => document.warnings.clone(),
                Some(_) => Arc::from([]),
            },
            owned,
            aside,
        };
        let task: JobFuture = Box::pin(job(shared, work).instrument(span));
        Some((task, activity_id))
    }

    fn finished(&mut self, report: Report) {
        if self
            .orders
            .as_ref()
            .is_some_and(|(id, _)| *id == report.activity_id)
        {
            self.orders = None;
            self.aside.owned = None;
            self.orchestrated_finished(&report);
        }
        let now = Instant::now();
        let current = report.generation == self.generation;
        for (name, ok) in report.attempted.iter().filter(|_| current) {
            self.backoff.attempted(name, *ok, now);
            if !ok {
                tracing::warn!(
                    container = %name,
                    failures = self.backoff.failures(name),
                    retry_in = %self
                        .backoff
                        .blocked_until(name, now)
                        .map_or_else(String::new, |t| humantime::format_duration(t - now).to_string()),
                    "could not converge; backing off"
                );
            }
        }
        for name in report.in_sync.iter().filter(|_| current) {
            self.backoff.in_sync(name, now);
        }
        if let Some(status) = report.status {
            self.history
                .send_modify(|h| h.finished(&report.activity_id, status));
        }
        if report.reason == Some(Reason::Startup) {
            self.startup_enforced(&report);
        }
        if report.visible {
            self.reporter.request(Request::Own(report.activity_id));
        }
        self.schedule_reconcile();
    }

    /// After a restart the persisted document's own activity may have no
    /// final status on record (berth stopped before it ended, or the history
    /// is older than it): the start-up enforcement gives it one, so a
    /// redelivery of it can be answered.
    fn startup_enforced(&mut self, report: &Report) {
        let Some(id) = self.current.as_ref().map(|d| d.desired.activity_id.clone()) else {
            return;
        };
        let converged = report.attempted.iter().all(|(_, ok)| *ok);
        self.history.send_if_modified(|h| {
            if h.last()
                .is_some_and(|l| l.activity_id == id && l.status.is_none())
            {
                let status = if converged {
                    Status::Completed
                } else {
                    Status::Incomplete
                };
                h.finished(&id, status);
                return true;
            }
            false
        });
    }

    async fn shutdown(
        &mut self,
        inputs: &mut mpsc::UnboundedReceiver<Input>,
        notify: &dyn Notify,
    ) -> Result<(), AgentError> {
        tracing::info!("stopping");
        inputs.close();
        // An orchestrated activity waiting for a command ends (undone) now.
        self.orders = None;
        self.finish_aside().await;
        if let Some((mut task, activity_id)) = self.running.take() {
            let grace = self.options().shutdown_grace;
            tracing::info!(activity = %activity_id, grace = %humantime::format_duration(grace), "waiting for the running activity to end");
            let waited = async {
                // Keep the watchdog fed while the activity ends.
                let mut alive =
                    tokio::time::interval(notify.interval().unwrap_or(Duration::from_secs(3600)));
                loop {
                    tokio::select! {
                        result = &mut task => break result,
                        _ = alive.tick() => notify.alive(),
                    }
                }
            };
            match tokio::time::timeout(grace, waited).await {
                Ok(result) => {
                    if let Some(status) = result?.status {
                        self.history
                            .send_modify(|h| h.finished(&activity_id, status));
                    }
                }
                Err(_) => {
                    drop(task);
                    tracing::warn!(activity = %activity_id, "the activity did not end in time; rolling it back");
                    let journal = self.shared.state.read_journal().ok().flatten();
                    let result = execute::recover(
                        &*self.shared.rt,
                        &self.shared.state,
                        &self.options().plan.instance,
                    )
                    .await;
                    let (status, message) = match (result, journal) {
                        (Ok(lines), Some(j)) => {
                            let (status, words) = execute::verdict(&j, &lines);
                            let phase = &j.phase;
                            (status, format!("berth was stopped during {phase}; {words}"))
                        }
                        (Ok(_), None) => (
                            Status::Incomplete,
                            "berth was stopped during the activity; nothing had changed".into(),
                        ),
                        (Err(e), _) => (
                            Status::IncompleteInconsistent,
                            format!("berth was stopped during the activity; undoing it failed ({e}) and is retried at the next start"),
                        ),
                    };
                    let tracker = Tracker::new(&activity_id, &self.options().domain);
                    self.shared.feedback(tracker.message(status, Some(message)));
                    self.history
                        .send_modify(|h| h.finished(&activity_id, status));
                }
            }
        }
        if let Some(waiting) = self.queue.drain() {
            tracing::info!(activity = %waiting.desired.activity_id, "a waiting document is enforced at the next start");
        }
        Ok(())
    }
}

/// The running job's end; never, when none runs.
async fn running(job: &mut Option<(JobFuture, String)>) -> Result<Report, AgentError> {
    match job {
        Some((task, _)) => task.await,
        None => std::future::pending().await,
    }
}

fn ack(ack: Option<oneshot::Sender<()>>) {
    if let Some(a) = ack {
        let _ = a.send(());
    }
}

/// The activity id of a document or request, read without trusting the
/// rest of it; empty when it names none.
fn activity_id_in(payload: impl AsRef<[u8]>) -> String {
    #[derive(Deserialize)]
    struct Id {
        #[serde(rename = "activityId")]
        activity_id: Option<String>,
    }
    serde_json::from_slice::<Id>(payload.as_ref())
        .ok()
        .and_then(|i| i.activity_id)
        .unwrap_or_default()
}

/// Waits until the engine answers, logging once.
async fn wait_for_engine<R: Runtime>(rt: &R) {
    let mut delay = Duration::from_millis(500);
    let mut warned = false;
    loop {
        match rt.ping().await {
            Ok(_) => return,
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "the Docker engine does not answer; waiting");
                    warned = true;
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(15));
    }
}

/// Finishes what a failed rollback (or a crash) left in the journal before
/// anything is planned: until then the device may be half-way, and a plan
/// over it could remove the only copy of the old version. Retried with
/// back-off; the loop keeps answering meanwhile (it polls the job).
async fn settle<R: Runtime>(shared: &Shared<R>) {
    let mut delay = Duration::from_secs(1);
    loop {
        if let Ok(None) = shared.state.read_journal() {
            return;
        }
        match execute::recover(&*shared.rt, &shared.state, &shared.options.plan.instance).await {
            Ok(lines) => {
                for line in &lines {
                    tracing::warn!("recovered: {line}");
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = %humantime::format_duration(delay), "the previous activity is not undone yet; retrying before anything else");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

/// What one job is to do.
struct Work {
    /// Orchestrated: where the commands for this activity come from.
    orders: Option<mpsc::Receiver<execute::Order>>,
    /// The document's validation warnings, reported with IDENTIFYING.
    warnings: Arc<[String]>,
    desired: Arc<DesiredState>,
    activity_id: String,
    rollback: RollbackMode,
    /// Set for reconciles, which stay silent when nothing needs doing.
    reason: Option<Reason>,
    /// Containers in back-off: not touched this time.
    blocked: BTreeSet<String>,
    generation: u64,
    /// Where the document came from, for the activity history.
    source: crate::history::Source,
    /// Orchestrated: where the activity says which containers it changes.
    owned: Option<watch::Sender<Option<BTreeSet<String>>>>,
    /// A drift correction beside an orchestrated activity: the containers
    /// that activity changes, left alone.
    aside: Option<BTreeSet<String>>,
}

/// One job: plan, then carry the plan out with feedback.
async fn job<R: Runtime + 'static>(
    shared: Arc<Shared<R>>,
    work: Work,
) -> Result<Report, AgentError> {
    let Work {
        desired,
        activity_id,
        rollback,
        reason,
        blocked,
        generation,
        source,
        orders,
        warnings,
        owned,
        aside,
    } = work;
    let options = &shared.options;
    let mut desired_here = (*desired).clone();
    desired_here.activity_id = activity_id.clone();
    let desired = &desired_here;
    let mut tracker = Tracker::new(&activity_id, &options.domain);
    let mut report = Report {
        activity_id: activity_id.clone(),
        generation,
        reason,
        ..Default::default()
    };
    // A document's sender hears at once that berth has it and is working
    // on it, before the engine is asked anything (issue 25: MQTT ->
    // IDENTIFYING under 20 ms; an engine away keeps it IDENTIFYING).
    if reason.is_none() {
        report.visible = true;
        let words = (!warnings.is_empty()).then(|| warnings.join("; "));
        shared.feedback(tracker.message(Status::Identifying, words));
    }
    wait_for_engine(&*shared.rt).await;
    // Beside an orchestrated activity, the journal is that activity's own,
    // live: never recovered from here.
    if aside.is_none() {
        settle(&shared).await;
    }
    let observed = match observe::gather_for(&*shared.rt, desired).await {
        Ok(o) => o,
        Err(e) => {
            if reason.is_none() {
                shared.feedback(tracker.message(Status::IdentificationFailed, Some(e.to_string())));
                report.status = Some(Status::IdentificationFailed);
            } else {
                tracing::warn!(error = %e, "cannot read the engine to reconcile");
            }
            return Ok(report);
        }
    };
    let mut plan = plan::compute(desired, &observed, &options.plan);
    if let Some(owned) = &owned {
        let _ = owned.send(Some(orchestrated::changed(&plan)));
    }
    for entry in plan.actions.iter_mut() {
        if entry.action.changes() && orchestrated::owned_by(aside.as_ref(), &entry.id) {
            tracing::debug!(container = %entry.id, "left to the orchestrated activity: not touched");
            entry.action = Action::Ignore;
        } else if entry.action.changes() && blocked.contains(&entry.id) {
            tracing::info!(container = %entry.id, "backing off: not touched this time");
            entry.action = Action::Ignore;
        }
    }
    report.in_sync = plan
        .actions
        .iter()
        .filter(|e| e.action == Action::Keep)
        .map(|e| e.id.clone())
        .collect();
    if reason.is_some() {
        if !plan.has_changes() {
            tracing::debug!("nothing drifted");
            return Ok(report);
        }
        tracing::info!(changes = %plan.summary(), "correcting drift");
        report.visible = true;
        shared.feedback(tracker.message(Status::Identifying, None));
    }
    let execute_options = ExecuteOptions {
        rollback,
        drift_repair: reason.is_some(),
        ..options.execute.clone()
    };
    let mut last = Some(Status::Identifying);
    let mut sink = |f: Feedback| {
        log_feedback(&f, &mut last);
        shared.publish(Outbound::Feedback(f));
    };
    let activity = Activity {
        desired,
        plan: &plan,
        observed: &observed,
    };
    // Documents' activities go into the history; drift corrections do not
    // (they run every few minutes and would push the documents out).
    let recorder = match reason {
        None => Some(
            crate::history::Recorder::start(
                shared.state.path(),
                &activity_id,
                source,
                crate::history::persisted_document(shared.state.path()).await,
                &observed,
                desired,
                &options.plan.instance,
            )
            .await,
        ),
        Some(_) => None,
    };
    let outcome = match orders {
        Some(mut orders) => {
            execute::orchestrate(
                &*shared.rt,
                &shared.state,
                activity,
                &execute_options,
                &mut tracker,
                &mut sink,
                &mut orders,
                options.phase_timeout,
            )
            .await?
        }
        None if aside.is_some() => {
            // Its own undo log: the activity's is in the state directory.
            let Some(state) = orchestrated::aside_state(shared.state.path()).await else {
                return Ok(report);
            };
            execute::carry_out(
                &*shared.rt,
                &state,
                activity,
                &execute_options,
                &mut tracker,
                &mut sink,
            )
            .await?
        }
        None => {
            execute::carry_out(
                &*shared.rt,
                &shared.state,
                activity,
                &execute_options,
                &mut tracker,
                &mut sink,
            )
            .await?
        }
    };
    if let Some(recorder) = recorder {
        // In the background: the activity is over once its final feedback
        // is out, and the loop must hear so at once (a redelivery that
        // comes now is answered with that final status).
        let (for_task, desired, ended) = (shared.clone(), desired.clone(), outcome.clone());
        let changed = plan.has_changes();
        let mut recording = shared
            .recording
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while recording.try_join_next().is_some() {}
        recording.spawn(async move {
            recorder
                .finish(&*for_task.rt, &desired, &ended, changed)
                .await;
        });
    }
    if reason.is_none() {
        report.status = Some(outcome.status);
    }
    // After an activity-wide rollback, the containers that did not fail were
    // undone too: they were not repaired, and are not to blame.
    let undone = rollback == RollbackMode::Activity && outcome.status != Status::Completed;
    report.attempted = plan
        .actions
        .iter()
        .filter(|e| e.action.changes())
        .filter_map(|e| {
            let ok = !outcome.failed.contains(&e.id);
            (!(ok && undone)).then(|| (e.id.clone(), ok))
        })
        .collect();
    Ok(report)
}

/// A request for the current state.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    /// A `currentstate/get`: a newer one answers for it.
    Get(String),
    /// berth's own: at a connect, after an activity, after engine events.
    Own(String),
}

/// berth's own requests waiting at most; older ones give way (a newer
/// answer reports the same inventory, later).
const MAX_OWN_REQUESTS: usize = 4;

/// The requests the reporter has not answered yet: at most one
/// `currentstate/get` (the latest: each answer is the whole inventory, so
/// the latest request's answer serves the ones it replaced) and a few of
/// berth's own, in order. A `currentstate/get` is answered at once, the
/// next one no sooner than [`AgentOptions::get_interval`] later: a flood
/// of them gets about one answer per interval.
#[derive(Debug, Default)]
struct Requests {
    waiting: VecDeque<Request>,
    /// `currentstate/get` requests replaced since the last answer.
    coalesced: u64,
    /// When the next `currentstate/get` may be answered.
    get_not_before: Option<Instant>,
}

/// What the reporter does next.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Answer this, which for a `currentstate/get` answers for so many more.
    Answer(Request, u64),
    /// Only a `currentstate/get` waits, until then.
    Wait(Instant),
    /// Nothing waits.
    Idle,
}

impl Requests {
    fn push(&mut self, request: Request) {
        match request {
            Request::Get(_) => {
                if let Some(get) = self
                    .waiting
                    .iter_mut()
                    .find(|r| matches!(r, Request::Get(_)))
                {
                    *get = request;
                    self.coalesced += 1;
                    return;
                }
            }
            Request::Own(_) => {
                let own = self
                    .waiting
                    .iter()
                    .filter(|r| matches!(r, Request::Own(_)))
                    .count();
                if own >= MAX_OWN_REQUESTS {
                    if let Some(i) = self
                        .waiting
                        .iter()
                        .position(|r| matches!(r, Request::Own(_)))
                    {
                        self.waiting.remove(i);
                    }
                }
            }
        }
        self.waiting.push_back(request);
    }

    /// The next request to answer at `now`; a `currentstate/get` waits for
    /// its interval unless `closing` (the loop is gone: answer what waits
    /// and end).
    fn next(&mut self, now: Instant, get_interval: Duration, closing: bool) -> Next {
        let due = |r: &Request| match r {
            Request::Get(_) => closing || self.get_not_before.is_none_or(|t| t <= now),
            Request::Own(_) => true,
        };
        let Some(i) = self.waiting.iter().position(due) else {
            return match self.get_not_before {
                Some(t) if !self.waiting.is_empty() => Next::Wait(t),
                _ => Next::Idle,
            };
        };
        let Some(request) = self.waiting.remove(i) else {
            return Next::Idle;
        };
        match request {
            Request::Get(_) => {
                self.get_not_before = Some(now + get_interval);
                Next::Answer(request, std::mem::take(&mut self.coalesced))
            }
            Request::Own(_) => Next::Answer(request, 0),
        }
    }
}

/// The loop's end of the reporter: requests go into [`Requests`], and a
/// wake-up (at most one waiting) tells the reporter to look. Dropping it
/// ends the reporter once it has answered what waits.
struct Reporter {
    requests: Arc<Mutex<Requests>>,
    wake: mpsc::Sender<()>,
}

impl Reporter {
    fn request(&self, request: Request) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request);
        // Full: a wake-up waits already, and it will see this request too.
        let _ = self.wake.try_send(());
    }
}

/// Builds and publishes the current state, one request at a time.
fn spawn_reporter<R: Runtime + 'static>(shared: Arc<Shared<R>>) -> Reporter {
    let requests = Arc::new(Mutex::new(Requests::default()));
    let (wake, mut woken) = mpsc::channel::<()>(1);
    let queue = requests.clone();
    let interval = shared.options.get_interval;
    tokio::spawn(async move {
        let mut closing = false;
        loop {
            let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next(
                Instant::now(),
                interval,
                closing,
            );
            let activity_id = match next {
                Next::Answer(Request::Get(id), coalesced) => {
                    if coalesced > 0 {
                        tracing::debug!(activity = %id, coalesced, "answering the latest currentstate/get for the ones before it");
                    }
                    id
                }
                Next::Answer(Request::Own(id), _) => id,
                Next::Wait(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        woke = woken.recv() => closing = woke.is_none(),
                    }
                    continue;
                }
                Next::Idle if closing => return,
                Next::Idle => {
                    closing = woken.recv().await.is_none();
                    continue;
                }
            };
            if shared.out.is_none() {
                continue;
            }
            match current_state(&shared, &activity_id).await {
                Ok(state) => {
                    tracing::debug!(activity = %activity_id, containers = state.payload.software_nodes.len().saturating_sub(1), "publishing the current state");
                    shared.publish(Outbound::CurrentState(state));
                }
                Err(e) => {
                    tracing::warn!(activity = %activity_id, error = %e, "cannot read the current state")
                }
            }
        }
    });
    Reporter { requests, wake }
}

/// The Kanto inventory of every container on the engine.
async fn current_state<R: Runtime>(
    shared: &Shared<R>,
    activity_id: &str,
) -> Result<CurrentState, crate::runtime::RuntimeError> {
    let observed = observe::gather(&*shared.rt, &[], &[]).await?;
    let images = observe::images_of(&*shared.rt, &observed).await?;
    let options = InventoryOptions {
        domain: shared.options.domain.clone(),
        redact: shared.options.redact_env.clone(),
        verbose: shared.options.verbose_inventory,
    };
    Ok(inventory::build(
        &observed,
        &images,
        activity_id,
        now_ms(),
        &options,
    ))
}

/// Forwards engine events, and tells the loop when the engine goes away
/// and comes back.
async fn watch_engine<R: Runtime>(shared: Arc<Shared<R>>, inputs: mpsc::UnboundedSender<Input>) {
    loop {
        let mut events = shared.rt.events();
        let why = loop {
            match events.next().await {
                Some(Ok(event)) => {
                    if inputs
                        .send(Input::Engine(EngineSignal::Event(event)))
                        .is_err()
                    {
                        return;
                    }
                }
                Some(Err(e)) => break e.to_string(),
                None => break "the event stream ended".to_string(),
            }
        };
        drop(events);
        if shared.rt.ping().await.is_ok() {
            // Still there: the stream alone broke; pick it up again.
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        if inputs.send(Input::Engine(EngineSignal::Lost(why))).is_err() {
            return;
        }
        wait_for_engine(&*shared.rt).await;
        if inputs.send(Input::Engine(EngineSignal::Back)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
