//! The Registry HTTP API v2, behind [`Registry`] so `berth check`'s
//! decisions are tested without a network. [`OciRegistry`] is the real
//! one, on the ORAS project's `oci-client` (bearer-token and basic auth,
//! TLS, plain HTTP for loopback and `insecure` registries).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use super::{Credential, Credentials};
use crate::spec::image::ImageRef;

/// How long `berth check` waits to connect and for one answer: a registry
/// that does not answer in this time is `unknown`, not a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What a registry said, for one request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The repository or the tag does not exist.
    #[error("{0} not found in its registry")]
    NotFound(String),
    /// The registry wants credentials, or refused the ones sent.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The registry could not be reached.
    #[error("registry unreachable: {0}")]
    Unreachable(String),
    /// Anything else (a malformed answer, a server error).
    #[error("{0}")]
    Other(String),
}

/// The parts of an image's config `berth check` compares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// Default env, by name.
    pub env: BTreeMap<String, String>,
    /// `EXPOSE`d ports (`80/tcp`).
    pub exposed_ports: BTreeSet<String>,
    /// `VOLUME`s.
    pub volumes: BTreeSet<String>,
    /// Default user.
    pub user: String,
    /// Default entrypoint.
    pub entrypoint: Vec<String>,
}

impl ImageConfig {
    /// Reads an image config blob (OCI or Docker: both keep these under
    /// `config` with the same capitalised keys); unknown keys are ignored.
    ///
    /// # Errors
    /// When the blob is not JSON of that shape.
    pub fn from_blob(json: &str) -> Result<Self, String> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Blob {
            config: Option<Inner>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default, rename_all = "PascalCase")]
        struct Inner {
            env: Option<Vec<String>>,
            exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
            volumes: Option<BTreeMap<String, serde_json::Value>>,
            user: Option<String>,
            entrypoint: Option<Vec<String>>,
        }
        let blob: Blob = serde_json::from_str(json).map_err(|e| format!("image config: {e}"))?;
        let inner = blob.config.unwrap_or_default();
        Ok(Self {
            env: inner
                .env
                .unwrap_or_default()
                .into_iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (kv, String::new()),
                })
                .collect(),
            exposed_ports: inner
                .exposed_ports
                .unwrap_or_default()
                .into_keys()
                .collect(),
            volumes: inner.volumes.unwrap_or_default().into_keys().collect(),
            user: inner.user.unwrap_or_default(),
            entrypoint: inner.entrypoint.unwrap_or_default(),
        })
    }
}

/// One tag's manifest, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The digest the engine records for a pull of it (the index's, for a
    /// multi-platform image).
    pub digest: String,
    /// Its config.
    pub config: ImageConfig,
}

/// What `berth check` asks a registry.
pub trait Registry: Send + Sync {
    /// Every tag of `image`'s repository.
    fn tags(
        &self,
        image: &ImageRef,
    ) -> impl Future<Output = Result<Vec<String>, RegistryError>> + Send;
    /// The manifest `image`'s tag (or digest) names, with its config.
    fn manifest(
        &self,
        image: &ImageRef,
    ) -> impl Future<Output = Result<Manifest, RegistryError>> + Send;
}

/// The real registries, one client per host (its protocol and CA differ),
/// with credentials from the shared store.
#[derive(Clone)]
pub struct OciRegistry {
    credentials: Credentials,
    clients: Arc<Mutex<HashMap<String, oci_client::Client>>>,
}

impl std::fmt::Debug for OciRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciRegistry").finish_non_exhaustive()
    }
}

/// Whether the engine treats `host` as insecure by default (loopback):
/// Docker allows plain HTTP to 127.0.0.0/8 and `localhost`.
pub fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl OciRegistry {
    /// Registries as `credentials` describes them.
    pub fn new(credentials: Credentials) -> Self {
        // reqwest is built without a crypto provider of its own, so TLS
        // uses ring like the rest of berth (rustls refuses to choose when
        // two are compiled in). Installing fails only when one already
        // is: that one serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            credentials,
            clients: Arc::default(),
        }
    }

    async fn client(&self, host: &str) -> Result<oci_client::Client, RegistryError> {
        if let Some(c) = self.cached(host)? {
            return Ok(c);
        }
        let entry = self.credentials.entry(host);
        let insecure = entry.is_some_and(|e| e.insecure) || is_loopback(host);
        let mut config = oci_client::client::ClientConfig {
            protocol: if insecure {
                oci_client::client::ClientProtocol::Http
            } else {
                oci_client::client::ClientProtocol::Https
            },
            connect_timeout: Some(REQUEST_TIMEOUT),
            read_timeout: Some(REQUEST_TIMEOUT),
            ..Default::default()
        };
        if let Some(path) = entry.and_then(|e| e.ca_file.clone()) {
            let data = tokio::fs::read(&path).await.map_err(|e| {
                RegistryError::Other(format!("reading ca_file {}: {}", path.display(), e.kind()))
            })?;
            config
                .extra_root_certificates
                .push(oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data,
                });
        }
        let client = oci_client::Client::try_from(config).map_err(|e| {
            RegistryError::Other(format!("registry client for {host}: {}", chain(&e)))
        })?;
        // Two first requests to one host may both build a client; the
        // second simply replaces the first, and both work.
        self.clients
            .lock()
            .map_err(|_| RegistryError::Other("registry client cache poisoned".into()))?
            .insert(host.to_string(), client.clone());
        Ok(client)
    }

    fn cached(&self, host: &str) -> Result<Option<oci_client::Client>, RegistryError> {
        Ok(self
            .clients
            .lock()
            .map_err(|_| RegistryError::Other("registry client cache poisoned".into()))?
            .get(host)
            .cloned())
    }

    async fn auth(&self, host: &str) -> Result<oci_client::secrets::RegistryAuth, RegistryError> {
        use oci_client::secrets::RegistryAuth;
        match self.credentials.for_host(host).await {
            Ok(None) => Ok(RegistryAuth::Anonymous),
            Ok(Some((Credential::Basic { username, password }, _))) => {
                Ok(RegistryAuth::Basic(username, password.expose().to_string()))
            }
            // An identity token is a refresh token; registries that take
            // one in basic auth (the convention `docker login` follows)
            // take it with the user `<token>`.
            Ok(Some((Credential::IdentityToken(token), _))) => Ok(RegistryAuth::Basic(
                "<token>".into(),
                token.expose().to_string(),
            )),
            Err(e) => Err(RegistryError::Other(e.to_string())),
        }
    }
}

fn reference(image: &ImageRef) -> oci_client::Reference {
    match (&image.tag, &image.digest) {
        (_, Some(d)) => oci_client::Reference::with_digest(
            image.registry.clone(),
            image.repository.clone(),
            d.clone(),
        ),
        (t, None) => oci_client::Reference::with_tag(
            image.registry.clone(),
            image.repository.clone(),
            t.clone().unwrap_or_else(|| "latest".into()),
        ),
    }
}

/// The error and its causes on one line (a refused connection says why
/// only in its source), passwords in URLs hidden.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    crate::redact::default_rule().text(&text).into_owned()
}

fn map_error(e: oci_client::errors::OciDistributionError, what: &ImageRef) -> RegistryError {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode};
    match &e {
        E::UnauthorizedError { .. } => {
            RegistryError::Unauthorized(format!("registry {} refused the request", what.registry))
        }
        E::AuthenticationFailure(m) => RegistryError::Unauthorized(format!(
            "registry {}: {}",
            what.registry,
            crate::redact::default_rule().text(m)
        )),
        E::ImageManifestNotFoundError(_) => RegistryError::NotFound(what.to_string()),
        E::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                )
            }) {
                RegistryError::NotFound(what.to_string())
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                RegistryError::Unauthorized(format!(
                    "registry {} refused the request",
                    what.registry
                ))
            } else {
                RegistryError::Other(chain(&e))
            }
        }
        E::ServerError { code: 404, .. } => RegistryError::NotFound(what.to_string()),
        E::ServerError {
            code: 401 | 403, ..
        } => RegistryError::Unauthorized(format!("registry {} refused the request", what.registry)),
        E::RequestError(r) if r.is_connect() || r.is_timeout() => {
            RegistryError::Unreachable(format!("{}: {}", what.registry, chain(&e)))
        }
        _ => RegistryError::Other(chain(&e)),
    }
}

impl Registry for OciRegistry {
    async fn tags(&self, image: &ImageRef) -> Result<Vec<String>, RegistryError> {
        let client = self.client(&image.registry).await?;
        let auth = self.auth(&image.registry).await?;
        let r = reference(image);
        let mut tags = Vec::new();
        let mut last: Option<String> = None;
        // Paged, bounded: a registry that pages forever stops here.
        for _ in 0..100 {
            let page = client
                .list_tags(&r, &auth, Some(1000), last.as_deref())
                .await
                .map_err(|e| map_error(e, image))?;
            let n = page.tags.len();
            last = page.tags.last().cloned();
            tags.extend(page.tags);
            if n < 1000 {
                break;
            }
        }
        Ok(tags)
    }

    async fn manifest(&self, image: &ImageRef) -> Result<Manifest, RegistryError> {
        let client = self.client(&image.registry).await?;
        let auth = self.auth(&image.registry).await?;
        let r = reference(image);
        let (_, digest, config, list_digest) = client
            .pull_manifest_and_config_and_list_digest(&r, &auth)
            .await
            .map_err(|e| map_error(e, image))?;
        Ok(Manifest {
            digest: list_digest.unwrap_or(digest),
            config: ImageConfig::from_blob(&config).map_err(RegistryError::Other)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_insecure_by_default() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.com"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }

    #[test]
    fn an_image_config_blob_gives_env_ports_volumes_user_and_entrypoint() {
        let c = ImageConfig::from_blob(
            r#"{"architecture":"amd64","config":{"Env":["A=1","B"],"ExposedPorts":{"80/tcp":{}},
               "Volumes":{"/data":{}},"User":"app","Entrypoint":["/run"]}}"#,
        )
        .unwrap();
        assert_eq!(c.env.get("A").map(String::as_str), Some("1"));
        assert_eq!(c.env.get("B").map(String::as_str), Some(""));
        assert!(c.exposed_ports.contains("80/tcp") && c.volumes.contains("/data"));
        assert_eq!((c.user.as_str(), c.entrypoint.len()), ("app", 1));
        assert_eq!(
            ImageConfig::from_blob("{}").unwrap(),
            ImageConfig::default()
        );
    }
}
