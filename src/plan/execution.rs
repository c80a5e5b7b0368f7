//! How each plan entry is carried out: the choices the executor used to make
//! for itself (whether to pull, start-first or not, dependency waves, the
//! temporary names, what the new container inherits) decided here, once, from
//! the same snapshot the actions were decided from. Pure.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::observe::{Observed, ObservedContainer};
use crate::runtime::Status;
use crate::spec::model::{
    ContainerSpec, DesiredState, HostTarget, NetworkMode, PullPolicy, UpdateStrategy,
};

use super::{Action, PlanEntry};

/// Suffix of a new container before it takes its name.
pub const NEW_SUFFIX: &str = ".berth-new";
/// Suffix of an old container kept for rollback.
pub const OLD_SUFFIX: &str = ".berth-old";

/// Which kind of temporary name a container carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temporary {
    /// A new container not yet in place (`<name>.berth-new`).
    New,
    /// An old container kept for rollback (`<name>.berth-old`).
    Old,
}

/// Splits a temporary name into the component it belongs to and its kind:
/// `web.berth-old` and `web.berth-old-2` are both `("web", Old)`.
pub fn temporary(name: &str) -> Option<(&str, Temporary)> {
    for (suffix, kind) in [(NEW_SUFFIX, Temporary::New), (OLD_SUFFIX, Temporary::Old)] {
        if let Some(at) = name.rfind(suffix) {
            let tail = &name[at + suffix.len()..];
            let numbered = tail
                .strip_prefix('-')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if at > 0 && (tail.is_empty() || numbered) {
                return Some((&name[..at], kind));
            }
        }
    }
    None
}

/// The first of `<base><suffix>`, `<base><suffix>-2`, … that no container
/// holds: a leftover (ours or anyone's) on a temporary name never blocks a
/// rollout.
fn free_name(base: &str, suffix: &str, taken: &HashSet<&str>) -> String {
    let first = format!("{base}{suffix}");
    if !taken.contains(first.as_str()) {
        return first;
    }
    (2u32..)
        .map(|n| format!("{base}{suffix}-{n}"))
        .find(|n| !taken.contains(n.as_str()))
        .unwrap_or(first)
}

/// Whether and how an image is pulled before anything is touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pull {
    /// The image is present and the policy does not ask for a pull.
    #[default]
    No,
    /// The image is absent: it must be pulled, or nothing changes.
    Required,
    /// `pullPolicy=always` with the image present: pulled, but a registry
    /// outage falls back to the local image.
    Refresh,
    /// The image is absent and `pullPolicy=never`: the activity cannot run.
    Unavailable,
}

/// How the executor carries out one entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Execution {
    /// Dependency wave, 0 first: a container starts only after the
    /// containers it depends on (`dependsOn`, a `container:` network, a
    /// `container_<hostname>` host entry) passed their gates.
    pub wave: usize,
    /// Start the new container before stopping the old (asked for, and no
    /// host port in common).
    pub start_first: bool,
    /// The image pull.
    pub pull: Pull,
    /// The name the new container is created under.
    pub temp_new: String,
    /// The name the old container is kept under until the new one is ready.
    pub temp_old: String,
    /// The old container sits on this temporary name (an interrupted
    /// activity took its name away): it is brought back from there.
    pub restore_from: Option<String>,
    /// The old container's anonymous volumes the new one mounts.
    pub inherited_volumes: Vec<(String, String)>,
    /// The old container's user networks (with the aliases someone gave it).
    pub networks: Vec<(String, Vec<String>)>,
    /// Whether the old container was running (a rollback starts it again).
    pub old_running: bool,
    /// Created in ACTIVATING, right before it starts, instead of in
    /// DOWNLOADING: it links to a container this plan replaces, and the
    /// engine resolves the link when the container is created.
    pub create_late: bool,
}

/// The components `spec` links to or depends on, by name.
pub fn dependencies<'a>(spec: &'a ContainerSpec, desired: &'a DesiredState) -> BTreeSet<&'a str> {
    let mut out: BTreeSet<&str> = spec.rollout.depends_on.iter().map(String::as_str).collect();
    out.extend(links(spec, desired));
    out.remove(spec.name.as_str());
    out
}

/// The components whose containers `spec` links to: its `container:`
/// network, and the targets of its `container_<hostname>` host entries
/// (matched by host name, or by name).
pub fn links<'a>(spec: &'a ContainerSpec, desired: &'a DesiredState) -> BTreeSet<&'a str> {
    let mut out = BTreeSet::new();
    if let NetworkMode::Container(parent) = &spec.config.network {
        out.insert(parent.as_str());
    }
    for h in &spec.config.extra_hosts {
        if let HostTarget::Container(hostname) = &h.target {
            if let Some(target) = desired.containers.iter().find(|c| {
                c.config.hostname.as_deref() == Some(hostname.as_str()) || c.name == *hostname
            }) {
                out.insert(target.name.as_str());
            }
        }
    }
    out.remove(spec.name.as_str());
    out
}

/// Fills in every changing entry's [`Execution`]. `entries` come in
/// dependency order.
pub fn decide(desired: &DesiredState, observed: &Observed, entries: &mut [PlanEntry]) {
    let taken: HashSet<&str> = observed.containers.iter().map(|c| c.name()).collect();
    let by_name: HashMap<&str, &ObservedContainer> =
        observed.containers.iter().map(|c| (c.name(), c)).collect();
    let specs: HashMap<&str, &ContainerSpec> = desired
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    let mut wave: HashMap<String, usize> = HashMap::new();
    let replaced: BTreeSet<String> = entries
        .iter()
        .filter(|e| matches!(e.action, Action::Create | Action::Recreate))
        .map(|e| e.id.clone())
        .collect();
    for entry in entries.iter_mut() {
        if !entry.action.changes() {
            continue;
        }
        let spec = specs.get(entry.id.as_str()).copied();
        let old = match &entry.execution.restore_from {
            Some(temp) => by_name.get(temp.as_str()).copied(),
            None => by_name.get(entry.id.as_str()).copied(),
        };
        let x = &mut entry.execution;
        x.temp_new = free_name(&entry.id, NEW_SUFFIX, &taken);
        x.temp_old = match (&x.restore_from, old) {
            // Already out of the way.
            (Some(temp), _) => temp.clone(),
            _ => free_name(&entry.id, OLD_SUFFIX, &taken),
        };
        x.old_running = old.is_some_and(|o| {
            matches!(
                o.details.state.status,
                Status::Running | Status::Restarting | Status::Paused
            )
        });
        let Some(spec) = spec else { continue };
        let deps = dependencies(spec, desired);
        x.wave = deps
            .iter()
            .filter_map(|d| wave.get(*d))
            .map(|w| w + 1)
            .max()
            .unwrap_or(0);
        wave.insert(entry.id.clone(), x.wave);
        if !matches!(entry.action, Action::Create | Action::Recreate) {
            continue;
        }
        x.pull = pull(spec, observed);
        x.create_late = links(spec, desired).iter().any(|l| replaced.contains(*l));
        x.start_first = old.is_some_and(|o| start_first(spec, o)) && x.restore_from.is_none();
        x.inherited_volumes = inherited_volumes(spec, old);
        x.networks = inherited_networks(old);
    }
}

fn pull(spec: &ContainerSpec, observed: &Observed) -> Pull {
    let reference = spec.config.image.to_string();
    let Some(local) = observed.images.get(&reference) else {
        return match spec.rollout.pull_policy {
            PullPolicy::Never => Pull::Unavailable,
            _ => Pull::Required,
        };
    };
    match spec.rollout.pull_policy {
        // `always` asks the registry first: the digest it names now is
        // already here, so a pull would only fetch the manifest again.
        PullPolicy::Always
            if observed
                .registry_digests
                .get(&reference)
                .is_some_and(|d| has_digest(local, d)) =>
        {
            Pull::No
        }
        PullPolicy::Always => Pull::Refresh,
        _ => Pull::No,
    }
}

/// Whether a local image was pulled as `digest` (`sha256:…`).
pub(crate) fn has_digest(image: &crate::runtime::ImageDetails, digest: &str) -> bool {
    image
        .repo_digests
        .iter()
        .any(|d| d.rsplit_once('@').is_some_and(|(_, d)| d == digest))
}

/// Start-first only when asked and when old and new share no host port.
fn start_first(spec: &ContainerSpec, old: &ObservedContainer) -> bool {
    spec.rollout.update_strategy == UpdateStrategy::StartFirst
        && !spec
            .config
            .ports
            .iter()
            .any(|p| old.config.ports.iter().any(|o| o.conflicts_with(p)))
}

/// Whether a start-first recreate leaves two processes on one data
/// directory for a while: old and new share a named volume, a bind mount,
/// or an inherited anonymous volume.
pub fn shares_data(spec: &ContainerSpec, old: &ObservedContainer) -> bool {
    !old.anonymous_volumes.is_empty()
        || spec
            .config
            .volumes
            .iter()
            .any(|v| old.config.volumes.iter().any(|o| o.name == v.name))
        || spec
            .config
            .mounts
            .iter()
            .any(|m| old.config.mounts.iter().any(|o| o.source == m.source))
}

/// The old container's anonymous volumes that no desired mount covers.
fn inherited_volumes(
    spec: &ContainerSpec,
    old: Option<&ObservedContainer>,
) -> Vec<(String, String)> {
    let covered: BTreeSet<&str> = spec
        .config
        .mounts
        .iter()
        .map(|m| m.destination.as_str())
        .chain(spec.config.volumes.iter().map(|v| v.destination.as_str()))
        .collect();
    old.map(|o| {
        o.anonymous_volumes
            .iter()
            .filter(|(_, path)| !covered.contains(path.as_str()))
            .cloned()
            .collect()
    })
    .unwrap_or_default()
}

/// The old container's user networks with the aliases someone gave it (not
/// the ones the engine adds: its id and name).
pub(crate) fn inherited_networks(old: Option<&ObservedContainer>) -> Vec<(String, Vec<String>)> {
    let Some(old) = old else { return Vec::new() };
    let short_id = &old.details.id[..old.details.id.len().min(12)];
    let base = temporary(&old.details.name).map_or(old.details.name.as_str(), |(b, _)| b);
    old.details
        .networks
        .iter()
        .filter(|(n, _)| !matches!(n.as_str(), "bridge" | "host" | "none"))
        .map(|(n, aliases)| {
            let aliases = aliases
                .iter()
                .filter(|a| {
                    a.as_str() != short_id && a.as_str() != old.details.name && a.as_str() != base
                })
                .cloned()
                .collect();
            (n.clone(), aliases)
        })
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_recognised_with_or_without_a_number() {
        assert_eq!(temporary("web.berth-old"), Some(("web", Temporary::Old)));
        assert_eq!(temporary("web.berth-new"), Some(("web", Temporary::New)));
        assert_eq!(temporary("web.berth-old-3"), Some(("web", Temporary::Old)));
        assert_eq!(temporary("web"), None);
        assert_eq!(temporary("web.berth-oldx"), None);
        assert_eq!(temporary("web.berth-old-"), None);
        assert_eq!(temporary(".berth-old"), None);
    }

    #[test]
    fn a_taken_temporary_name_is_never_reused() {
        let taken: HashSet<&str> = ["web.berth-old", "web.berth-old-2"].into_iter().collect();
        assert_eq!(free_name("web", OLD_SUFFIX, &taken), "web.berth-old-3");
        assert_eq!(free_name("web", NEW_SUFFIX, &taken), "web.berth-new");
    }
}
