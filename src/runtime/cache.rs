//! What inspecting each container said, kept so that a reconcile where
//! nothing changed costs one list and one events query instead of one
//! inspect per container.
//!
//! The list endpoint (API 1.41) shows a container's id, names, image id,
//! labels and state, but not what `docker update` changes in place (restart
//! policy, resources) nor networks' aliases. So a cached inspect is reused
//! only when **both** hold:
//! - the list shows the same id, name, image id, labels and a settled state
//!   (a container recreated by hand under the same name and labels has a
//!   new id; a rename or a stop shows in the list);
//! - the engine's event log, from before the cached inspect up to now, has
//!   no event naming the container (`update`, `rename`, `start`, `die`,
//!   `health_status`, a network `connect`/`disconnect` naming it, …), and is
//!   known to be complete: the engine keeps only its last
//!   [`ENGINE_EVENT_BUFFER`] events, so a window with nearly that many is
//!   treated as truncated and everything is inspected again.
//!
//! Everything here is pure; `docker.rs` does the I/O in the order that makes
//! it sound (see [`InspectCache`]).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{ContainerDetails, Status};

/// How many events the engine keeps for `since` queries (moby's
/// `daemon/events` ring buffer).
pub const ENGINE_EVENT_BUFFER: usize = 256;

/// Events in one window from which berth no longer trusts that none was
/// dropped: the buffer also holds events newer than the window's end.
pub const TRUNCATED_AT: usize = ENGINE_EVENT_BUFFER * 3 / 4;

/// The cache file's format; a file in another one is ignored.
const FORMAT: u32 = 1;

/// One container as the list endpoint shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// Engine id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Image id (`sha256:…`).
    pub image_id: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Life-cycle state.
    pub status: Status,
}

/// What the engine's event log says happened in one window.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Window {
    /// Ids of the containers some event named.
    pub touched: HashSet<String>,
    /// Whether the log is known to hold every event of the window.
    pub complete: bool,
}

/// The inspects of one list, and the engine time up to which the event log
/// was read before they were made.
///
/// Soundness rests on the order `docker.rs` keeps: (1) take `until` = now,
/// (2) list, (3) read the events from the previous `until` to this one,
/// (4) inspect what cannot be reused, (5) store the result with `until`.
/// The engine stamps an event (in nanoseconds) after making the change, and
/// its `since` and `until` bounds are inclusive, so the windows tile its
/// time. Every inspect is made after the engine's clock passed `until` (an
/// events query whose `until` is still ahead returns only then), so a
/// change after it is stamped later and is in the next window, and one
/// before it is what it read. Each stored snapshot is consistent on its
/// own, so concurrent lists may store in any order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InspectCache {
    format: u32,
    /// The engine these inspects came from.
    endpoint: String,
    /// Nanoseconds since the epoch up to which events were read.
    until_ns: Option<i64>,
    /// Inspects by container id.
    entries: BTreeMap<String, ContainerDetails>,
}

/// How a list is answered: the containers taken from the cache, and the ids
/// to inspect.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reuse {
    /// Cached inspects still true.
    pub cached: Vec<ContainerDetails>,
    /// Containers to inspect, in list order.
    pub inspect: Vec<String>,
}

impl InspectCache {
    /// An empty cache for `endpoint`.
    pub fn new(endpoint: &str) -> Self {
        Self {
            format: FORMAT,
            endpoint: endpoint.to_string(),
            ..Default::default()
        }
    }

    /// Reads a stored cache; anything unusable (another format, another
    /// engine, unreadable) gives an empty one, which only costs inspects.
    pub fn from_json(text: &str, endpoint: &str) -> Self {
        match serde_json::from_str::<Self>(text) {
            Ok(cache) if cache.format == FORMAT && cache.endpoint == endpoint => cache,
            _ => Self::new(endpoint),
        }
    }

    /// The stored form.
    ///
    /// # Errors
    /// Never in practice: every field serialises.
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }

    /// The stored form for a file: without the containers that have an
    /// env variable `is_secret` names, so that no secret reaches the disk
    /// beside the persisted document (those are inspected at every run).
    ///
    /// # Errors
    /// Never in practice: every field serialises.
    pub fn to_json_without(&self, is_secret: impl Fn(&str) -> bool) -> serde_json::Result<String> {
        let mut kept = self.clone();
        kept.entries.retain(|_, d| {
            !d.env
                .iter()
                .any(|e| is_secret(e.split_once('=').map_or(e.as_str(), |(k, _)| k)))
        });
        serde_json::to_string(&kept)
    }

    /// Where the next events window starts, when there is a cache to check.
    pub fn since_ns(&self) -> Option<i64> {
        self.until_ns.filter(|_| !self.entries.is_empty())
    }

    /// Which listed containers the cache answers, given what the event log
    /// says since it was stored (`None`: the log could not be read).
    pub fn reuse(&self, listed: &[Summary], window: Option<&Window>) -> Reuse {
        let mut out = Reuse::default();
        for s in listed {
            let usable = window.filter(|w| w.complete).is_some_and(|w| {
                !w.touched.contains(&s.id)
                    && self
                        .entries
                        .get(&s.id)
                        .is_some_and(|cached| still_true(cached, s))
            });
            match (usable, self.entries.get(&s.id)) {
                (true, Some(cached)) => out.cached.push(cached.clone()),
                _ => out.inspect.push(s.id.clone()),
            }
        }
        out
    }

    /// Replaces the cache with one list's result, read up to `until_ns`.
    pub fn store(&mut self, details: &[ContainerDetails], until_ns: i64) {
        self.until_ns = Some(until_ns);
        self.entries = details
            .iter()
            .filter(|d| settled(d.state.status))
            .map(|d| (d.id.clone(), d.clone()))
            .collect();
    }

    /// How many inspects it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// States that change without berth or a user asking (restart policy at
/// work, a removal under way, a failed removal) are always inspected.
fn settled(status: Status) -> bool {
    !matches!(status, Status::Restarting | Status::Removing | Status::Dead)
}

/// Whether what the list shows agrees with the cached inspect.
fn still_true(cached: &ContainerDetails, listed: &Summary) -> bool {
    settled(listed.status)
        && cached.id == listed.id
        && cached.name == listed.name
        && cached.image_id == listed.image_id
        && cached.labels == listed.labels
        && cached.state.status == listed.status
}

/// Whether a container event may change what inspecting it shows. A
/// command run in it (`exec_create`, `exec_start`, `exec_die`, which a
/// health check does at every interval) does not: a health change has its
/// own `health_status` event.
pub fn touches(action: &str) -> bool {
    !action.starts_with("exec_")
}

/// The container name among the list's names: the one without a further
/// `/` (the others are legacy links, `/other/alias`).
pub fn primary_name(names: &[String]) -> String {
    names
        .iter()
        .map(|n| n.strip_prefix('/').unwrap_or(n))
        .find(|n| !n.contains('/'))
        .or_else(|| names.first().map(|n| n.trim_start_matches('/')))
        .unwrap_or_default()
        .to_string()
}

/// The engine's `since`/`until` form of a time: `seconds.nanoseconds`.
pub fn engine_time(ns: i64) -> String {
    format!(
        "{}.{:09}",
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(id: &str, name: &str) -> ContainerDetails {
        ContainerDetails {
            id: id.into(),
            name: name.into(),
            image_id: "sha256:img".into(),
            labels: BTreeMap::from([("berth.spec-hash".into(), "v1:sha256:aa".into())]),
            state: crate::runtime::ContainerState {
                status: Status::Running,
                ..Default::default()
            },
            restart_policy: "unless-stopped".into(),
            ..Default::default()
        }
    }

    fn summary(d: &ContainerDetails) -> Summary {
        Summary {
            id: d.id.clone(),
            name: d.name.clone(),
            image_id: d.image_id.clone(),
            labels: d.labels.clone(),
            status: d.state.status,
        }
    }

    fn quiet() -> Window {
        Window {
            touched: HashSet::new(),
            complete: true,
        }
    }

    fn warm(ds: &[ContainerDetails]) -> InspectCache {
        let mut cache = InspectCache::new("unix:///var/run/docker.sock");
        cache.store(ds, 5_000_000_000);
        cache
    }

    #[test]
    fn nothing_happened_so_every_listed_container_comes_from_the_cache() {
        let ds = [details("a", "web"), details("b", "db")];
        let listed: Vec<_> = ds.iter().map(summary).collect();
        let reuse = warm(&ds).reuse(&listed, Some(&quiet()));
        assert_eq!(reuse.cached, ds.to_vec());
        assert!(reuse.inspect.is_empty());
    }

    #[test]
    fn a_container_an_event_names_is_inspected_again() {
        // `docker update --restart no` shows nowhere in the list: only its event.
        let ds = [details("a", "web"), details("b", "db")];
        let listed: Vec<_> = ds.iter().map(summary).collect();
        let mut window = quiet();
        window.touched.insert("b".into());
        let reuse = warm(&ds).reuse(&listed, Some(&window));
        assert_eq!(reuse.cached, vec![ds[0].clone()]);
        assert_eq!(reuse.inspect, vec!["b".to_string()]);
    }

    #[test]
    fn an_incomplete_or_unreadable_event_log_means_inspecting_everything() {
        let ds = [details("a", "web")];
        let listed: Vec<_> = ds.iter().map(summary).collect();
        let truncated = Window {
            complete: false,
            ..quiet()
        };
        for window in [Some(&truncated), None] {
            let reuse = warm(&ds).reuse(&listed, window);
            assert!(reuse.cached.is_empty());
            assert_eq!(reuse.inspect, vec!["a".to_string()]);
        }
    }

    #[test]
    fn a_container_the_list_shows_differently_is_inspected_again() {
        let d = details("a", "web");
        let cache = warm(std::slice::from_ref(&d));
        let renamed = Summary {
            name: "web-old".into(),
            ..summary(&d)
        };
        let stopped = Summary {
            status: Status::Exited,
            ..summary(&d)
        };
        let relabelled = Summary {
            labels: BTreeMap::new(),
            ..summary(&d)
        };
        let other_image = Summary {
            image_id: "sha256:other".into(),
            ..summary(&d)
        };
        for listed in [renamed, stopped, relabelled, other_image] {
            let reuse = cache.reuse(std::slice::from_ref(&listed), Some(&quiet()));
            assert!(reuse.cached.is_empty(), "{listed:?} reused");
            assert_eq!(reuse.inspect, vec!["a".to_string()]);
        }
    }

    #[test]
    fn a_container_recreated_under_the_same_name_and_labels_is_new_to_the_cache() {
        let d = details("a", "web");
        let cache = warm(std::slice::from_ref(&d));
        let recreated = Summary {
            id: "c".into(),
            ..summary(&d)
        };
        let reuse = cache.reuse(&[recreated], Some(&quiet()));
        assert!(reuse.cached.is_empty());
        assert_eq!(reuse.inspect, vec!["c".to_string()]);
    }

    #[test]
    fn containers_in_a_passing_state_are_never_cached() {
        for status in [Status::Restarting, Status::Removing, Status::Dead] {
            let mut d = details("a", "web");
            d.state.status = status;
            let cache = warm(std::slice::from_ref(&d));
            assert!(cache.is_empty(), "{status:?} cached");
            let reuse = cache.reuse(&[summary(&d)], Some(&quiet()));
            assert_eq!(reuse.inspect, vec!["a".to_string()]);
        }
    }

    #[test]
    fn a_container_that_is_gone_leaves_the_cache_at_the_next_store() {
        let mut cache = warm(&[details("a", "web"), details("b", "db")]);
        cache.store(&[details("a", "web")], 6_000_000_000);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_events_window_starts_where_the_last_one_ended() {
        let cache = warm(&[details("a", "web")]);
        assert_eq!(cache.since_ns(), Some(5_000_000_000));
        // An empty cache has nothing to check.
        assert_eq!(InspectCache::new("x").since_ns(), None);
    }

    #[test]
    fn a_stored_cache_is_read_back_only_for_the_same_engine_and_format() {
        let cache = warm(&[details("a", "web")]);
        let text = cache.to_json().unwrap();
        let endpoint = "unix:///var/run/docker.sock";
        assert_eq!(InspectCache::from_json(&text, endpoint), cache);
        assert!(InspectCache::from_json(&text, "tcp://other:2375").is_empty());
        assert!(InspectCache::from_json("{not json", endpoint).is_empty());
        let old = text.replace("\"format\":1", "\"format\":0");
        assert!(InspectCache::from_json(&old, endpoint).is_empty());
    }

    #[test]
    fn the_primary_name_is_the_one_that_is_not_a_link() {
        let names = ["/app/db".to_string(), "/db".to_string()];
        assert_eq!(primary_name(&names), "db");
        assert_eq!(primary_name(&["/web".to_string()]), "web");
        assert_eq!(primary_name(&[]), "");
    }

    #[test]
    fn health_probes_leave_a_container_cached_and_everything_else_does_not() {
        for quiet in [
            "exec_create: wget -q localhost",
            "exec_start: wget",
            "exec_die",
        ] {
            assert!(!touches(quiet), "{quiet}");
        }
        for change in [
            "update",
            "rename",
            "start",
            "die",
            "health_status: unhealthy",
            "kill",
            "oom",
            "pause",
        ] {
            assert!(touches(change), "{change}");
        }
    }

    #[test]
    fn engine_times_are_seconds_and_nanoseconds() {
        assert_eq!(
            engine_time(1_700_000_000_000_000_123),
            "1700000000.000000123"
        );
        assert_eq!(engine_time(0), "0.000000000");
    }

    // Regression: the CLI's cache file held every container's env, secrets
    // included, beside the persisted document.
    #[test]
    fn the_file_form_leaves_out_containers_with_a_secret_env_variable() {
        let mut secret = details("a", "db");
        secret.env = vec!["DB_PASSWORD=hunter22".into(), "PATH=/bin".into()];
        let mut plain = details("b", "web");
        plain.env = vec!["PATH=/bin".into()];
        let mut cache = InspectCache::new("unix:///var/run/docker.sock");
        cache.store(&[secret, plain], 1);
        let redactor = crate::redact::Redactor::default();
        let text = cache.to_json_without(|k| redactor.is_secret(k)).unwrap();
        assert!(!text.contains("hunter22"), "{text}");
        let back = InspectCache::from_json(&text, "unix:///var/run/docker.sock");
        assert_eq!(back.len(), 1);
        // In memory, both stay.
        assert_eq!(cache.len(), 2);
    }
}
