//! `berth check`: which managed containers have a newer image in their
//! registry, whether a tag moved under them, and what a candidate changes
//! in its declared config (env, ports, volumes, user, entrypoint).
//!
//! The decisions ([`pick_candidate`], [`drift`], [`classify`]) are pure;
//! [`run`] asks a [`Registry`] for what they need, concurrently with a bound
//! and with one tag list per repository per run, so they are tested with an
//! in-memory registry. A problem with one container is its result
//! ([`Status::Unknown`] with a reason), never an error of the whole check.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use futures_util::StreamExt;
use serde::Serialize;

use crate::redact::Redactor;
use crate::registry::client::{ImageConfig, Manifest, Registry, RegistryError};
use crate::spec::image::ImageRef;

pub mod watch;

/// How many containers are checked at once: each is up to three registry
/// requests; more would only queue at a device's uplink.
pub const CONCURRENCY: usize = 8;

/// The verdict for one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Its tag is where it was and no newer version qualifies.
    UpToDate,
    /// A newer semver tag (same major, or any with `--any-major`).
    UpgradeAvailable,
    /// Its tag now names another digest.
    TagMoved,
    /// The repository or the tag is gone from the registry.
    NotFound,
    /// The registry could not tell (unreachable, unauthorised, tags not
    /// semver, …): see `reason`.
    Unknown,
    /// A local image, with no registry to ask.
    NotRegistrySourced,
}

impl Status {
    /// Whether this offers something to roll out (exit code 2).
    pub fn is_available(self) -> bool {
        matches!(self, Status::UpgradeAvailable | Status::TagMoved)
    }

    /// The word in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::UpToDate => "up-to-date",
            Status::UpgradeAvailable => "upgrade-available",
            Status::TagMoved => "tag-moved",
            Status::NotFound => "not-found",
            Status::Unknown => "unknown",
            Status::NotRegistrySourced => "not-registry-sourced",
        }
    }
}

/// What a container runs, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Container name.
    pub name: String,
    /// The document's component id, when berth recorded it.
    pub component: Option<String>,
    /// The image reference it was created from (`None`: not parsable as a
    /// registry reference).
    pub image: Option<ImageRef>,
    /// The registry digest of the local image for that repository, if it
    /// was pulled from one.
    pub digest: Option<String>,
    /// The local image's config, used for the drift when the registry no
    /// longer serves the current digest.
    pub local_config: ImageConfig,
}

/// A reference and the digest it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pinned {
    /// `registry/repository:tag`.
    pub reference: String,
    /// `sha256:…`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// One env variable the candidate adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvAdded {
    /// Name.
    pub name: String,
    /// Default value; `<redacted>` when the name is secret.
    pub value: String,
}

/// One env variable whose default changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvChanged {
    /// Name.
    pub name: String,
    /// Current default (`<redacted>` when secret).
    pub from: String,
    /// Candidate's default (`<redacted>` when secret).
    pub to: String,
}

/// A before/after pair for a single setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change<T> {
    /// Current.
    pub from: T,
    /// Candidate.
    pub to: T,
}

/// What the candidate image declares differently from the current one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// Variables the candidate adds.
    pub env_added: Vec<EnvAdded>,
    /// Variables the candidate no longer declares.
    pub env_removed: Vec<String>,
    /// Variables with another default.
    pub env_changed: Vec<EnvChanged>,
    /// `EXPOSE`d ports added.
    pub ports_added: Vec<String>,
    /// `EXPOSE`d ports removed.
    pub ports_removed: Vec<String>,
    /// `VOLUME`s added.
    pub volumes_added: Vec<String>,
    /// `VOLUME`s removed.
    pub volumes_removed: Vec<String>,
    /// Another default user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Change<String>>,
    /// Another entrypoint (arguments redacted like any command line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Change<Vec<String>>>,
}

impl Drift {
    /// Whether nothing differs.
    pub fn is_empty(&self) -> bool {
        self == &Drift::default()
    }
}

/// The result for one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Container name.
    pub name: String,
    /// Component id, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// The verdict.
    pub status: Status,
    /// Why, for `unknown` (and `not-found`, `not-registry-sourced`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<Pinned>,
    /// What to move to (`upgrade-available`, `tag-moved`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Pinned>,
    /// What the candidate declares differently.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<Drift>,
}

/// How to decide.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Any newer major version qualifies, not only the current major.
    pub any_major: bool,
    /// Which env values are secret.
    pub redactor: Redactor,
}

/// A tag read as a version: `1.2.3` or `v1.2.3` (full semver, so `1.2`
/// and `latest` are not versions).
pub fn version_of(tag: &str) -> Option<semver::Version> {
    semver::Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

/// The newest tag above `current`: in the same major unless `any_major`,
/// never a pre-release unless `current` is one, of the same major. Tags
/// that are not versions are ignored.
///
/// # Errors
/// When `current` itself is not a version: nothing can be newer.
pub fn pick_candidate<'a>(
    current: &str,
    tags: &'a [String],
    any_major: bool,
) -> Result<Option<&'a str>, String> {
    let now = version_of(current).ok_or_else(|| {
        format!("tag {current} is not a semver version; only a moved tag can be told")
    })?;
    let best = tags
        .iter()
        .filter_map(|t| version_of(t).map(|v| (v, t.as_str())))
        .filter(|(v, _)| *v > now)
        .filter(|(v, _)| any_major || v.major == now.major)
        .filter(|(v, _)| v.pre.is_empty() || !now.pre.is_empty())
        .max_by(|a, b| a.0.cmp(&b.0));
    Ok(best.map(|(_, t)| t))
}

/// What `candidate` declares differently from `current`; env values whose
/// names `redactor` marks secret are shown as `<redacted>`, and every other
/// value and entrypoint argument goes through the URL-password rule.
pub fn drift(current: &ImageConfig, candidate: &ImageConfig, redactor: &Redactor) -> Drift {
    let shown = |name: &str, value: &str| redactor.env_value(name, value).into_owned();
    let diff = |a: &BTreeSet<String>, b: &BTreeSet<String>| -> Vec<String> {
        b.difference(a).cloned().collect()
    };
    let mut d = Drift::default();
    for (name, value) in &candidate.env {
        match current.env.get(name) {
            None => d.env_added.push(EnvAdded {
                name: name.clone(),
                value: shown(name, value),
            }),
            Some(old) if old != value => d.env_changed.push(EnvChanged {
                name: name.clone(),
                from: shown(name, old),
                to: shown(name, value),
            }),
            Some(_) => {}
        }
    }
    d.env_removed = current
        .env
        .keys()
        .filter(|k| !candidate.env.contains_key(*k))
        .cloned()
        .collect();
    d.ports_added = diff(&current.exposed_ports, &candidate.exposed_ports);
    d.ports_removed = diff(&candidate.exposed_ports, &current.exposed_ports);
    d.volumes_added = diff(&current.volumes, &candidate.volumes);
    d.volumes_removed = diff(&candidate.volumes, &current.volumes);
    if current.user != candidate.user {
        d.user = Some(Change {
            from: current.user.clone(),
            to: candidate.user.clone(),
        });
    }
    if current.entrypoint != candidate.entrypoint {
        let args = |v: &[String]| -> Vec<String> { redactor.argv(v) };
        d.entrypoint = Some(Change {
            from: args(&current.entrypoint),
            to: args(&candidate.entrypoint),
        });
    }
    d
}

/// What the registry said about one container, for [`classify`].
#[derive(Debug, Clone)]
pub struct Answers {
    /// The manifest its tag names now.
    pub tagged: Result<Manifest, RegistryError>,
    /// The repository's tags (asked only when the tag did not move).
    pub tags: Option<Result<Vec<String>, RegistryError>>,
}

/// The verdict from the registry's answers, without the candidate's
/// config (see [`run`]): the status, the reason, and the candidate tag.
pub fn classify(
    current_tag: &str,
    current_digest: &str,
    answers: &Answers,
    any_major: bool,
) -> (Status, Option<String>, Option<String>) {
    let tagged = match &answers.tagged {
        Ok(m) => m,
        Err(RegistryError::NotFound(_)) => {
            return (
                Status::NotFound,
                Some(format!("tag {current_tag} is not in the registry")),
                None,
            )
        }
        Err(e) => return (Status::Unknown, Some(e.to_string()), None),
    };
    if tagged.digest != current_digest {
        return (Status::TagMoved, None, Some(current_tag.to_string()));
    }
    match &answers.tags {
        None => (Status::UpToDate, None, None),
        Some(Err(e)) => (Status::Unknown, Some(e.to_string()), None),
        Some(Ok(tags)) => match pick_candidate(current_tag, tags, any_major) {
            Err(reason) => (Status::Unknown, Some(reason), None),
            Ok(None) => (Status::UpToDate, None, None),
            Ok(Some(t)) => (Status::UpgradeAvailable, None, Some(t.to_string())),
        },
    }
}

type TagCache = tokio::sync::Mutex<
    HashMap<String, Arc<tokio::sync::OnceCell<Result<Vec<String>, RegistryError>>>>,
>;

/// Checks every target against its registry: up to [`CONCURRENCY`] at
/// once, one tag list per repository. Results come in the targets' order.
pub async fn run<R: Registry>(
    registry: &R,
    targets: Vec<Target>,
    options: &Options,
) -> Vec<Finding> {
    let cache: TagCache = tokio::sync::Mutex::default();
    let mut findings: Vec<(usize, Finding)> =
        futures_util::stream::iter(targets.into_iter().enumerate())
            .map(|(i, t)| {
                let cache = &cache;
                async move { (i, one(registry, t, options, cache).await) }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
    findings.sort_by_key(|(i, _)| *i);
    findings.into_iter().map(|(_, f)| f).collect()
}

async fn tags_of<R: Registry>(
    registry: &R,
    image: &ImageRef,
    cache: &TagCache,
) -> Result<Vec<String>, RegistryError> {
    let cell = cache.lock().await.entry(image.name()).or_default().clone();
    cell.get_or_init(|| registry.tags(image)).await.clone()
}

async fn one<R: Registry>(registry: &R, t: Target, options: &Options, cache: &TagCache) -> Finding {
    let mut f = Finding {
        name: t.name.clone(),
        component: t.component.clone(),
        status: Status::NotRegistrySourced,
        reason: None,
        current: None,
        candidate: None,
        drift: None,
    };
    let (Some(image), Some(digest)) = (t.image.clone(), t.digest.clone()) else {
        f.reason = Some(match &t.image {
            None => "the image reference names no registry".into(),
            Some(i) => format!("the local image {i} was not pulled from a registry"),
        });
        f.current = t.image.as_ref().map(|i| Pinned {
            reference: i.to_string(),
            digest: None,
        });
        return f;
    };
    let tag = image.tag.clone().unwrap_or_else(|| "latest".into());
    let tagged_ref = ImageRef {
        digest: None,
        tag: Some(tag.clone()),
        ..image.clone()
    };
    f.current = Some(Pinned {
        reference: tagged_ref.to_string(),
        digest: Some(digest.clone()),
    });
    if image.digest.is_some() && image.tag.is_none() {
        f.status = Status::Unknown;
        f.reason = Some("pinned by digest alone: no tag to compare".into());
        return f;
    }
    let tagged = registry.manifest(&tagged_ref).await;
    let moved = matches!(&tagged, Ok(m) if m.digest != digest);
    let tags = if tagged.is_ok() && !moved {
        Some(tags_of(registry, &image, cache).await)
    } else {
        None
    };
    let answers = Answers { tagged, tags };
    let (status, reason, candidate_tag) = classify(&tag, &digest, &answers, options.any_major);
    f.status = status;
    f.reason = reason;
    let Some(candidate_tag) = candidate_tag else {
        return f;
    };
    let candidate_ref = ImageRef {
        tag: Some(candidate_tag),
        digest: None,
        ..image.clone()
    };
    let candidate = if status == Status::TagMoved {
        answers.tagged.clone()
    } else {
        registry.manifest(&candidate_ref).await
    };
    let candidate = match candidate {
        Ok(m) => m,
        Err(e) => {
            f.status = Status::Unknown;
            f.reason = Some(format!("candidate {candidate_ref}: {e}"));
            return f;
        }
    };
    // The current image's config as the registry serves it, else the
    // local image's (a moved tag's old digest may be gone).
    let current_config = registry
        .manifest(&ImageRef {
            tag: None,
            digest: Some(digest),
            ..image.clone()
        })
        .await
        .map(|m| m.config)
        .unwrap_or(t.local_config);
    f.drift = Some(drift(&current_config, &candidate.config, &options.redactor));
    f.candidate = Some(Pinned {
        reference: candidate_ref.to_string(),
        digest: Some(candidate.digest),
    });
    f
}

/// The document `doc` (Kanto desired-state JSON) with every finding's
/// candidate applied: each component whose id is a finding's component (or
/// container name) gets the candidate reference, pinned by digest so what
/// was checked is what runs, and the candidate's tag as its version. A new
/// `activityId` keeps the agent from taking it for a replay.
///
/// # Errors
/// When `doc` is not JSON of that shape.
pub fn write_candidates(
    doc: &str,
    findings: &[Finding],
    activity_id: &str,
) -> Result<(String, usize), String> {
    let mut value: serde_json::Value =
        serde_json::from_str(doc).map_err(|e| format!("the document is not JSON: {e}"))?;
    let by_component: BTreeMap<&str, &Pinned> = findings
        .iter()
        .filter(|f| f.status.is_available())
        .filter_map(|f| {
            let c = f.candidate.as_ref()?;
            Some((f.component.as_deref().unwrap_or(&f.name), c))
        })
        .collect();
    let mut changed = 0;
    let domains = value
        .pointer_mut("/payload/domains")
        .and_then(|d| d.as_array_mut())
        .ok_or("the document has no payload.domains")?;
    for domain in domains {
        let Some(components) = domain.get_mut("components").and_then(|c| c.as_array_mut()) else {
            continue;
        };
        for component in components {
            let id = component
                .get("id")
                .and_then(|i| i.as_str())
                .unwrap_or("")
                .to_string();
            let Some(pinned) = by_component.get(id.as_str()) else {
                continue;
            };
            let reference = match &pinned.digest {
                Some(d) => format!("{}@{d}", pinned.reference),
                None => pinned.reference.clone(),
            };
            let Some(config) = component.get_mut("config").and_then(|c| c.as_array_mut()) else {
                continue;
            };
            for kv in config.iter_mut() {
                if kv.get("key").and_then(|k| k.as_str()) == Some("image") {
                    kv["value"] = serde_json::Value::String(reference.clone());
                    changed += 1;
                }
            }
            if let Some(tag) = ImageRef::parse(&pinned.reference).ok().and_then(|r| r.tag) {
                component["version"] = serde_json::Value::String(tag);
            }
        }
    }
    value["activityId"] = serde_json::Value::String(activity_id.to_string());
    let text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
    Ok((text, changed))
}

#[cfg(test)]
mod tests;

/// The containers `instance` manages, with their images' registry digests
/// and configs: what [`run`] checks. Temporary and placeholder containers
/// of an activity are left out.
///
/// # Errors
/// When the engine cannot be read.
pub async fn targets<R: crate::runtime::Runtime>(
    rt: &R,
    instance: &str,
) -> Result<Vec<Target>, crate::runtime::RuntimeError> {
    let mut out = Vec::new();
    for d in rt.list().await? {
        let Some(owner) = crate::labels::ownership(&d.labels) else {
            continue;
        };
        if owner.instance != instance
            || d.labels.contains_key(crate::labels::PLACEHOLDER)
            || d.name.contains(".berth-")
        {
            continue;
        }
        let reference = owner.image.clone().unwrap_or_else(|| d.image_ref.clone());
        let image = ImageRef::parse(&reference).ok();
        let local = rt.image(&d.image_id).await?;
        // The digest berth created the container from, else one the local
        // image was pulled as from the same repository.
        let digest = image.as_ref().and_then(|i| {
            i.digest_from([d.image_ref.as_str()])
                .or_else(|| i.digest_from(local.as_ref()?.repo_digests.iter().map(String::as_str)))
        });
        let local_config = local
            .map(|l| ImageConfig {
                env: l
                    .env
                    .iter()
                    .map(|kv| match kv.split_once('=') {
                        Some((k, v)) => (k.to_string(), v.to_string()),
                        None => (kv.clone(), String::new()),
                    })
                    .collect(),
                exposed_ports: BTreeSet::new(),
                volumes: l.volumes.into_iter().collect(),
                user: l.user,
                entrypoint: l.entrypoint.unwrap_or_default(),
            })
            .unwrap_or_default();
        out.push(Target {
            name: d.name,
            component: owner.component,
            image,
            digest,
            local_config,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
