//! Image references, parsed and normalised the way the Docker engine does,
//! so that `nginx` and `docker.io/library/nginx:latest` compare equal and a
//! malformed reference is refused before anything is pulled.

use std::fmt;

use serde::{Serialize, Serializer};

/// Docker Hub's canonical registry name.
const DOCKER_HUB: &str = "docker.io";
/// The engine's longest accepted repository name.
const MAX_NAME_LEN: usize = 255;
/// The engine's longest accepted tag.
const MAX_TAG_LEN: usize = 128;

/// A fully qualified image reference: registry, repository path and a tag
/// and/or digest. Displays in the canonical form Docker prints.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    /// Registry host, with port when given (`127.0.0.1:5000`, `docker.io`).
    pub registry: String,
    /// Repository path below the registry (`library/nginx`).
    pub repository: String,
    /// The tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// The content digest (`sha256:<hex>`) when pinned.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalises a reference.
    ///
    /// # Errors
    /// A message saying which part is malformed and what was expected.
    pub fn parse(input: &str) -> Result<Self, String> {
        if input.is_empty() {
            return Err("the image reference is empty".into());
        }
        if input.trim() != input {
            return Err("the image reference has leading or trailing spaces".into());
        }
        let (rest, digest) = match input.split_once('@') {
            Some((name, digest)) => (name, Some(parse_digest(digest)?)),
            None => (input, None),
        };
        // A tag follows the last ':' that comes after the last '/', so a
        // registry port (`host:5000/app`) is not mistaken for a tag.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(parse_tag(&rest[at + 1..])?))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err("the image reference has no repository name".into());
        }
        let (registry, path) = split_registry(name);
        let registry = match registry {
            Some(r) => parse_registry(r)?,
            None => DOCKER_HUB.to_string(),
        };
        for component in path.split('/') {
            check_path_component(component)?;
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(format!(
                "the repository name is longer than {MAX_NAME_LEN} characters"
            ));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (tag, _) => tag,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Parses like [`ImageRef::parse`], but keeps an unparsable reference
    /// (an image id the engine reports, say) verbatim instead of failing.
    pub fn parse_lenient(input: &str) -> Self {
        Self::parse(input).unwrap_or_else(|_| Self {
            registry: String::new(),
            repository: input.to_string(),
            tag: None,
            digest: None,
        })
    }

    /// `registry/repository` without tag or digest: what a pull names.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The first digest among `references` (as the engine lists an image's
    /// registry digests, `name@sha256:…`) that comes from this reference's
    /// repository: what the local image was pulled as from it.
    pub fn digest_from<'a>(&self, references: impl IntoIterator<Item = &'a str>) -> Option<String> {
        let name = self.name();
        references.into_iter().find_map(|rd| {
            let r = ImageRef::parse(rd).ok()?;
            (r.name() == name).then_some(r.digest).flatten()
        })
    }

    /// The text after the last `/`'s tag or digest, as Kanto reports a
    /// container's version when the document gives none.
    pub fn version_hint(&self) -> &str {
        self.tag
            .as_deref()
            .or(self.digest.as_deref())
            .unwrap_or("n/a")
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An empty registry marks a reference berth could not parse (an
        // engine-side image id, say); it is shown as the engine gave it.
        if self.registry.is_empty() {
            f.write_str(&self.repository)?;
        } else {
            write!(f, "{}/{}", self.registry, self.repository)?;
        }
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl Serialize for ImageRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Splits off the registry the way the engine decides it: the first path
/// component is a registry when it has a `.` or `:`, is `localhost`, or has
/// upper-case letters (which repository paths may not).
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn parse_registry(registry: &str) -> Result<String, String> {
    let (host, port) = if let Some(v6) = registry.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("registry \"{registry}\" has an unclosed '['"))?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "registry \"{registry}\" is not a valid IPv6 address"
            ));
        }
        match after {
            "" => (registry, None),
            p => match p.strip_prefix(':') {
                Some(port) => (&registry[..registry.len() - p.len()], Some(port)),
                None => return Err(format!("registry \"{registry}\" is malformed")),
            },
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        }
    };
    if !host.starts_with('[') {
        let ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !ok {
            return Err(format!("registry host \"{host}\" is not a valid host name"));
        }
    }
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!(
                "registry port \"{port}\" is not a port number (1-65535)"
            ));
        }
    }
    Ok(match registry {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        r => r.to_string(),
    })
}

/// A path component: lower-case letters and digits, joined by `.`, `_`,
/// `__` or runs of `-`.
fn check_path_component(c: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("repository path component \"{c}\" {why}"));
    if c.is_empty() {
        return bad("is empty (two '/' in a row, or a trailing '/')");
    }
    if c.chars().any(|ch| ch.is_ascii_uppercase()) {
        return bad("has upper-case letters; repository names are lower case");
    }
    let bytes = c.as_bytes();
    if !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return bad("must start and end with a letter or digit");
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !(bytes[i].is_ascii_lowercase() || bytes[i].is_ascii_digit()) {
            i += 1;
        }
        let sep = &c[start..i];
        let dashes = sep.bytes().all(|b| b == b'-');
        if !(matches!(sep, "." | "_" | "__") || dashes) {
            return bad("may only contain a-z, 0-9 and the separators '.', '_', '__' or '-'");
        }
    }
    Ok(())
}

fn parse_tag(tag: &str) -> Result<String, String> {
    let valid_first = tag
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let valid_rest = tag
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if tag.is_empty() {
        Err("the tag after ':' is empty".into())
    } else if !valid_first || !valid_rest {
        Err(format!(
            "tag \"{tag}\" may only contain letters, digits, '_', '.' and '-', and may not start with '.' or '-'"
        ))
    } else if tag.len() > MAX_TAG_LEN {
        Err(format!(
            "tag \"{tag}\" is longer than {MAX_TAG_LEN} characters"
        ))
    } else {
        Ok(tag.to_string())
    }
}

fn parse_digest(digest: &str) -> Result<String, String> {
    let Some((algo, hex)) = digest.split_once(':') else {
        return Err(format!(
            "digest \"{digest}\" is not of the form sha256:<64 hex digits>"
        ));
    };
    let hex_ok = |len: usize| hex.len() == len && hex.bytes().all(|b| b.is_ascii_hexdigit());
    let ok = match algo {
        "sha256" => hex_ok(64),
        "sha512" => hex_ok(128),
        _ => false,
    };
    if ok {
        Ok(format!("{algo}:{}", hex.to_ascii_lowercase()))
    } else {
        Err(format!(
            "digest \"{digest}\" is not of the form sha256:<64 hex digits>"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn bare_name_is_docker_hub_library_latest() {
        assert_eq!(canon("nginx"), "docker.io/library/nginx:latest");
    }

    #[test]
    fn hub_user_repository_keeps_its_namespace() {
        assert_eq!(canon("grafana/grafana:10"), "docker.io/grafana/grafana:10");
    }

    #[test]
    fn hub_aliases_are_folded() {
        assert_eq!(
            canon("index.docker.io/library/nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(canon("docker.io/nginx:1"), "docker.io/library/nginx:1");
    }

    #[test]
    fn registry_port_is_not_a_tag() {
        let r = ImageRef::parse("127.0.0.1:5000/berth-test/service").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "berth-test/service");
        assert_eq!(r.tag.as_deref(), Some("latest"));
    }

    #[test]
    fn localhost_is_a_registry() {
        assert_eq!(canon("localhost/app:2"), "localhost/app:2");
    }

    #[test]
    fn ipv6_registry_is_accepted() {
        assert_eq!(canon("[::1]:5000/app:1"), "[::1]:5000/app:1");
    }

    #[test]
    fn digest_alone_gets_no_default_tag() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            canon(&format!("app@{d}")),
            format!("docker.io/library/app@{d}")
        );
    }

    #[test]
    fn tag_and_digest_are_both_kept() {
        let d = format!("sha256:{}", "b".repeat(64));
        assert_eq!(
            canon(&format!("ghcr.io/x/app:1@{d}")),
            format!("ghcr.io/x/app:1@{d}")
        );
    }

    #[test]
    fn upper_case_repository_is_refused() {
        assert!(ImageRef::parse("MyApp").unwrap_err().contains("upper-case"));
    }

    #[test]
    fn empty_tag_is_refused() {
        assert!(ImageRef::parse("app:").unwrap_err().contains("empty"));
    }

    #[test]
    fn bad_tag_characters_are_refused() {
        assert!(ImageRef::parse("app:.1").is_err());
        assert!(ImageRef::parse("app:1+2").is_err());
    }

    #[test]
    fn short_digest_is_refused() {
        assert!(ImageRef::parse("app@sha256:abc")
            .unwrap_err()
            .contains("64 hex"));
    }

    #[test]
    fn bad_separators_are_refused() {
        assert!(ImageRef::parse("my..app").is_err());
        assert!(ImageRef::parse("app/").is_err());
        assert!(ImageRef::parse("-app").is_err());
        assert!(ImageRef::parse("a b").is_err());
    }

    #[test]
    fn allowed_separators_are_accepted() {
        assert!(ImageRef::parse("my__app/x-y.z_w---v").is_ok());
    }

    #[test]
    fn bad_registry_port_is_refused() {
        assert!(ImageRef::parse("host:99999/app")
            .unwrap_err()
            .contains("port"));
    }

    #[test]
    fn version_hint_is_tag_then_digest() {
        assert_eq!(ImageRef::parse("app:1.2").unwrap().version_hint(), "1.2");
    }
}
