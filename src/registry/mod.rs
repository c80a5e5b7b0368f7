//! Registries: the one credential store that pulls, `berth check` and the
//! Registry HTTP API share, and the registry client behind a small trait.
//!
//! Credentials come from berth's `[[registries]]` first, then from what
//! `docker login` stored (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`, with its credential helpers), so a device that
//! already pulls with the docker CLI pulls with berth too. No secret is ever
//! in a `Debug` or `Display` of anything here.

pub mod client;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Docker Hub as the engine and `docker login` name it in `config.json`.
const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// One `[[registries]]` entry of berth's configuration.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// The registry as image references name it (`registry.example.com`,
    /// `127.0.0.1:5001`; `docker.io` for Docker Hub).
    pub host: String,
    /// User name for basic auth (and for the token exchange it leads to).
    pub username: Option<String>,
    /// File holding the password (first line). Like every secret file it
    /// may start with `${CREDENTIALS_DIRECTORY}/`.
    pub password_file: Option<PathBuf>,
    /// An identity (refresh) token, inline, instead of a password (prefer
    /// `identity_token_file`); hidden by `--print-config`.
    pub identity_token: Option<String>,
    /// File holding an identity (refresh) token, instead of a password.
    pub identity_token_file: Option<PathBuf>,
    /// CA bundle (PEM) the registry's certificate is verified against, for
    /// `berth check`'s own requests (the engine uses its own
    /// `/etc/docker/certs.d`).
    pub ca_file: Option<PathBuf>,
    /// Plain HTTP for `berth check`, as the engine's insecure registries
    /// (loopback registries are always spoken to in plain HTTP).
    pub insecure: bool,
}

impl fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only paths and names: the secrets are in the files.
        f.debug_struct("RegistryConfig")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field(
                "identity_token",
                &self
                    .identity_token
                    .as_ref()
                    .map(|_| crate::redact::REDACTED),
            )
            .field("identity_token_file", &self.identity_token_file)
            .field("ca_file", &self.ca_file)
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl RegistryConfig {
    /// Checks one entry; `at` is its place (`registries[0]`) for messages.
    ///
    /// # Errors
    /// The field and what is wrong with it.
    pub fn check(&self, at: &str) -> Result<(), String> {
        let host = self.host.trim();
        if host.is_empty() {
            return Err(format!(
                "{at}.host: must be set (the registry's host[:port])"
            ));
        }
        if host.contains("://") || host.contains('/') || host.contains('@') {
            return Err(format!(
                "{at}.host: \"{}\" must be a host[:port] as image references name it, \
                 without scheme or path",
                crate::redact::userinfo(host)
            ));
        }
        let tokens = usize::from(self.identity_token.is_some())
            + usize::from(self.identity_token_file.is_some());
        if tokens > 1 {
            return Err(format!(
                "{at}.identity_token: give identity_token or identity_token_file, not both"
            ));
        }
        if self.password_file.is_some() && tokens > 0 {
            return Err(format!(
                "{at}.password_file: set together with an identity token; give one"
            ));
        }
        if self.password_file.is_some() && self.username.is_none() {
            return Err(format!("{at}.password_file: needs username"));
        }
        if self.username.is_some() && self.password_file.is_none() && tokens == 0 {
            return Err(format!(
                "{at}.username: needs password_file (or an identity token)"
            ));
        }
        Ok(())
    }
}

/// A secret string whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::redact::REDACTED)
    }
}

/// Credentials for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// User name and password (basic auth, or the token service's login).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
    /// An identity (refresh) token, as `docker login` stores for some
    /// registries.
    IdentityToken(Secret),
}

/// Where a credential came from, for messages ("credentials from
/// [[registries]]"), never its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// berth's `[[registries]]`.
    Config,
    /// `docker login`'s `config.json` (or its helper).
    Docker,
}

/// Why credentials could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// A `[[registries]]` secret file could not be read.
    #[error("registry {host}: reading {}: {reason}", .path.display())]
    FileUnreadable {
        /// The registry.
        host: String,
        /// The file.
        path: PathBuf,
        /// What the system said.
        reason: String,
    },
    /// docker's stored login exists but cannot be used.
    #[error("registry {host}: docker's stored login cannot be used: {reason}")]
    DockerConfig {
        /// The registry.
        host: String,
        /// What went wrong (never the helper's output, which may hold a secret).
        reason: String,
    },
    /// The blocking lookup's task died.
    #[error("registry {host}: the credential lookup did not finish")]
    Lookup {
        /// The registry.
        host: String,
    },
}

/// The one credential store: `[[registries]]` first, then docker's. Cheap
/// to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    entries: Arc<Vec<RegistryConfig>>,
    docker: bool,
}

impl Credentials {
    /// A store over `entries`, falling back to docker's stored logins.
    pub fn new(entries: Vec<RegistryConfig>) -> Self {
        Self {
            entries: Arc::new(entries),
            docker: true,
        }
    }

    /// A store over `entries` alone, never reading docker's files: for
    /// tests that must not see the machine's logins.
    pub fn without_docker(entries: Vec<RegistryConfig>) -> Self {
        Self {
            entries: Arc::new(entries),
            docker: false,
        }
    }

    /// berth's entry for `host`, if any.
    pub fn entry(&self, host: &str) -> Option<&RegistryConfig> {
        self.entries.iter().find(|e| same_host(e.host.trim(), host))
    }

    /// The credential for `host`, or `None` for anonymous access. Reads
    /// files and may run a credential helper, so it runs on the blocking
    /// pool.
    ///
    /// # Errors
    /// When a configured secret file or docker's stored login cannot be
    /// used: better a clear refusal than an anonymous pull that fails
    /// with "unauthorized".
    pub async fn for_host(
        &self,
        host: &str,
    ) -> Result<Option<(Credential, Source)>, CredentialError> {
        let this = self.clone();
        let host_owned = host.to_string();
        tokio::task::spawn_blocking(move || this.lookup_blocking(&host_owned))
            .await
            .map_err(|_| CredentialError::Lookup {
                host: host.to_string(),
            })?
    }

    fn lookup_blocking(&self, host: &str) -> Result<Option<(Credential, Source)>, CredentialError> {
        if let Some(entry) = self.entry(host) {
            return read_entry(entry, host).map(|c| c.map(|c| (c, Source::Config)));
        }
        if !self.docker {
            return Ok(None);
        }
        docker_login(host).map(|c| c.map(|c| (c, Source::Docker)))
    }
}

fn same_host(a: &str, b: &str) -> bool {
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    a.eq_ignore_ascii_case(b) || (hub(a) && hub(b))
}

fn read_secret_file(host: &str, path: &std::path::Path) -> Result<Secret, CredentialError> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    let path = crate::agent::mqtt::expand_credentials(path, "password_file", dir.as_deref())
        .map_err(|e| CredentialError::FileUnreadable {
            host: host.to_string(),
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let text = std::fs::read_to_string(&path).map_err(|e| CredentialError::FileUnreadable {
        host: host.to_string(),
        path: path.clone(),
        reason: e.kind().to_string(),
    })?;
    let first = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if first.is_empty() {
        return Err(CredentialError::FileUnreadable {
            host: host.to_string(),
            path,
            reason: "the file is empty".into(),
        });
    }
    Ok(Secret::new(first))
}

fn read_entry(entry: &RegistryConfig, host: &str) -> Result<Option<Credential>, CredentialError> {
    if let Some(token) = &entry.identity_token {
        return Ok(Some(Credential::IdentityToken(Secret::new(token.clone()))));
    }
    if let Some(path) = &entry.identity_token_file {
        return read_secret_file(host, path).map(|t| Some(Credential::IdentityToken(t)));
    }
    match (&entry.username, &entry.password_file) {
        (Some(username), Some(path)) => read_secret_file(host, path).map(|password| {
            Some(Credential::Basic {
                username: username.clone(),
                password,
            })
        }),
        // An entry for TLS settings alone: anonymous, or docker's login.
        _ => Ok(None),
    }
}

/// docker's stored login for `host`, through `docker_credential` (which
/// reads `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` and runs
/// `credHelpers`/`credsStore` helpers).
fn docker_login(host: &str) -> Result<Option<Credential>, CredentialError> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    let key = if same_host(host, "docker.io") {
        DOCKER_HUB_AUTH_KEY
    } else {
        host
    };
    match docker_credential::get_credential(key) {
        Ok(DockerCredential::UsernamePassword(username, password)) => Ok(Some(Credential::Basic {
            username,
            password: Secret::new(password),
        })),
        Ok(DockerCredential::IdentityToken(token)) => {
            Ok(Some(Credential::IdentityToken(Secret::new(token))))
        }
        Err(E::NoCredentialConfigured | E::ConfigNotFound | E::ConfigReadError) => Ok(None),
        Err(E::HelperFailure { helper, .. }) => Err(CredentialError::DockerConfig {
            host: host.to_string(),
            reason: format!("credential helper docker-credential-{helper} failed"),
        }),
        Err(e) => Err(CredentialError::DockerConfig {
            host: host.to_string(),
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(host: &str, user: Option<&str>, file: Option<&std::path::Path>) -> RegistryConfig {
        RegistryConfig {
            host: host.into(),
            username: user.map(str::to_string),
            password_file: file.map(|p| p.to_path_buf()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_configured_entry_reads_its_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        let store = Credentials::without_docker(vec![entry("reg:5001", Some("u"), Some(&p))]);
        let (cred, source) = store.for_host("reg:5001").await.unwrap().unwrap();
        assert_eq!(source, Source::Config);
        assert_eq!(
            cred,
            Credential::Basic {
                username: "u".into(),
                password: Secret::new("s3cret")
            }
        );
        assert!(!format!("{cred:?}").contains("s3cret"));
        assert_eq!(store.for_host("other").await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_unreadable_password_file_is_an_error_naming_registry_and_file() {
        let store = Credentials::without_docker(vec![entry(
            "reg",
            Some("u"),
            Some(std::path::Path::new("/nonexistent/pw")),
        )]);
        let e = store.for_host("reg").await.unwrap_err().to_string();
        assert!(
            e.contains("registry reg") && e.contains("/nonexistent/pw"),
            "{e}"
        );
    }

    #[test]
    fn docker_hub_names_are_one_host() {
        assert!(same_host("docker.io", "index.docker.io"));
        assert!(!same_host("docker.io", "ghcr.io"));
    }

    #[test]
    fn entry_checks_name_the_field() {
        let e = entry("https://reg", None, None)
            .check("registries[0]")
            .unwrap_err();
        assert!(e.starts_with("registries[0].host:"), "{e}");
        let e = entry("reg", Some("u"), None)
            .check("registries[1]")
            .unwrap_err();
        assert!(e.starts_with("registries[1].username:"), "{e}");
        let e = entry("reg", None, Some(std::path::Path::new("/p")))
            .check("registries[0]")
            .unwrap_err();
        assert!(e.starts_with("registries[0].password_file:"), "{e}");
        assert_eq!(entry("reg", None, None).check("r"), Ok(()));
    }
}
