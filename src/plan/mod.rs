//! The planner: the fewest actions that take what exists to what is desired,
//! each with the reasons a person needs to trust it. Pure: no I/O.
//!
//! How "differs" is decided:
//! - A container berth created carries the spec hash it was created from.
//!   Same hash: only the in-place settings (restart policy, resources) and the
//!   image behind a tag are compared with what the engine reports.
//! - Different hash, same hash scheme: the container is recreated; the fields
//!   that differ are named as reasons.
//! - A hash from an older scheme (berth was upgraded): the fields berth owns
//!   are compared instead, so an upgrade never recreates a fleet.
//! - An adopted container (it has the name of a component but berth did not
//!   create it) is compared only on the keys the document sets; image
//!   defaults (env, cmd, labels, exposed ports) never count as differences.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Serialize;

use crate::labels::Ownership;
use crate::observe::{Observed, ObservedContainer};
use crate::redact::Redactor;
use crate::runtime::{ImageDetails, Status};
use crate::spec::hash::{hash_version, spec_hash, HASH_VERSION};
use crate::spec::model::*;
use crate::spec::params;

mod diff;
pub mod execution;

pub use diff::Diff;
pub use execution::{temporary, Execution, Pull, Temporary, NEW_SUFFIX, OLD_SUFFIX};

/// Which containers berth may remove when they are not desired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Only containers berth created (labelled) are removed.
    #[default]
    Owned,
    /// Kanto's semantics for dedicated devices: every non-system container
    /// absent from the desired state is removed.
    All,
}

/// Rules for one planning run that do not come from the document.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Removal scope.
    pub scope: Scope,
    /// The configured system containers (a document's `systemContainers`
    /// adds to this list, never removes from it).
    pub system_containers: Vec<String>,
    /// This berth's instance name: containers another instance created are
    /// left alone, whatever the scope.
    pub instance: String,
    /// What is secret: reasons and diffs say that a secret changed, never
    /// to what, since plans are printed, logged and published.
    pub redactor: Redactor,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            scope: Scope::Owned,
            system_containers: Vec::new(),
            instance: crate::labels::DEFAULT_INSTANCE.to_string(),
            redactor: Redactor::default(),
        }
    }
}

/// What happens to one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// It does not exist: create and start it.
    Create,
    /// Something that needs a new container differs: replace it.
    Recreate,
    /// Only restart policy or resources differ: change them in place.
    Update,
    /// Nothing differs but it should be running.
    Start,
    /// Nothing to do.
    Keep,
    /// It is berth's and no longer desired.
    Remove,
    /// berth must not touch it (system or unmanaged container).
    Ignore,
}

impl Action {
    /// Whether carrying out the action changes anything on the engine.
    pub fn changes(self) -> bool {
        !matches!(self, Action::Keep | Action::Ignore)
    }

    /// The word used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Recreate => "recreate",
            Action::Update => "update",
            Action::Start => "start",
            Action::Keep => "keep",
            Action::Remove => "remove",
            Action::Ignore => "ignore",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One container's entry in a plan.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanEntry {
    /// Container name.
    pub id: String,
    /// What happens.
    pub action: Action,
    /// Why, one specific sentence each.
    pub reasons: Vec<String>,
    /// Unified diff of the normalised settings (recreate and update only).
    // Rendered when first read (see `Diff`); the schema says a string.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub diff: Option<Diff>,
    /// The desired component version (or what the container reports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The existing container's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// How the executor carries it out (decided here, not there).
    #[serde(skip)]
    #[schemars(skip)]
    pub execution: Execution,
}

/// The whole plan, in the order the actions should run.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "berth plan")]
pub struct Plan {
    /// The document's activity id.
    pub activity_id: String,
    /// One entry per container involved.
    pub actions: Vec<PlanEntry>,
    /// Things that will make the apply fail or surprise, found while planning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Plan {
    /// How many entries have this action.
    pub fn count(&self, action: Action) -> usize {
        self.actions.iter().filter(|e| e.action == action).count()
    }

    /// Whether applying the plan would change anything.
    pub fn has_changes(&self) -> bool {
        self.actions.iter().any(|e| e.action.changes())
    }

    /// The entry for a container.
    pub fn entry(&self, name: &str) -> Option<&PlanEntry> {
        self.actions.iter().find(|e| e.id == name)
    }

    /// `2 to create, 1 to recreate, …, 5 unchanged, 1 ignored`.
    pub fn summary(&self) -> String {
        let parts = [
            (Action::Create, "to create"),
            (Action::Recreate, "to recreate"),
            (Action::Update, "to update in place"),
            (Action::Start, "to start"),
            (Action::Remove, "to remove"),
            (Action::Keep, "unchanged"),
            (Action::Ignore, "ignored"),
        ];
        let mut out = Vec::new();
        for (action, words) in parts {
            let n = self.count(action);
            if n > 0
                || matches!(
                    action,
                    Action::Create
                        | Action::Recreate
                        | Action::Update
                        | Action::Remove
                        | Action::Keep
                )
            {
                out.push(format!("{n} {words}"));
            }
        }
        out.join(", ")
    }
}

/// A difference between desired and observed settings.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Difference {
    /// Changeable without a new container.
    in_place: bool,
    /// What differs, for people.
    reason: String,
}

impl Difference {
    fn recreate(reason: impl Into<String>) -> Self {
        Self {
            in_place: false,
            reason: reason.into(),
        }
    }

    fn in_place(reason: impl Into<String>) -> Self {
        Self {
            in_place: true,
            reason: reason.into(),
        }
    }
}

/// Computes the plan.
///
/// # Guarantees
/// System containers are only ever `ignore`; unmanaged containers are only
/// `ignore` (scope `owned`) or `remove` (scope `all`); a desired container is
/// never `remove`. Actions come in `dependsOn` order, then removals, then
/// the containers left alone.
pub fn compute(desired: &DesiredState, observed: &Observed, options: &PlanOptions) -> Plan {
    // A document may add system containers, never remove the device's own.
    let system: BTreeSet<&str> = options
        .system_containers
        .iter()
        .chain(desired.system_containers.iter().flatten())
        .map(String::as_str)
        .collect();
    let mut warnings = Vec::new();
    let mut entries: BTreeMap<&str, PlanEntry> = BTreeMap::new();
    // Shared by every entry's diff, which renders only when read.
    let redactor = Arc::new(options.redactor.clone());

    let by_name: HashMap<&str, &ObservedContainer> =
        observed.containers.iter().map(|c| (c.name(), c)).collect();
    let desired_names: BTreeSet<&str> =
        desired.containers.iter().map(|c| c.name.as_str()).collect();
    // Our old containers that an interrupted activity left on a temporary
    // name while their own name is free: the desired component is brought
    // back from them (with their volumes), never created from scratch.
    let mut restorable: HashMap<&str, &ObservedContainer> = HashMap::new();
    for c in &observed.containers {
        if let Some((base, Temporary::Old)) = temporary(c.name()) {
            let ours = c
                .owner
                .as_ref()
                .is_some_and(|o| o.instance == options.instance);
            if ours && !by_name.contains_key(base) {
                restorable.entry(base).or_insert(c);
            }
        }
    }
    for spec in &desired.containers {
        let restore = restorable.get(spec.name.as_str()).copied();
        let current = by_name.get(spec.name.as_str()).copied().or(restore);
        let foreign = current
            .and_then(|c| c.owner.as_ref())
            .map(|o| o.instance.as_str())
            .filter(|i| *i != options.instance);
        let entry = if let Some(other) = foreign {
            PlanEntry {
                id: spec.name.clone(),
                action: Action::Ignore,
                reasons: vec![format!(
                    "created by another berth instance ({other}); berth instance {} leaves it alone",
                    options.instance
                )],
                diff: None,
                version: spec.version.clone(),
                container_id: current.map(|c| c.details.id.clone()),
                execution: Execution::default(),
            }
        } else if system.contains(spec.name.as_str()) {
            warnings.push(format!(
                "{}: a system container; berth leaves it alone (remove the component from the document)",
                spec.name
            ));
            PlanEntry {
                id: spec.name.clone(),
                action: Action::Ignore,
                reasons: vec!["system container: listed in the document, but berth never touches system containers".into()],
                diff: None,
                version: spec.version.clone(),
                container_id: current.map(|c| c.details.id.clone()),
                execution: Execution::default(),
            }
        } else if let Some(previous) = restore {
            restore_entry(decide(spec, Some(previous), observed, &redactor), previous)
        } else {
            decide(spec, current, observed, &redactor)
        };
        if let NetworkMode::User(net) = &spec.config.network {
            if entry.action.changes() && !observed.networks.contains(net) {
                warnings.push(format!(
                    "{}: network \"{net}\" does not exist; create it first",
                    spec.name
                ));
            }
        }
        let mut entry = entry;
        if let Some(words) = hooks_reason(spec, entry.action) {
            entry.reasons.push(words);
        }
        entries.insert(&spec.name, entry);
    }
    propagate_shared_network(desired, &mut entries);

    let mut ordered: Vec<PlanEntry> = order(desired)
        .into_iter()
        .filter_map(|name| entries.remove(name))
        .collect();

    let mut removals = Vec::new();
    let mut ignored = Vec::new();
    let restoring: BTreeSet<&str> = ordered
        .iter()
        .filter_map(|e| e.execution.restore_from.as_deref())
        .collect();
    for c in &observed.containers {
        let name = c.name();
        if desired_names.contains(name) || restoring.contains(name) {
            continue;
        }
        let ours = c
            .owner
            .as_ref()
            .is_some_and(|o| o.instance == options.instance);
        if let (Some((base, kind)), true) = (temporary(name), ours) {
            // berth's own temporaries are never ordinary containers: a new
            // one is recovery's to remove, an old one the only copy of a
            // previous version.
            let reason = match kind {
                Temporary::New => {
                    "temporary new container of an interrupted activity; recovery removes it"
                        .to_string()
                }
                Temporary::Old if desired_names.contains(base) => {
                    warnings.push(format!("{name}: an older container of {base} left by an interrupted activity; berth keeps it (with its data) — remove it by hand once {base} is verified"));
                    format!("previous container of {base}, kept by an interrupted activity")
                }
                Temporary::Old => String::new(),
            };
            if !reason.is_empty() {
                ignored.push(PlanEntry {
                    id: name.to_string(),
                    action: Action::Ignore,
                    reasons: vec![reason],
                    diff: None,
                    version: c.owner.as_ref().and_then(|o| o.version.clone()),
                    container_id: Some(c.details.id.clone()),
                    execution: Execution::default(),
                });
                continue;
            }
        }
        let entry = |action, reason: &str| PlanEntry {
            id: name.to_string(),
            action,
            reasons: vec![reason.to_string()],
            diff: None,
            version: c.owner.as_ref().and_then(|o| o.version.clone()),
            container_id: Some(c.details.id.clone()),
            execution: Execution::default(),
        };
        let foreign = c
            .owner
            .as_ref()
            .map(|o| o.instance.as_str())
            .filter(|i| *i != options.instance);
        if system.contains(name) {
            ignored.push(entry(Action::Ignore, "system container"));
        } else if let Some(other) = foreign {
            ignored.push(entry(
                Action::Ignore,
                &format!("created by another berth instance ({other})"),
            ));
        } else if c.owner.is_some() {
            removals.push(entry(Action::Remove, "no longer in the desired state"));
        } else if options.scope == Scope::All {
            removals.push(entry(
                Action::Remove,
                "not in the desired state (scope all removes every non-system container)",
            ));
        } else {
            ignored.push(entry(
                Action::Ignore,
                "not managed by berth (not created by it and not named in the document)",
            ));
        }
    }
    ordered.extend(removals);
    execution::decide(desired, observed, &mut ordered);
    let specs: HashMap<&str, &ContainerSpec> = desired
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    for entry in &ordered {
        if !entry.execution.start_first {
            continue;
        }
        let (Some(spec), Some(old)) =
            (specs.get(entry.id.as_str()), by_name.get(entry.id.as_str()))
        else {
            continue;
        };
        if entry.execution.start_first && execution::shares_data(spec, old) {
            warnings.push(format!(
                "{}: updateStrategy=start-first runs the old and the new container on the same data for a moment; make sure the service can share its data directory, or use stop-first",
                entry.id
            ));
        }
    }
    ordered.extend(ignored);
    Plan {
        activity_id: desired.activity_id.clone(),
        actions: ordered,
        warnings,
    }
}

/// The hooks a create or recreate runs, in the order they run, so that a
/// plan (and `berth upgrade`'s) says what will touch data; none for any
/// other action, which never runs hooks.
fn hooks_reason(spec: &ContainerSpec, action: Action) -> Option<String> {
    if !matches!(action, Action::Create | Action::Recreate) {
        return None;
    }
    let h = &spec.rollout.hooks;
    let mut steps = Vec::new();
    if h.pre_start.is_some() {
        steps.push("preStart".to_string());
    }
    if let Some(dir) = &h.migrations {
        steps.push(format!("the pending migrations in {dir}"));
    }
    if h.post_start.is_some() {
        steps.push("postStart".to_string());
    }
    if steps.is_empty() {
        return None;
    }
    let mut words = format!("runs {}", steps.join(", then "));
    if h.on_rollback.is_some() {
        words.push_str("; onRollback if it rolls back");
    }
    Some(words)
}

/// The action for one desired, non-system container.
fn decide(
    spec: &ContainerSpec,
    current: Option<&ObservedContainer>,
    observed: &Observed,
    redactor: &Arc<Redactor>,
) -> PlanEntry {
    let mut entry = PlanEntry {
        id: spec.name.clone(),
        action: Action::Create,
        reasons: Vec::new(),
        diff: None,
        version: spec.version.clone(),
        container_id: None,
        execution: Execution::default(),
    };
    let Some(current) = current else {
        entry
            .reasons
            .push(format!("container absent; will run {}", spec.config.image));
        return entry;
    };
    entry.container_id = Some(current.details.id.clone());
    let image_key = spec.config.image.to_string();
    let image = observed.images.get(&image_key);
    let registry_digest = (spec.rollout.pull_policy == PullPolicy::Always)
        .then(|| observed.registry_digests.get(&image_key))
        .flatten();

    let mut diffs = Vec::new();
    if current.details.state.status == Status::Dead {
        diffs.push(Difference::recreate("container is dead"));
    }
    diffs.extend(image_difference(spec, current, image, registry_digest));
    let desired_hash = spec_hash(&spec.config);
    match &current.owner {
        Some(owner) if owner.spec_hash.as_deref().and_then(hash_version) == Some(HASH_VERSION) => {
            diffs.extend(live_differences(spec, current, None));
            if owner.spec_hash.as_deref() != Some(desired_hash.as_str()) {
                let fields = field_differences(spec, current, image, None, Some(owner), redactor);
                diffs.extend(fields.into_iter().filter(|d| !d.in_place));
                if diffs.iter().all(|d| d.in_place) {
                    diffs.push(Difference::recreate(
                        "settings changed (the spec hash differs)",
                    ));
                }
            }
        }
        Some(owner) => {
            diffs.extend(live_differences(spec, current, None));
            diffs.extend(field_differences(
                spec,
                current,
                image,
                None,
                Some(owner),
                redactor,
            ));
        }
        None => {
            diffs.extend(live_differences(spec, current, Some(&spec.keys)));
            diffs.extend(field_differences(
                spec,
                current,
                image,
                Some(&spec.keys),
                None,
                redactor,
            ));
        }
    }
    dedup(&mut diffs);

    if diffs.iter().any(|d| !d.in_place) {
        entry.action = Action::Recreate;
    } else if !diffs.is_empty() {
        entry.action = Action::Update;
    } else {
        let (action, reason) = state_action(spec, current);
        entry.action = action;
        entry.reasons.extend(reason);
        if current.owner.is_none() {
            entry.reasons.push(
                "adopted: created outside berth, matches the document on the keys it sets".into(),
            );
        }
        return entry;
    }
    if current.owner.is_none() {
        diffs.push(Difference {
            in_place: true,
            reason: "adopted: created outside berth".into(),
        });
    }
    entry.reasons = diffs.into_iter().map(|d| d.reason).collect();
    entry.diff = Some(settings_diff(spec, current, redactor));
    entry
}

/// The entry for a component whose container lost its name to an
/// interrupted activity and sits on `previous` (a `.berth-old` name): the
/// same container comes back when it still matches, else it is replaced
/// with its volumes carried over.
fn restore_entry(mut entry: PlanEntry, previous: &ObservedContainer) -> PlanEntry {
    let from = previous.name().to_string();
    match entry.action {
        Action::Keep | Action::Start => {
            entry.action = Action::Start;
            entry.reasons = vec![format!(
                "{} is missing; its previous container {from} is restored and started",
                entry.id
            )];
            entry.execution.restore_from = Some(from);
        }
        _ => {
            entry.action = Action::Recreate;
            entry.reasons.insert(
                0,
                format!(
                    "{} is missing; its previous container {from} is replaced, its volumes carried over",
                    entry.id
                ),
            );
            entry.execution.restore_from = Some(from);
        }
    }
    entry
}

fn dedup(diffs: &mut Vec<Difference>) {
    let mut seen = BTreeSet::new();
    diffs.retain(|d| seen.insert(d.reason.clone()));
}

/// Nothing differs: does the container need starting?
fn state_action(spec: &ContainerSpec, current: &ObservedContainer) -> (Action, Option<String>) {
    let state = &current.details.state;
    match state.status {
        Status::Running => (Action::Keep, None),
        Status::Restarting => (
            Action::Keep,
            Some("restarting (its restart policy is retrying it)".into()),
        ),
        Status::Paused => (
            Action::Start,
            Some("container is paused; it will be resumed".into()),
        ),
        Status::Exited
            if spec.config.restart == RestartPolicy::No && current.details.is_completed_job() =>
        {
            (
                Action::Keep,
                Some("completed: a job (restart policy no) that exited 0 stays as it is".into()),
            )
        }
        Status::Exited => (
            Action::Start,
            Some(format!(
                "container exited (code {}); it should run",
                state.exit_code
            )),
        ),
        Status::Created => (
            Action::Start,
            Some("container was created but never started".into()),
        ),
        Status::Removing | Status::Dead => (
            Action::Start,
            Some(format!("container is {}", state.status.as_str())),
        ),
    }
}

/// `image a:1 -> :2`, or the full references when more than the tag changed.
fn image_change(from: &str, to: &crate::spec::image::ImageRef) -> String {
    let from_ref = crate::spec::image::ImageRef::parse_lenient(from);
    if from_ref.name() == to.name() && !from_ref.registry.is_empty() {
        let tail = match (&to.tag, &to.digest) {
            (Some(t), Some(d)) => format!(":{t}@{d}"),
            (None, Some(d)) => format!("@{d}"),
            (Some(t), None) => format!(":{t}"),
            (None, None) => String::new(),
        };
        format!("image {from} -> {tail}")
    } else {
        format!("image {from} -> {to}")
    }
}

fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

fn image_difference(
    spec: &ContainerSpec,
    current: &ObservedContainer,
    image: Option<&ImageDetails>,
    registry_digest: Option<&String>,
) -> Vec<Difference> {
    let desired = &spec.config.image;
    let running_ref = current.config.image.to_string();
    let same_ref = current.config.image == *desired;
    let mut out = Vec::new();
    match image {
        Some(img) if img.id != current.details.image_id => {
            if same_ref {
                out.push(Difference::recreate(format!(
                    "image {desired} now points to a different image ({} -> {})",
                    short_id(&current.details.image_id),
                    short_id(&img.id)
                )));
            } else {
                out.push(Difference::recreate(image_change(&running_ref, desired)));
            }
        }
        Some(_) => {}
        None if !same_ref => out.push(Difference::recreate(image_change(&running_ref, desired))),
        None => {}
    }
    if let (Some(digest), Some(img)) = (registry_digest, image) {
        if !execution::has_digest(img, digest) && out.is_empty() {
            out.push(Difference::recreate(format!(
                "image {desired} moved in the registry (now {}); pullPolicy always",
                short_id(digest)
            )));
        }
    }
    out
}

/// Restart policy and resources against what the engine reports.
fn live_differences(
    spec: &ContainerSpec,
    current: &ObservedContainer,
    only: Option<&BTreeSet<&'static str>>,
) -> Vec<Difference> {
    let wants = |k: &str| only.is_none_or(|keys| keys.contains(k));
    let d = &spec.config;
    let o = &current.config;
    let mut out = Vec::new();
    if (wants("restartPolicy") || wants("restartMaxRetries")) && d.restart != o.restart {
        out.push(Difference::in_place(format!(
            "restart policy {} -> {} (in place)",
            o.restart, d.restart
        )));
    }
    let size = |v: Option<u64>| v.map_or("none".to_string(), params::size_text);
    let limits = [
        (
            "memory",
            "memory",
            d.resources.memory,
            o.resources.memory,
            size as fn(Option<u64>) -> String,
        ),
        (
            "memoryReservation",
            "memory reservation",
            d.resources.memory_reservation,
            o.resources.memory_reservation,
            size,
        ),
        (
            "cpus",
            "cpus",
            d.resources.nano_cpus,
            o.resources.nano_cpus,
            |v: Option<u64>| v.map_or("none".into(), |n| format!("{}", n as f64 / 1e9)),
        ),
    ];
    for (key, words, want, have, show) in limits {
        if !wants(key) || want == have {
            continue;
        }
        if want.is_none() {
            // The engine's update call cannot lift a limit.
            out.push(Difference::recreate(format!(
                "{words} limit {} removed (the engine cannot lift a limit in place)",
                show(have)
            )));
        } else {
            out.push(Difference::in_place(format!(
                "{words} {} -> {} (in place)",
                show(have),
                show(want)
            )));
        }
    }
    if wants("memorySwap") {
        let default_swap = d.resources.memory.map(|m| Swap::Limit(m.saturating_mul(2)));
        let swap_ok = match d.resources.memory_swap {
            Some(s) => o.resources.memory_swap == Some(s),
            // Unset: the engine's default (twice the memory), or none at all.
            None => {
                o.resources.memory_swap.is_none()
                    || o.resources.memory_swap == default_swap
                    || d.resources.memory != o.resources.memory
            }
        };
        if !swap_ok {
            let show = |s: Option<Swap>| match s {
                None => "default".to_string(),
                Some(Swap::Unlimited) => "unlimited".to_string(),
                Some(Swap::Limit(b)) => params::size_text(b),
            };
            out.push(Difference::in_place(format!(
                "memory+swap {} -> {} (in place)",
                show(o.resources.memory_swap),
                show(d.resources.memory_swap)
            )));
        }
    }
    out
}

/// Every setting that needs a new container, compared field by field.
/// `only` limits the comparison to keys the document sets (adoption);
/// `owner` lets removed env and labels be noticed.
fn field_differences(
    spec: &ContainerSpec,
    current: &ObservedContainer,
    image: Option<&ImageDetails>,
    only: Option<&BTreeSet<&'static str>>,
    owner: Option<&Ownership>,
    redactor: &Redactor,
) -> Vec<Difference> {
    let wants = |k: &str| only.is_none_or(|keys| keys.contains(k));
    let full = only.is_none();
    // Image defaults only tell what the container should have when it runs
    // the desired image; when the image changes they change with it, and
    // the image change is the reason already given.
    let image = image.filter(|i| i.id == current.details.image_id);
    let d = &spec.config;
    let o = &current.config;
    let mut out = Vec::new();

    if wants("env") {
        for (k, v) in &d.env {
            match (v, o.env.get(k)) {
                (Some(want), Some(Some(have))) if want == have => {}
                (Some(_), Some(Some(_))) => {
                    out.push(Difference::recreate(format!("env {k} changed")))
                }
                (Some(_), _) => out.push(Difference::recreate(format!("env {k} added"))),
                (None, Some(_)) => {
                    out.push(Difference::recreate(format!("env {k} should be unset")))
                }
                (None, None) => {}
            }
        }
        if let Some(owner) = owner {
            let image_env: HashMap<&str, &str> = image
                .map(|i| i.env.iter().filter_map(|e| e.split_once('=')).collect())
                .unwrap_or_default();
            for k in &owner.env_keys {
                if d.env.contains_key(k) {
                    continue;
                }
                if let Some(Some(have)) = o.env.get(k) {
                    if image_env.get(k.as_str()) != Some(&have.as_str()) {
                        out.push(Difference::recreate(format!("env {k} removed")));
                    }
                }
            }
        }
    }

    let argv_eq = |a: &Option<Vec<String>>, b: &Option<Vec<String>>| {
        let norm =
            |v: &Option<Vec<String>>| v.clone().filter(|v| !v.is_empty() && v != &[String::new()]);
        norm(a) == norm(b)
    };
    if wants("cmd") {
        let expected = match (&d.cmd, &d.entrypoint, image) {
            (Some(c), _, _) => Some(Some(c.clone())),
            // Overriding the entrypoint resets the image's command.
            (None, Some(_), _) => Some(None),
            (None, None, Some(img)) if full => Some(img.cmd.clone()),
            _ => None,
        };
        if let Some(expected) = expected {
            if !argv_eq(&expected, &o.cmd) {
                out.push(Difference::recreate(changed(
                    "command",
                    &argv_text(&o.cmd, redactor),
                    &argv_text(&expected, redactor),
                )));
            }
        }
    }
    if wants("entrypoint") {
        let expected = match (&d.entrypoint, image) {
            (Some(e), _) => Some(Some(e.clone())),
            (None, Some(img)) if full => Some(img.entrypoint.clone()),
            _ => None,
        };
        if let Some(expected) = expected {
            if !argv_eq(&expected, &o.entrypoint) {
                out.push(Difference::recreate(changed(
                    "entrypoint",
                    &argv_text(&o.entrypoint, redactor),
                    &argv_text(&expected, redactor),
                )));
            }
        }
    }
    let text_field = |key: &str,
                      want: &Option<String>,
                      have: &Option<String>,
                      image_default: Option<&String>,
                      out: &mut Vec<Difference>| {
        if !wants(key) {
            return;
        }
        let expected = match want {
            Some(w) => Some(w.clone()),
            None if full => image_default.filter(|s| !s.is_empty()).cloned(),
            None => return,
        };
        if want.is_none() && image_default.is_none() {
            return;
        }
        if expected != *have {
            out.push(Difference::recreate(format!(
                "{key} {} -> {}",
                have.as_deref().unwrap_or("(image default)"),
                expected.as_deref().unwrap_or("(image default)")
            )));
        }
    };
    text_field(
        "workdir",
        &d.workdir,
        &o.workdir,
        image.map(|i| &i.workdir),
        &mut out,
    );
    text_field("user", &d.user, &o.user, image.map(|i| &i.user), &mut out);
    if wants("hostName") && d.hostname.is_some() && d.hostname != o.hostname {
        out.push(Difference::recreate(format!(
            "host name {} -> {}",
            o.hostname.as_deref().unwrap_or("(none)"),
            d.hostname.as_deref().unwrap_or("(none)")
        )));
    }
    if wants("domainName") && d.domainname.is_some() && d.domainname != o.domainname {
        out.push(Difference::recreate(format!(
            "domain name {} -> {}",
            o.domainname.as_deref().unwrap_or("(none)"),
            d.domainname.as_deref().unwrap_or("(none)")
        )));
    }
    if wants("label") {
        for (k, v) in &d.labels {
            match o.labels.get(k) {
                Some(have) if have == v => {}
                Some(_) => out.push(Difference::recreate(format!("label {k} changed"))),
                None => out.push(Difference::recreate(format!("label {k} added"))),
            }
        }
        if let Some(owner) = owner {
            for k in &owner.label_keys {
                if !d.labels.contains_key(k) && o.labels.contains_key(k) {
                    out.push(Difference::recreate(format!("label {k} removed")));
                }
            }
        }
    }
    set_difference("port", &d.ports, &o.ports, wants("port"), &mut out);
    set_difference("mount", &d.mounts, &o.mounts, wants("mount"), &mut out);
    set_difference("volume", &d.volumes, &o.volumes, wants("volume"), &mut out);
    set_difference("device", &d.devices, &o.devices, wants("device"), &mut out);
    if wants("host") {
        // Hosts resolved at create time (container_, host_ip_) show up as
        // plain addresses; they match by name.
        let key = |h: &ExtraHost| match h.target {
            HostTarget::Ip(_) | HostTarget::HostGateway => h.to_string(),
            _ => h.name.clone(),
        };
        let have: BTreeSet<String> = o.extra_hosts.iter().map(|h| h.to_string()).collect();
        let have_names: BTreeSet<&str> = o.extra_hosts.iter().map(|h| h.name.as_str()).collect();
        for h in &d.extra_hosts {
            let present = match h.target {
                HostTarget::Ip(_) | HostTarget::HostGateway => have.contains(&key(h)),
                _ => have_names.contains(h.name.as_str()),
            };
            if !present {
                out.push(Difference::recreate(format!("host {h} added")));
            }
        }
        let want_names: BTreeSet<&str> = d.extra_hosts.iter().map(|h| h.name.as_str()).collect();
        for h in &o.extra_hosts {
            if !want_names.contains(h.name.as_str()) {
                out.push(Difference::recreate(format!("host {h} removed")));
            }
        }
    }
    let mut flag = |key: &str, words: &str, want: String, have: String| {
        if wants(key) && want != have {
            out.push(Difference::recreate(changed(
                words,
                &redactor.text(&have),
                &redactor.text(&want),
            )));
        }
    };
    flag(
        "network",
        "network",
        d.network.to_string(),
        o.network.to_string(),
    );
    flag(
        "privileged",
        "privileged",
        d.privileged.to_string(),
        o.privileged.to_string(),
    );
    flag(
        "terminal",
        "terminal",
        d.terminal.to_string(),
        o.terminal.to_string(),
    );
    flag(
        "interactive",
        "interactive",
        d.interactive.to_string(),
        o.interactive.to_string(),
    );
    flag(
        "logDriver",
        "log driver",
        d.log.driver.as_str().into(),
        o.log.driver.as_str().into(),
    );
    let opt = |v: Option<u64>| v.map_or("default".to_string(), params::size_text);
    flag(
        "logMaxFiles",
        "log max files",
        d.log.max_files.map_or("default".into(), |f| f.to_string()),
        o.log.max_files.map_or("default".into(), |f| f.to_string()),
    );
    flag(
        "logMaxSize",
        "log max size",
        opt(d.log.max_size),
        opt(o.log.max_size),
    );
    flag(
        "logMode",
        "log mode",
        mode(d.log.non_blocking).into(),
        mode(o.log.non_blocking).into(),
    );
    if d.log.non_blocking {
        flag(
            "logMaxBufferSize",
            "log buffer",
            opt(d.log.max_buffer_size),
            opt(o.log.max_buffer_size),
        );
    }
    if d.stop_timeout.is_some() || full {
        let show = |t: Option<std::time::Duration>| {
            t.map_or("default".into(), |t| {
                humantime::format_duration(t).to_string()
            })
        };
        flag(
            "stopTimeout",
            "stop timeout",
            show(d.stop_timeout),
            show(o.stop_timeout),
        );
    }
    if let Some(signal) = &d.stop_signal {
        flag(
            "stopSignal",
            "stop signal",
            signal.clone(),
            o.stop_signal.clone().unwrap_or_else(|| "default".into()),
        );
    }
    let h = &d.health;
    let oh = &o.health;
    let show = |t: Option<std::time::Duration>| {
        t.map_or("default".into(), |t| {
            humantime::format_duration(t).to_string()
        })
    };
    if let Some(test) = &h.test {
        let text = |t: &Option<HealthTest>| match t {
            Some(HealthTest::Shell(c)) => c.clone(),
            Some(HealthTest::Disabled) => "NONE".into(),
            None => "default".into(),
        };
        flag(
            "healthCmd",
            "health check",
            text(&Some(test.clone())),
            text(&oh.test),
        );
    }
    if h.interval.is_some() {
        flag(
            "healthInterval",
            "health interval",
            show(h.interval),
            show(oh.interval),
        );
    }
    if h.timeout.is_some() {
        flag(
            "healthTimeout",
            "health timeout",
            show(h.timeout),
            show(oh.timeout),
        );
    }
    if h.start_period.is_some() {
        flag(
            "healthStartPeriod",
            "health start period",
            show(h.start_period),
            show(oh.start_period),
        );
    }
    if let Some(r) = h.retries {
        flag(
            "healthRetries",
            "health retries",
            r.to_string(),
            oh.retries.map_or("default".into(), |r| r.to_string()),
        );
    }
    out
}

fn mode(non_blocking: bool) -> &'static str {
    if non_blocking {
        "non-blocking"
    } else {
        "blocking"
    }
}

fn argv_text(v: &Option<Vec<String>>, redactor: &Redactor) -> String {
    match v {
        Some(v) if !v.is_empty() => format!("{:?}", redactor.argv(v)),
        _ => "(none)".into(),
    }
}

/// `what have -> want` from already redacted texts; when redaction made
/// them equal, the difference is in a secret: say so, not what it is.
fn changed(what: &str, have: &str, want: &str) -> String {
    if have == want {
        format!("{what} changed (sensitive value)")
    } else {
        format!("{what} {have} -> {want}")
    }
}

fn set_difference<T: Ord + fmt::Display>(
    key: &str,
    want: &BTreeSet<T>,
    have: &BTreeSet<T>,
    compare: bool,
    out: &mut Vec<Difference>,
) {
    if !compare {
        return;
    }
    for added in want.difference(have) {
        out.push(Difference::recreate(format!("{key} {added} added")));
    }
    for removed in have.difference(want) {
        out.push(Difference::recreate(format!("{key} {removed} removed")));
    }
}

/// A unified diff of the settings, current against desired, limited to
/// what the document owns (image defaults are left out on both sides).
fn settings_diff(
    spec: &ContainerSpec,
    current: &ObservedContainer,
    redactor: &Arc<Redactor>,
) -> Diff {
    let mut have = current.config.clone();
    let owned_env: BTreeSet<&String> = current
        .owner
        .iter()
        .flat_map(|o| o.env_keys.iter())
        .chain(spec.config.env.keys())
        .collect();
    have.env.retain(|k, _| owned_env.contains(k));
    let owned_labels: BTreeSet<&String> = current
        .owner
        .iter()
        .flat_map(|o| o.label_keys.iter())
        .chain(spec.config.labels.keys())
        .collect();
    have.labels.retain(|k, _| owned_labels.contains(k));
    if spec.config.cmd.is_none() {
        have.cmd = None;
    }
    if spec.config.entrypoint.is_none() {
        have.entrypoint = None;
    }
    if spec.config.workdir.is_none() {
        have.workdir = None;
    }
    if spec.config.user.is_none() {
        have.user = None;
    }
    if spec.config.stop_signal.is_none() {
        have.stop_signal = None;
    }
    if spec.config.health == HealthConfig::default() {
        have.health = HealthConfig::default();
    }
    Diff::between(&spec.name, have, spec.config.clone(), Arc::clone(redactor))
}

/// The text of a [`Diff`]: both sides' parameters, redacted, line by line.
fn render_settings_diff(
    name: &str,
    have: &ContainerConfig,
    want: &ContainerConfig,
    redactor: &Redactor,
) -> String {
    let (old, new) = redacted_sides(
        &params::parameters(name, have),
        &params::parameters(name, want),
        redactor,
    );
    let (old, new) = (params::lines(&old), params::lines(&new));
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(2)
        .header("current", "desired")
        .to_string()
}

/// Both sides of the settings diff as they may be shown (see
/// [`crate::inventory::redacted_parameters`]), terraform's way: a secret
/// that differs reads `(sensitive value)` on the current side and
/// `(sensitive value changed)` on the desired one, and one that does not
/// differ reads the same on both, so the diff shows only that it changed.
/// Values are matched by env or label name, else by key and position.
fn redacted_sides(
    old: &[params::Parameter],
    new: &[params::Parameter],
    redactor: &Redactor,
) -> (Vec<params::Parameter>, Vec<params::Parameter>) {
    fn identities(params: &[params::Parameter]) -> Vec<(&'static str, String)> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        params
            .iter()
            .map(|(k, v)| match *k {
                "env" | "label" => (*k, v.split('=').next().unwrap_or_default().to_string()),
                _ => {
                    let n = seen.entry(k).or_default();
                    *n += 1;
                    (*k, n.to_string())
                }
            })
            .collect()
    }
    let shown_old = crate::inventory::redacted_parameters(old, redactor);
    let shown_new = crate::inventory::redacted_parameters(new, redactor);
    let old_ids = identities(old);
    let before: HashMap<&(&str, String), (&str, &str)> = old_ids
        .iter()
        .zip(old.iter().zip(&shown_old))
        .map(|(id, ((_, raw), (_, shown)))| (id, (raw.as_str(), shown.as_str())))
        .collect();
    let secret = |raw: &str, shown: &str| raw != shown;
    let mark = |(k, shown): &params::Parameter, changed: bool| -> params::Parameter {
        let (name, value) = match (*k, shown.split_once('=')) {
            ("env" | "label", Some((name, value))) => (Some(name), value),
            _ => (None, shown.as_str()),
        };
        let word = if changed {
            "(sensitive value changed)"
        } else {
            "(sensitive value)"
        };
        let value = if value == crate::redact::REDACTED {
            word.to_string()
        } else if changed {
            format!("{value} {word}")
        } else {
            value.to_string()
        };
        match name {
            Some(name) => (k, format!("{name}={value}")),
            None => (k, value),
        }
    };
    let old_out = old
        .iter()
        .zip(&shown_old)
        .map(|((_, raw), s)| {
            if secret(raw, &s.1) {
                mark(s, false)
            } else {
                s.clone()
            }
        })
        .collect();
    let new_out = identities(new)
        .iter()
        .zip(new.iter().zip(&shown_new))
        .map(|(id, ((_, raw), s))| {
            if !secret(raw, &s.1) {
                return s.clone();
            }
            let changed = before
                .get(id)
                .is_some_and(|(old_raw, old_shown)| *old_raw != raw && *old_shown == s.1);
            mark(s, changed)
        })
        .collect();
    (old_out, new_out)
}

/// A container linked to x (its network is `container:<x>`, or a host entry
/// resolves to x's address) must be recreated whenever x is: it shares x's
/// network stack, or holds x's old address.
fn propagate_shared_network(desired: &DesiredState, entries: &mut BTreeMap<&str, PlanEntry>) {
    loop {
        let mut changed = false;
        for spec in &desired.containers {
            let replaced: Vec<&str> = execution::links(spec, desired)
                .into_iter()
                .filter(|l| {
                    entries
                        .get(l)
                        .is_some_and(|e| matches!(e.action, Action::Recreate | Action::Create))
                })
                .collect();
            let Some(entry) = entries.get_mut(spec.name.as_str()) else {
                continue;
            };
            if let (Some(parent), true) = (
                replaced.first(),
                matches!(entry.action, Action::Keep | Action::Start | Action::Update),
            ) {
                entry.action = Action::Recreate;
                entry.reasons.push(match &spec.config.network {
                    NetworkMode::Container(p) if p == parent => {
                        format!("shares the network of {parent}, which gets a new container")
                    }
                    _ => format!("links to {parent} by address, which gets a new container"),
                });
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
}

/// Desired containers in dependency order (dependencies first), document
/// order among equals. Kahn's algorithm over the `dependsOn` edges and the
/// links (`container:<x>` networks, `container_<hostname>` host entries).
pub fn order(desired: &DesiredState) -> Vec<&str> {
    let index: HashMap<&str, usize> = desired
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let n = desired.containers.len();
    let mut waiting_on = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, c) in desired.containers.iter().enumerate() {
        let deps: BTreeSet<usize> = execution::dependencies(c, desired)
            .into_iter()
            .filter_map(|d| index.get(d).copied())
            .filter(|d| *d != i)
            .collect();
        waiting_on[i] = deps.len();
        for d in deps {
            dependents[d].push(i);
        }
    }
    // Ready containers, smallest document index first.
    let mut ready: BTreeSet<usize> = (0..n).filter(|i| waiting_on[*i] == 0).collect();
    let mut out = Vec::with_capacity(n);
    let mut placed = vec![false; n];
    while out.len() < n {
        // A cycle (validation refuses dependsOn cycles; a container-network
        // loop is the engine's to refuse) falls back to document order.
        let next = match ready.pop_first() {
            Some(i) => i,
            None => match (0..n).find(|i| !placed[*i]) {
                Some(i) => i,
                None => break,
            },
        };
        if placed[next] {
            continue;
        }
        placed[next] = true;
        out.push(desired.containers[next].name.as_str());
        for &d in &dependents[next] {
            waiting_on[d] = waiting_on[d].saturating_sub(1);
            if waiting_on[d] == 0 && !placed[d] {
                ready.insert(d);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
