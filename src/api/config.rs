//! The `[api]` section of the agent's configuration: where the local HTTP
//! API listens and who may do what through it. Pure, except
//! [`ApiConfig::load_tokens`], which reads the token files once at start.
//!
//! A token is never kept in the configuration in clear: either a file
//! holds it (`token_file`, mode 0600, read at start) or the configuration
//! holds its SHA-256 (`sha256`), so `--print-config` and a leaked
//! configuration show nothing a caller could present.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where the API listens by default: a unix socket next to the state
/// directory's usual place, so only local processes (root and the socket's
/// group) can reach it.
pub const DEFAULT_SOCKET: &str = "/run/berth/api.sock";

/// The largest request body accepted by default: a whole desired-state
/// document at the default limits is 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// How long a request that does not wait for an activity may take by
/// default before it is answered `408`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How many server-sent events are kept for `Last-Event-ID` resumption.
pub const DEFAULT_EVENT_BUFFER: usize = 1024;

/// The `[api]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// A unix socket path (`/run/berth/api.sock`) or `127.0.0.1:PORT`.
    pub listen: String,
    /// Lets `listen` be a TCP address that is not loopback. Off by
    /// default: the API changes what the device runs, and bearer tokens
    /// cross plain HTTP.
    pub allow_remote: bool,
    /// The socket file's mode, as an octal string (`0660` lets the
    /// socket's group in, `0600` only berth's user).
    pub socket_mode: String,
    /// The largest request body, in bytes.
    pub max_body_size: usize,
    /// How long a request that does not wait for an activity may take.
    #[serde(with = "crate::config::duration_text")]
    pub request_timeout: Duration,
    /// Server-sent events kept for resumption with `Last-Event-ID`.
    pub event_buffer: usize,
    /// Who may call the API, and what each may do.
    pub tokens: Vec<TokenConfig>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_SOCKET.to_string(),
            allow_remote: false,
            socket_mode: "0660".to_string(),
            max_body_size: DEFAULT_MAX_BODY,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            event_buffer: DEFAULT_EVENT_BUFFER,
            tokens: Vec::new(),
        }
    }
}

/// One `[[api.tokens]]` entry: a caller and its permissions. Every
/// permission is off unless granted.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// Names the caller in audit lines (never the token itself).
    pub name: String,
    /// A file holding the token (its first line).
    pub token_file: Option<PathBuf>,
    /// The token's SHA-256, 64 hex digits.
    pub sha256: Option<String>,
    /// Read the inventory, one container, its env, the events.
    pub can_inspect: bool,
    /// Roll a component to another image, within `allowed_images`.
    pub can_update_image: bool,
    /// Image references (globs: `registry/app:*`) an update may name.
    pub allowed_images: Vec<String>,
    /// Change a component's env.
    pub can_update_env: bool,
    /// See secret env values in clear.
    pub can_read_secrets: bool,
    /// Post a whole desired-state document.
    pub can_apply: bool,
}

/// Where the API listens, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A unix socket.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
            Listen::Tcp(a) => write!(f, "http://{a}"),
        }
    }
}

/// Why the `[api]` section was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("api.{option}: {problem}")]
pub struct ApiConfigError {
    /// The option, below `api.`.
    pub option: String,
    /// What is wrong with it.
    pub problem: String,
}

fn bad(option: impl Into<String>, problem: impl Into<String>) -> ApiConfigError {
    ApiConfigError {
        option: option.into(),
        problem: problem.into(),
    }
}

/// Parses `listen`: an absolute path is a unix socket, `host:port` is TCP.
/// A TCP address that is not loopback is refused unless `allow_remote`:
/// bearer tokens would cross the network in clear, and whoever reaches the
/// port may try them.
///
/// # Errors
/// `listen` and what is wrong with it.
pub fn parse_listen(listen: &str, allow_remote: bool) -> Result<Listen, ApiConfigError> {
    let text = listen.trim();
    if text.starts_with('/') {
        return Ok(Listen::Unix(PathBuf::from(text)));
    }
    let text = text.strip_prefix("unix:").map_or(text, str::trim);
    if text.starts_with('/') {
        return Ok(Listen::Unix(PathBuf::from(text)));
    }
    let text = text.strip_prefix("http://").unwrap_or(text);
    let addr: SocketAddr = text.parse().map_err(|_| {
        bad(
            "listen",
            format!("\"{listen}\" is neither an absolute socket path nor 127.0.0.1:PORT"),
        )
    })?;
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(bad(
            "listen",
            format!(
                "{addr} is reachable from other machines: tokens would cross the network in clear and anyone who reaches it may try them; listen on a unix socket or 127.0.0.1, put a TLS proxy in front, or set api.allow_remote = true to accept the risk"
            ),
        ));
    }
    Ok(Listen::Tcp(addr))
}

/// Parses `socket_mode` (`0660`): only user and group bits, never others.
///
/// # Errors
/// `socket_mode` and what is wrong with it.
pub fn parse_mode(text: &str) -> Result<u32, ApiConfigError> {
    let mode = u32::from_str_radix(text.trim().trim_start_matches("0o"), 8).map_err(|_| {
        bad(
            "socket_mode",
            format!("\"{text}\" is not an octal mode like 0660"),
        )
    })?;
    if mode & !0o770 != 0 {
        return Err(bad(
            "socket_mode",
            format!("{text} lets other users in (or sets special bits); use 0660 or 0600"),
        ));
    }
    if mode & 0o600 != 0o600 {
        return Err(bad(
            "socket_mode",
            format!("{text} must let berth's own user read and write (0600 at least)"),
        ));
    }
    Ok(mode)
}

/// A token's permissions, compiled.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The caller's name, for audit lines.
    pub name: String,
    /// See [`TokenConfig::can_inspect`].
    pub can_inspect: bool,
    /// See [`TokenConfig::can_update_image`].
    pub can_update_image: bool,
    /// The globs as written, for messages.
    pub allowed_images: Vec<String>,
    allowed: GlobSet,
    /// See [`TokenConfig::can_update_env`].
    pub can_update_env: bool,
    /// See [`TokenConfig::can_read_secrets`].
    pub can_read_secrets: bool,
    /// See [`TokenConfig::can_apply`].
    pub can_apply: bool,
}

impl Grant {
    /// Whether `image` (`repo/name:tag`) matches one of `allowed_images`.
    pub fn allows_image(&self, image: &str) -> bool {
        self.allowed.is_match(image)
    }
}

/// A token as berth keeps it: its SHA-256 and what it may do.
#[derive(Debug, Clone)]
pub struct Token {
    /// SHA-256 of the token.
    pub digest: [u8; 32],
    /// What it may do.
    pub grant: Grant,
}

/// The SHA-256 of a presented token.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The shortest token berth accepts: 16 bytes, so that guessing is out of
/// the question even without rate limiting.
pub const MIN_TOKEN_LEN: usize = 16;

impl ApiConfig {
    /// Checks everything but the token files' contents.
    ///
    /// # Errors
    /// The option (`api.tokens[1].sha256`) and what is wrong with it.
    pub fn check(&self) -> Result<(), ApiConfigError> {
        parse_listen(&self.listen, self.allow_remote)?;
        parse_mode(&self.socket_mode)?;
        if self.max_body_size == 0 {
            return Err(bad("max_body_size", "must be more than 0"));
        }
        if self.request_timeout.is_zero() {
            return Err(bad("request_timeout", "must be more than 0"));
        }
        if self.event_buffer == 0 {
            return Err(bad("event_buffer", "must be more than 0"));
        }
        for (i, t) in self.tokens.iter().enumerate() {
            let at = |field: &str| format!("tokens[{i}].{field}");
            if t.name.trim().is_empty() {
                return Err(bad(
                    at("name"),
                    "is required (it names the caller in audit lines)",
                ));
            }
            if self.tokens[..i].iter().any(|o| o.name == t.name) {
                return Err(bad(at("name"), format!("\"{}\" is used twice", t.name)));
            }
            match (&t.token_file, &t.sha256) {
                (Some(_), Some(_)) => {
                    return Err(bad(at("sha256"), "give token_file or sha256, not both"))
                }
                (None, None) => return Err(bad(at("token_file"), "give token_file or sha256")),
                (None, Some(h)) if parse_hex(h).is_none() => {
                    return Err(bad(
                        at("sha256"),
                        "must be 64 hex digits (sha256sum of the token)",
                    ))
                }
                _ => {}
            }
            for p in &t.allowed_images {
                if let Err(e) = Glob::new(p) {
                    return Err(bad(
                        at("allowed_images"),
                        format!("\"{p}\" is not a valid glob: {}", e.kind()),
                    ));
                }
            }
            if t.can_update_image && t.allowed_images.is_empty() {
                return Err(bad(
                    at("allowed_images"),
                    "can_update_image needs at least one pattern (\"*\" allows any image)",
                ));
            }
        }
        Ok(())
    }

    /// Reads the token files and compiles every grant.
    ///
    /// # Errors
    /// A token file that cannot be read, is readable by others, or holds a
    /// token shorter than [`MIN_TOKEN_LEN`]; the error names the entry,
    /// never the token.
    pub fn load_tokens(&self) -> Result<Vec<Token>, ApiConfigError> {
        self.check()?;
        let mut out = Vec::with_capacity(self.tokens.len());
        for (i, t) in self.tokens.iter().enumerate() {
            let field = format!("tokens[{i}].token_file");
            let digest = match (&t.token_file, &t.sha256) {
                (Some(path), _) => {
                    use std::os::unix::fs::PermissionsExt;
                    let meta = std::fs::metadata(path).map_err(|e| {
                        bad(
                            &field,
                            format!("cannot read {}: {}", path.display(), e.kind()),
                        )
                    })?;
                    if meta.permissions().mode() & 0o007 != 0 {
                        return Err(bad(
                            &field,
                            format!(
                                "{} is readable by other users; chmod 0600 it",
                                path.display()
                            ),
                        ));
                    }
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        bad(
                            &field,
                            format!("cannot read {}: {}", path.display(), e.kind()),
                        )
                    })?;
                    let token = text.lines().next().unwrap_or("").trim();
                    if token.len() < MIN_TOKEN_LEN {
                        return Err(bad(
                            &field,
                            format!(
                                "the token in {} is shorter than {MIN_TOKEN_LEN} characters",
                                path.display()
                            ),
                        ));
                    }
                    digest(token)
                }
                (None, Some(h)) => parse_hex(h)
                    .ok_or_else(|| bad(format!("tokens[{i}].sha256"), "must be 64 hex digits"))?,
                (None, None) => return Err(bad(field, "give token_file or sha256")),
            };
            let mut set = GlobSetBuilder::new();
            for p in &t.allowed_images {
                let glob = Glob::new(p).map_err(|e| {
                    bad(
                        format!("tokens[{i}].allowed_images"),
                        format!("\"{p}\" is not a valid glob: {}", e.kind()),
                    )
                })?;
                set.add(glob);
            }
            let allowed = set
                .build()
                .map_err(|e| bad(format!("tokens[{i}].allowed_images"), e.to_string()))?;
            out.push(Token {
                digest,
                grant: Grant {
                    name: t.name.clone(),
                    can_inspect: t.can_inspect,
                    can_update_image: t.can_update_image,
                    allowed_images: t.allowed_images.clone(),
                    allowed,
                    can_update_env: t.can_update_env,
                    can_read_secrets: t.can_read_secrets,
                    can_apply: t.can_apply,
                },
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn token(name: &str) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            sha256: Some(HASH.into()),
            ..Default::default()
        }
    }

    #[test]
    fn an_absolute_path_is_a_unix_socket() {
        assert_eq!(
            parse_listen("/run/berth/api.sock", false),
            Ok(Listen::Unix("/run/berth/api.sock".into()))
        );
    }

    #[test]
    fn a_loopback_address_is_tcp() {
        assert_eq!(
            parse_listen("127.0.0.1:8080", false),
            Ok(Listen::Tcp("127.0.0.1:8080".parse().unwrap()))
        );
    }

    #[test]
    fn a_remote_address_is_refused_with_the_reason() {
        let e = parse_listen("0.0.0.0:8080", false).unwrap_err();
        assert_eq!(e.option, "listen");
        assert!(
            e.problem
                .contains("tokens would cross the network in clear"),
            "{e}"
        );
    }

    #[test]
    fn a_remote_address_is_accepted_when_explicitly_allowed() {
        assert!(parse_listen("0.0.0.0:8080", true).is_ok());
    }

    #[test]
    fn a_relative_path_or_a_bare_word_is_refused() {
        assert!(parse_listen("api.sock", false).is_err());
    }

    #[test]
    fn a_socket_mode_open_to_others_is_refused() {
        assert!(parse_mode("0666").is_err());
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("0600"), Ok(0o600));
        assert!(parse_mode("0440").is_err());
        assert!(parse_mode("rw").is_err());
    }

    #[test]
    fn a_token_needs_a_name() {
        let c = ApiConfig {
            tokens: vec![token("")],
            ..Default::default()
        };
        assert_eq!(c.check().unwrap_err().option, "tokens[0].name");
    }

    #[test]
    fn two_tokens_with_one_name_are_refused() {
        let c = ApiConfig {
            tokens: vec![token("ui"), token("ui")],
            ..Default::default()
        };
        assert_eq!(c.check().unwrap_err().option, "tokens[1].name");
    }

    #[test]
    fn a_token_needs_a_file_or_a_hash_but_not_both() {
        let mut t = token("ui");
        t.sha256 = None;
        let c = ApiConfig {
            tokens: vec![t.clone()],
            ..Default::default()
        };
        assert_eq!(c.check().unwrap_err().option, "tokens[0].token_file");
        t.sha256 = Some(HASH.into());
        t.token_file = Some("/x".into());
        let c = ApiConfig {
            tokens: vec![t],
            ..Default::default()
        };
        assert_eq!(c.check().unwrap_err().option, "tokens[0].sha256");
    }

    #[test]
    fn a_hash_that_is_not_64_hex_digits_is_refused() {
        let mut t = token("ui");
        t.sha256 = Some("abc".into());
        let c = ApiConfig {
            tokens: vec![t],
            ..Default::default()
        };
        assert_eq!(c.check().unwrap_err().option, "tokens[0].sha256");
    }

    #[test]
    fn updating_images_needs_allowed_images() {
        let mut t = token("ui");
        t.can_update_image = true;
        let c = ApiConfig {
            tokens: vec![t],
            ..Default::default()
        };
        assert_eq!(c.check().unwrap_err().option, "tokens[0].allowed_images");
    }

    #[test]
    fn allowed_images_are_globs_over_the_whole_reference() {
        let mut t = token("ui");
        t.can_update_image = true;
        t.allowed_images = vec!["127.0.0.1:5000/app:*".into()];
        let c = ApiConfig {
            tokens: vec![t],
            ..Default::default()
        };
        let tokens = c.load_tokens().unwrap();
        assert!(tokens[0].grant.allows_image("127.0.0.1:5000/app:2"));
        assert!(!tokens[0].grant.allows_image("127.0.0.1:5000/other:2"));
    }

    #[test]
    fn a_token_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "a-long-enough-token-value\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut t = token("ui");
        t.sha256 = None;
        t.token_file = Some(path.clone());
        let c = ApiConfig {
            tokens: vec![t],
            ..Default::default()
        };
        let e = c.load_tokens().unwrap_err();
        assert!(e.problem.contains("readable by other users"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let tokens = c.load_tokens().unwrap();
        assert_eq!(tokens[0].digest, digest("a-long-enough-token-value"));
    }

    #[test]
    fn a_short_token_is_refused_without_showing_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "short1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut t = token("ui");
        t.sha256 = None;
        t.token_file = Some(path);
        let c = ApiConfig {
            tokens: vec![t],
            ..Default::default()
        };
        let e = c.load_tokens().unwrap_err().to_string();
        assert!(e.contains("shorter than 16"), "{e}");
        assert!(!e.contains("short1"), "{e}");
    }
}
