//! Device-side policy: what a desired-state document may ask the device to
//! run, whoever sent it. Pure: no I/O except through [`HostPaths`].
//!
//! Whoever can publish on the desired-state topic or write a state file
//! chooses what runs on the device as root. The device's owner writes the
//! `[policy]` table ([`PolicyConfig`]); every document, from every source, is
//! checked against it after validation and before anything is pulled,
//! created, persisted or planned. A refusal names the component, the key,
//! the value and the rule, never an env value. docs/SECURITY.md explains
//! every option and the decisions behind them.

mod config;
mod env;
pub mod paths;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;

use globset::GlobMatcher;
use serde::Serialize;

use crate::spec::limits::{excerpt, more, printable, MAX_LISTED};
use crate::spec::model::{ContainerSpec, NetworkMode};
use crate::spec::{DesiredState, ImageRef};

pub use config::{PolicyConfig, PolicyError};
pub use env::EnvBaseline;
pub use paths::{HostPaths, RealHostPaths, DOCKER_SOCKETS};

/// A compiled `[policy]`: the configuration with every pattern checked.
#[derive(Debug, Clone)]
pub struct Policy {
    config: PolicyConfig,
    images: Option<Vec<ImagePattern>>,
    devices: Option<Vec<(String, GlobMatcher)>>,
    mounts: Option<Vec<String>>,
    env_change: Vec<(String, GlobMatcher)>,
    env_all: bool,
    users: Option<Vec<UserPattern>>,
    volumes: Option<Vec<(String, GlobMatcher)>>,
    host_ports: Option<Vec<(u16, u16)>>,
}

impl Default for Policy {
    fn default() -> Self {
        // The defaults compile: every default list is `None` or `["*"]`.
        PolicyConfig::default()
            .compile()
            .unwrap_or_else(|_| Policy {
                config: PolicyConfig::default(),
                images: None,
                devices: None,
                mounts: None,
                env_change: Vec::new(),
                env_all: true,
                users: None,
                volumes: None,
                host_ports: None,
            })
    }
}

/// What part of a reference an image pattern is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImageKind {
    /// `registry/repository`: any tag, any digest.
    Name,
    /// `registry/repository:tag`.
    Tag,
    /// `registry/repository@digest`.
    Digest,
    /// `registry/repository:tag@digest`.
    Full,
}

/// One compiled `allowed_images` entry.
#[derive(Debug, Clone)]
pub(crate) struct ImagePattern {
    pub(crate) written: String,
    pub(crate) kind: ImageKind,
    pub(crate) matcher: GlobMatcher,
}

impl ImagePattern {
    fn matches(&self, image: &ImageRef) -> bool {
        let name = image.name();
        match self.kind {
            ImageKind::Name => self.matcher.is_match(&name),
            ImageKind::Tag => image
                .tag
                .as_ref()
                .is_some_and(|t| self.matcher.is_match(format!("{name}:{t}"))),
            ImageKind::Digest => image
                .digest
                .as_ref()
                .is_some_and(|d| self.matcher.is_match(format!("{name}@{d}"))),
            ImageKind::Full => match (&image.tag, &image.digest) {
                (Some(t), Some(d)) => self.matcher.is_match(format!("{name}:{t}@{d}")),
                _ => false,
            },
        }
    }
}

/// One compiled `allowed_users` entry.
#[derive(Debug, Clone)]
pub(crate) struct UserPattern {
    /// Matched against `user:group` (the entry has a `:`), else the user.
    pub(crate) whole: bool,
    pub(crate) matcher: GlobMatcher,
}

/// `0`, `00` and `root` are one user to the kernel: numbers are written
/// without leading zeros and uid 0 as `root`, on patterns and values alike.
pub(crate) fn canonical_user(u: &str) -> String {
    if !u.is_empty() && u.bytes().all(|b| b.is_ascii_digit()) {
        let digits = u.trim_start_matches('0');
        return if digits.is_empty() {
            "root".into()
        } else {
            digits.into()
        };
    }
    u.to_string()
}

/// Whether a decision lets the document through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The rule allows the value.
    Allowed,
    /// The rule refuses it.
    Refused,
}

/// One rule applied to one value of one component, allowed or refused, with
/// why: what `berth policy check` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The component (container name).
    pub component: String,
    /// The config key the value comes from (`image`, `privileged`, …).
    pub key: &'static str,
    /// The value, as berth normalised it; for env the variable names only.
    pub value: String,
    /// The rule, as configured (`allow_privileged = false`).
    pub rule: String,
    /// Allowed or refused.
    pub verdict: Verdict,
    /// Why, in a few words.
    pub reason: String,
}

/// A refused value: a [`Decision`] whose verdict is [`Verdict::Refused`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The component (container name).
    pub component: String,
    /// The config key.
    pub key: &'static str,
    /// The value (for env, variable names, never values).
    pub value: String,
    /// The rule that refuses it.
    pub rule: String,
    /// Why.
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "container \"{}\": key \"{}\" value \"{}\" is refused by policy {}",
            self.component, self.key, self.value, self.rule
        )?;
        if !self.reason.is_empty() {
            write!(f, ": {}", self.reason)?;
        }
        Ok(())
    }
}

/// Why a document was refused: the first [`MAX_LISTED`] violations in
/// document order, and how many there were in all. Displays as one line
/// (the violations joined with "; "), for feedback messages and logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.lines().join("; "))]
pub struct Refusal {
    /// The first violations (at most [`MAX_LISTED`]).
    pub violations: Vec<Violation>,
    /// How many violations there were, listed or not.
    pub total: usize,
}

impl Refusal {
    /// One line per listed violation, then "and N more violations".
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.violations.iter().map(|v| v.to_string()).collect();
        let omitted = self.total.saturating_sub(self.violations.len());
        if omitted > 0 {
            lines.push(more(omitted, "violation"));
        }
        lines
    }
}

/// A value quoted in a decision: in full (as validation messages quote
/// their own value; the list of messages is bounded instead), with control
/// characters escaped, since messages end up on terminals and in logs.
fn quoted(value: &str) -> String {
    printable(value.to_string())
}

/// A configured list as TOML (`["a", "b"]`), cut when long.
fn list_text(option: &str, list: &[String]) -> String {
    let items: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
    format!("{option} = [{}]", excerpt(&items.join(", ")))
}

impl Policy {
    /// Checks a validated document. `baseline` is the env each component has
    /// now (for `allow_env_change`); `system` the device's configured system
    /// containers (the document's own are added to them, never subtracted),
    /// by name and, when the caller knows them, by full id as well: the
    /// engine also resolves `container:<id prefix>`, and a target that
    /// starts a listed id is refused like the name. `paths` resolves mount
    /// sources on the host.
    ///
    /// # Errors
    /// Every violation, bounded: the first [`MAX_LISTED`] and a count.
    pub fn check(
        &self,
        desired: &DesiredState,
        baseline: &EnvBaseline,
        system: &[String],
        paths: &dyn HostPaths,
    ) -> Result<(), Refusal> {
        let mut refusal = Refusal {
            violations: Vec::new(),
            total: 0,
        };
        self.walk(desired, baseline, system, paths, &mut |d| {
            if d.verdict == Verdict::Refused {
                refusal.total += 1;
                if refusal.violations.len() < MAX_LISTED {
                    refusal.violations.push(Violation {
                        component: d.component,
                        key: d.key,
                        value: d.value,
                        rule: d.rule,
                        reason: d.reason,
                    });
                }
            }
        });
        if refusal.total == 0 {
            Ok(())
        } else {
            Err(refusal)
        }
    }

    /// Every decision, allowed or refused, per component in document order
    /// and per rule: what `berth policy check` prints.
    pub fn explain(
        &self,
        desired: &DesiredState,
        baseline: &EnvBaseline,
        system: &[String],
        paths: &dyn HostPaths,
    ) -> Vec<Decision> {
        let mut out = Vec::new();
        self.walk(desired, baseline, system, paths, &mut |d| out.push(d));
        out
    }

    /// Whether the policy allows everything Kanto allows (every option at
    /// its default): the agent warns when such a device listens on MQTT.
    pub fn is_permissive(&self) -> bool {
        self.config == PolicyConfig::default()
    }

    /// Whether [`Policy::check`] looks at the env baseline at all; when not,
    /// a caller need not observe the engine to build one.
    pub fn needs_env_baseline(&self) -> bool {
        !self.env_all
    }

    /// The configuration this policy was compiled from.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    fn walk(
        &self,
        desired: &DesiredState,
        baseline: &EnvBaseline,
        system: &[String],
        paths: &dyn HostPaths,
        sink: &mut dyn FnMut(Decision),
    ) {
        let system: BTreeSet<&str> = system
            .iter()
            .chain(desired.system_containers.iter().flatten())
            .map(String::as_str)
            .collect();
        // Resolved once per check, not once per mount.
        let sockets = self.mounts.as_ref().map(|_| Sockets::new(paths));
        for c in &desired.containers {
            let mut emit = |key: &'static str,
                            value: String,
                            rule: String,
                            verdict: Result<String, String>| {
                let (verdict, reason) = match verdict {
                    Ok(r) => (Verdict::Allowed, r),
                    Err(r) => (Verdict::Refused, r),
                };
                sink(Decision {
                    component: c.name.clone(),
                    key,
                    value,
                    rule,
                    verdict,
                    reason,
                });
            };
            let image = c.config.image.to_string();
            let (rule, verdict) = self.image_decision(&c.config.image);
            emit("image", quoted(&image), rule, verdict);
            let (rule, verdict) = self.digest_decision(&c.config.image);
            emit("image", quoted(&image), rule, verdict);
            emit(
                "privileged",
                c.config.privileged.to_string(),
                format!("allow_privileged = {}", self.config.allow_privileged),
                if !c.config.privileged {
                    Ok("not privileged".into())
                } else if self.config.allow_privileged {
                    Ok("privileged containers are allowed".into())
                } else {
                    Err(String::new())
                },
            );
            let (rule, verdict) = self.network_decision(&c.config.network, &system);
            emit(
                "network",
                quoted(&c.config.network.to_string()),
                rule,
                verdict,
            );
            for d in &c.config.devices {
                let (rule, verdict) = self.device_decision(&d.host_path);
                emit("device", quoted(&d.to_string()), rule, verdict);
            }
            for m in &c.config.mounts {
                let (rule, verdict) = match (&self.mounts, &sockets) {
                    (Some(allowed), Some(sockets)) => (
                        list_text("allowed_mount_sources", allowed),
                        mount_decision(&m.source, allowed, sockets, paths),
                    ),
                    _ => (
                        "allowed_mount_sources".into(),
                        Ok("any source: allowed_mount_sources is not set".into()),
                    ),
                };
                emit("mount", quoted(&m.to_string()), rule, verdict);
            }
            for v in &c.config.volumes {
                let (rule, verdict) = self.volume_decision(&v.name);
                emit("volume", quoted(&v.to_string()), rule, verdict);
            }
            for p in &c.config.ports {
                let (rule, verdict) = self.port_decision(p.host_port, p.host_port_end);
                emit("port", quoted(&p.to_string()), rule, verdict);
            }
            let (value, rule, verdict) = self.env_decision(c, baseline);
            emit("env", value, rule, verdict);
            let (value, rule, verdict) = self.user_decision(c.config.user.as_deref());
            emit("user", value, rule, verdict);
        }
    }

    fn image_decision(&self, image: &ImageRef) -> (String, Result<String, String>) {
        let Some(patterns) = &self.images else {
            return (
                "allowed_images".into(),
                Ok("any image: allowed_images is not set".into()),
            );
        };
        let written: Vec<String> = patterns.iter().map(|p| p.written.clone()).collect();
        let rule = list_text("allowed_images", &written);
        let verdict = match patterns.iter().find(|p| p.matches(image)) {
            Some(p) => Ok(format!("matches \"{}\"", p.written)),
            None => Err("matches none of the patterns".into()),
        };
        (rule, verdict)
    }

    fn digest_decision(&self, image: &ImageRef) -> (String, Result<String, String>) {
        let rule = format!("require_digest = {}", self.config.require_digest);
        let verdict = if image.digest.is_some() {
            Ok("pinned by digest".into())
        } else if !self.config.require_digest {
            Ok("a tag is enough".into())
        } else {
            Err("the image is not pinned by digest (write name@sha256:…)".into())
        };
        (rule, verdict)
    }

    fn network_decision(
        &self,
        network: &NetworkMode,
        system: &BTreeSet<&str>,
    ) -> (String, Result<String, String>) {
        let host_rule = format!("allow_host_network = {}", self.config.allow_host_network);
        match network {
            NetworkMode::Container(other) if is_system(other, system) => (
                "system_containers".into(),
                Err(format!(
                    "\"{}\" is a system container, whose network no document may join (whatever the policy)",
                    quoted(other)
                )),
            ),
            NetworkMode::Host if !self.config.allow_host_network => (host_rule, Err(String::new())),
            NetworkMode::Host => (host_rule, Ok("the host network is allowed".into())),
            _ => (host_rule, Ok("not the host network".into())),
        }
    }

    fn device_decision(&self, host_path: &str) -> (String, Result<String, String>) {
        let Some(patterns) = &self.devices else {
            return (
                "allowed_devices".into(),
                Ok("any device: allowed_devices is not set".into()),
            );
        };
        let written: Vec<String> = patterns.iter().map(|(p, _)| p.clone()).collect();
        let rule = list_text("allowed_devices", &written);
        if host_path.split('/').any(|c| c == "..") {
            return (rule, Err("the host path contains \"..\"".into()));
        }
        let verdict = match patterns.iter().find(|(_, m)| m.is_match(host_path)) {
            Some((p, _)) => Ok(format!("matches \"{p}\"")),
            None => Err("matches none of the patterns".into()),
        };
        (rule, verdict)
    }

    fn volume_decision(&self, name: &str) -> (String, Result<String, String>) {
        let Some(patterns) = &self.volumes else {
            return (
                "allowed_volumes".into(),
                Ok("any volume: allowed_volumes is not set".into()),
            );
        };
        let written: Vec<String> = patterns.iter().map(|(p, _)| p.clone()).collect();
        let rule = list_text("allowed_volumes", &written);
        let verdict = match patterns.iter().find(|(_, m)| m.is_match(name)) {
            Some((p, _)) => Ok(format!("matches \"{p}\"")),
            None => Err("matches none of the patterns".into()),
        };
        (rule, verdict)
    }

    /// A binding's host ports `first..=last` (a range the engine picks
    /// one from) must lie inside one allowed range.
    fn port_decision(&self, first: u16, last: u16) -> (String, Result<String, String>) {
        let Some(ranges) = &self.host_ports else {
            return (
                "allowed_host_ports".into(),
                Ok("any host port: allowed_host_ports is not set".into()),
            );
        };
        let written = self
            .config
            .allowed_host_ports
            .as_deref()
            .unwrap_or_default();
        let rule = list_text("allowed_host_ports", written);
        let verdict = match ranges
            .iter()
            .zip(written)
            .find(|((a, b), _)| *a <= first && last <= *b)
        {
            Some((_, w)) => Ok(format!("within \"{w}\"")),
            None if first == last => Err("the host port is in none of the ranges".into()),
            None => Err("the host port range is not inside one of the ranges".into()),
        };
        (rule, verdict)
    }

    fn env_decision(
        &self,
        c: &ContainerSpec,
        baseline: &EnvBaseline,
    ) -> (String, String, Result<String, String>) {
        let written: Vec<String> = self.env_change.iter().map(|(p, _)| p.clone()).collect();
        let rule = list_text("allow_env_change", &written);
        let all: Vec<&str> = c.config.env.keys().map(String::as_str).collect();
        let all = quoted(&all.join(","));
        if let Some((p, _)) = self.env_change.iter().find(|(_, m)| m.is_match(&c.name)) {
            return (all, rule, Ok(format!("the component matches \"{p}\"")));
        }
        match baseline.changes(&c.name, &c.config.env) {
            None => (
                all,
                rule,
                Ok("a new component: no env to change yet".into()),
            ),
            Some(changed) if changed.is_empty() => {
                (String::new(), rule, Ok("the env is unchanged".into()))
            }
            Some(changed) => {
                let names: Vec<&str> = changed.iter().map(String::as_str).collect();
                (
                    quoted(&names.join(",")),
                    rule,
                    Err(format!(
                        "changes {} relative to what the component has now (values not shown)",
                        if changed.len() == 1 {
                            "this variable"
                        } else {
                            "these variables"
                        }
                    )),
                )
            }
        }
    }

    fn user_decision(&self, user: Option<&str>) -> (String, String, Result<String, String>) {
        let shown = user.map_or_else(|| "(unset)".to_string(), quoted);
        let Some(patterns) = &self.users else {
            return (
                shown,
                "allowed_users".into(),
                Ok("any user: allowed_users is not set".into()),
            );
        };
        let written = self.config.allowed_users.as_deref().unwrap_or_default();
        let rule = list_text("allowed_users", written);
        // Unset is the image's user, which berth cannot know before the
        // pull and which is root for most images: it is checked as root.
        let value = user.unwrap_or("root");
        let (u, whole) = match value.split_once(':') {
            Some((u, g)) => (
                canonical_user(u),
                format!("{}:{}", canonical_user(u), canonical_user(g)),
            ),
            None => (canonical_user(value), canonical_user(value)),
        };
        let found = patterns.iter().zip(written).find(|(p, _)| {
            if p.whole {
                p.matcher.is_match(&whole)
            } else {
                p.matcher.is_match(&u)
            }
        });
        let verdict = match (found, user) {
            (Some((_, w)), _) => Ok(format!("matches \"{w}\"")),
            (None, None) => Err(
                "no user is set, so the image's user (usually root) runs it; checked as root"
                    .into(),
            ),
            (None, Some(_)) => Err("matches none of the patterns".into()),
        };
        (shown, rule, verdict)
    }
}

/// Whether a `container:` network target is a system container. The engine
/// resolves the target as a name, a full id or any unique id prefix, so a
/// hex target that starts a system container's id (when the caller put the
/// ids in `system`) is that container too.
fn is_system(target: &str, system: &BTreeSet<&str>) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    system.contains(target)
        || (hex(target)
            && system
                .iter()
                .any(|s| s.len() == 64 && hex(s) && s.starts_with(&target.to_ascii_lowercase())))
}

/// The Docker socket paths and what they resolve to on this host.
struct Sockets {
    paths: Vec<String>,
}

impl Sockets {
    fn new(host: &dyn HostPaths) -> Self {
        let mut paths: Vec<String> = Vec::new();
        for s in DOCKER_SOCKETS {
            for p in [s.to_string(), host.resolve(s)] {
                if !paths.contains(&p) {
                    paths.push(p);
                }
            }
        }
        Self { paths }
    }

    fn is_socket(&self, path: &str) -> bool {
        self.paths.iter().any(|s| s == path)
    }

    /// Whether a socket is strictly below `path` (mounting `path` exposes it).
    fn below(&self, path: &str) -> bool {
        self.paths
            .iter()
            .any(|s| s != path && paths::is_under(s, path))
    }
}

/// `allowed_mount_sources` for one bind-mount source; `Ok(why)` or `Err(why)`.
fn mount_decision(
    source: &str,
    allowed: &[String],
    sockets: &Sockets,
    host: &dyn HostPaths,
) -> Result<String, String> {
    let lexical = paths::normalise(source).map_err(|e| format!("the source {e}"))?;
    let resolved = host.resolve(&lexical);
    let socket_listed = allowed.iter().any(|a| sockets.is_socket(a));
    if sockets.is_socket(&lexical) || sockets.is_socket(&resolved) {
        return if allowed
            .iter()
            .any(|a| *a == lexical && sockets.is_socket(a))
        {
            Ok("the Docker socket, listed by its exact path".into())
        } else {
            Err(format!(
                "the source is the Docker socket{}, allowed only when listed by its exact path",
                if resolved != lexical {
                    format!(" (it resolves to {})", quoted(&resolved))
                } else {
                    String::new()
                }
            ))
        };
    }
    if !socket_listed && (sockets.below(&lexical) || sockets.below(&resolved)) {
        return Err(
            "the source contains the Docker socket; list the socket by its exact path to allow that"
                .into(),
        );
    }
    let Some(prefix) = allowed
        .iter()
        .find(|a| !sockets.is_socket(a) && paths::is_under(&lexical, a))
    else {
        return Err("the source is under none of the allowed paths".into());
    };
    if resolved != lexical {
        let inside = allowed.iter().any(|a| {
            !sockets.is_socket(a)
                && (paths::is_under(&resolved, a) || paths::is_under(&resolved, &host.resolve(a)))
        });
        if !inside {
            return Err(format!(
                "the source resolves (through a symbolic link) to {}, which is under none of the allowed paths",
                quoted(&resolved)
            ));
        }
    }
    Ok(format!("under \"{prefix}\""))
}
