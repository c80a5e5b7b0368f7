//! `[policy]` in the agent's configuration: what the device allows a
//! desired-state document to ask for, as written by the device's owner,
//! and its compilation into a [`Policy`] with every pattern checked.
//!
//! Every option defaults to what Kanto allows (everything), so berth stays
//! a drop-in replacement; [`Policy::is_permissive`] says when nothing was
//! restricted, so the agent can warn about it.

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};

use super::paths;
use super::{ImageKind, ImagePattern, Policy, UserPattern};

/// The `[policy]` table. `None` for a list means "not restricted" (Kanto's
/// behaviour); an empty list allows nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Glob patterns over fully qualified image references
    /// (`127.0.0.1:5000/acme/*`, `ghcr.io/acme/*:v*`); unset allows every image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_images: Option<Vec<String>>,
    /// Every image must be pinned by digest (`image@sha256:…`), so a moved
    /// tag cannot change what runs.
    pub require_digest: bool,
    /// Whether a document may run a privileged container (root on the host).
    pub allow_privileged: bool,
    /// Whether a document may use the host's network stack.
    pub allow_host_network: bool,
    /// Glob patterns over host device paths (`/dev/ttyUSB*`); unset allows
    /// every device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_devices: Option<Vec<String>>,
    /// Host path prefixes a bind mount's source must be under (component-wise:
    /// `/data` allows `/data/x`, not `/database`); unset allows every path.
    /// The Docker socket only when listed by its exact path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_mount_sources: Option<Vec<String>>,
    /// Component-name globs whose environment a document may change; for any
    /// other component a document that changes its env is refused.
    pub allow_env_change: Vec<String>,
    /// Globs over the container user (`1000`, `app*`, `1000:1000`); unset
    /// allows every user. An unset `user` is checked as `root`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_users: Option<Vec<String>>,
    /// Globs over named volume names a document may mount (`app-*`); unset
    /// allows every volume. Another service's volume is its data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_volumes: Option<Vec<String>>,
    /// Host ports a document may publish, as ports and ranges (`"8080"`,
    /// `"8000-8999"`); unset allows every port. A host port range the
    /// engine picks from must lie inside one entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_host_ports: Option<Vec<String>>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            allowed_images: None,
            require_digest: false,
            allow_privileged: true,
            allow_host_network: true,
            allowed_devices: None,
            allowed_mount_sources: None,
            allow_env_change: vec!["*".into()],
            allowed_users: None,
            allowed_volumes: None,
            allowed_host_ports: None,
        }
    }
}

/// A `[policy]` value that cannot be compiled: the option, the index of the
/// entry in its list, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy.{option}[{index}]: {problem}")]
pub struct PolicyError {
    /// The option (`allowed_images`).
    pub option: &'static str,
    /// The entry's position in the list, from 0.
    pub index: usize,
    /// What is wrong, quoting the entry.
    pub problem: String,
}

impl PolicyConfig {
    /// Checks every pattern and compiles the policy.
    ///
    /// # Errors
    /// The first entry that is not a valid pattern or path, named
    /// `policy.<option>[<index>]`.
    pub fn compile(&self) -> Result<Policy, PolicyError> {
        let images = match &self.allowed_images {
            None => None,
            Some(list) => Some(each(list, "allowed_images", image_pattern)?),
        };
        let devices = match &self.allowed_devices {
            None => None,
            Some(list) => Some(each(list, "allowed_devices", |p| {
                if !p.starts_with('/') {
                    return Err(format!("\"{p}\" is not an absolute path pattern"));
                }
                if p.split('/').any(|c| c == "..") {
                    return Err(format!("\"{p}\" contains \"..\""));
                }
                glob(p, p, true).map(|m| (p.to_string(), m))
            })?),
        };
        let mounts = match &self.allowed_mount_sources {
            None => None,
            Some(list) => Some(each(list, "allowed_mount_sources", |p| {
                if p.contains(['*', '?', '[', '{']) {
                    return Err(format!(
                        "\"{p}\" is a path prefix, not a pattern; write /var/lib/app, not /var/lib/app/*"
                    ));
                }
                paths::normalise(p).map_err(|e| format!("\"{p}\" {e}"))
            })?),
        };
        let env_change = each(&self.allow_env_change, "allow_env_change", |p| {
            if p.is_empty() {
                return Err("the pattern is empty".into());
            }
            glob(p, p, false).map(|m| (p.to_string(), m))
        })?;
        let users = match &self.allowed_users {
            None => None,
            Some(list) => Some(each(list, "allowed_users", user_pattern)?),
        };
        let volumes = match &self.allowed_volumes {
            None => None,
            Some(list) => Some(each(list, "allowed_volumes", |p| {
                if p.is_empty() {
                    return Err("the pattern is empty".into());
                }
                glob(p, p, false).map(|m| (p.to_string(), m))
            })?),
        };
        let host_ports = match &self.allowed_host_ports {
            None => None,
            Some(list) => Some(each(list, "allowed_host_ports", port_range)?),
        };
        Ok(Policy {
            config: self.clone(),
            images,
            devices,
            mounts,
            env_all: env_change.iter().any(|(p, _)| p == "*" || p == "**"),
            env_change,
            users,
            volumes,
            host_ports,
        })
    }
}

/// Compiles every entry of a list, naming the first bad one.
fn each<T>(
    list: &[String],
    option: &'static str,
    mut f: impl FnMut(&str) -> Result<T, String>,
) -> Result<Vec<T>, PolicyError> {
    list.iter()
        .enumerate()
        .map(|(index, p)| {
            f(p).map_err(|problem| PolicyError {
                option,
                index,
                problem,
            })
        })
        .collect()
}

/// `"8080"` or `"8000-8999"`: an inclusive range of host ports, 1–65535.
pub(super) fn port_range(p: &str) -> Result<(u16, u16), String> {
    let port = |t: &str| -> Result<u16, String> {
        match t.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!(
                "\"{p}\" is not a host port or range (1-65535, like \"8080\" or \"8000-8999\")"
            )),
            Ok(n) => Ok(n),
        }
    };
    let (first, last) = match p.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(p)?, port(p)?),
    };
    if first > last {
        return Err(format!("\"{p}\" is a range that ends before it starts"));
    }
    Ok((first, last))
}

/// One glob; `separator`: `*` does not cross `/` (`**` does). `written`
/// is the entry as the person wrote it, for the error.
fn glob(pattern: &str, written: &str, separator: bool) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(separator)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("\"{written}\" is not a valid pattern: {}", e.kind()))
}

/// Whether a pattern component has glob syntax.
fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// Normalises an image pattern the way [`crate::spec::ImageRef`] normalises a
/// reference, and decides what part of a reference it is matched against.
///
/// - No `/`: a Docker Hub official image (`busybox` ->
///   `docker.io/library/busybox`), except `**`, which matches everything.
/// - A first component that looks like a registry (has `.` or `:`, is
///   `localhost`) or has glob syntax is kept; otherwise `docker.io/` is put
///   in front (`acme/*` -> `docker.io/acme/*`).
/// - No tag or digest: any tag and any digest of the matching names.
pub(super) fn image_pattern(p: &str) -> Result<ImagePattern, String> {
    if p.is_empty() {
        return Err("the pattern is empty".into());
    }
    if p.trim() != p || p.contains(char::is_whitespace) {
        return Err(format!("\"{p}\" contains spaces"));
    }
    let (rest, digest) = match p.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (p, None),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if name.is_empty() || tag == Some("") || digest == Some("") {
        return Err(format!(
            "\"{p}\" is not an image pattern (registry/repository[:tag][@digest])"
        ));
    }
    let name = if name == "**" {
        name.to_string()
    } else {
        match name.split_once('/') {
            None => format!("docker.io/library/{name}"),
            Some((first, rest)) => match first {
                "index.docker.io" | "registry-1.docker.io" => format!("docker.io/{rest}"),
                f if f.contains(['.', ':']) || f == "localhost" || has_glob(f) => name.to_string(),
                _ => format!("docker.io/{name}"),
            },
        }
    };
    let (kind, text) = match (tag, digest) {
        (None, None) => (ImageKind::Name, name),
        (Some(t), None) => (ImageKind::Tag, format!("{name}:{t}")),
        (None, Some(d)) => (ImageKind::Digest, format!("{name}@{d}")),
        (Some(t), Some(d)) => (ImageKind::Full, format!("{name}:{t}@{d}")),
    };
    Ok(ImagePattern {
        written: p.to_string(),
        matcher: glob(&text, p, true)?,
        kind,
    })
}

/// A user pattern: without `:` it is matched against the user part of a
/// value (so `1000` allows `1000` and `1000:1000`); with `:` against the
/// whole `user:group`. `0` and `root` are the same user, on both sides.
fn user_pattern(p: &str) -> Result<UserPattern, String> {
    if p.is_empty() || p.contains(char::is_whitespace) {
        return Err(format!(
            "\"{p}\" is not a user pattern (user, uid, user:group or uid:gid)"
        ));
    }
    let canonical = match p.split_once(':') {
        Some((u, g)) => format!("{}:{}", super::canonical_user(u), super::canonical_user(g)),
        None => super::canonical_user(p),
    };
    Ok(UserPattern {
        whole: p.contains(':'),
        matcher: glob(&canonical, p, false)?,
    })
}
