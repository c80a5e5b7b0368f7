//! The bollard implementation of [`Runtime`]: the only place that speaks the
//! Docker Engine API. It translates berth's [`CreateRequest`] into the
//! engine's create body and the engine's inspect output back into
//! [`ContainerDetails`]; `observe` then normalises those.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    ContainerUpdateBody, DeviceMapping as BollardDevice, EndpointSettings, EventMessageTypeEnum,
    HealthConfig as BollardHealth, HealthStatusEnum, HostConfig, HostConfigLogConfig, ImageInspect,
    NetworkConnectRequest, NetworkingConfig, PortBinding as BollardPortBinding,
    RestartPolicy as BollardRestart, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::{StreamExt, TryStreamExt};

use super::cache::{self, engine_time, InspectCache, Summary, Window, TRUNCATED_AT};
use super::{
    describe_missing, ContainerDetails, ContainerState, CreateRequest, EngineInfo, Event,
    EventStream, ExecOutput, Health, ImageDetails, Missing, PullProgress, RawHealthcheck, RawMount,
    RawPortBinding, Result, Runtime, RuntimeError, Status,
};
use crate::spec::model::{ContainerConfig, HealthTest, NetworkMode, RestartPolicy, Swap};

/// How many containers are inspected at once when listing.
const INSPECT_CONCURRENCY: usize = 8;

/// How long a list waits for the engine's event log before it inspects
/// every container instead.
const EVENTS_WAIT: Duration = Duration::from_secs(2);

/// The local clock in nanoseconds since the epoch.
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The cache stays usable if a holder panicked: it is replaced whole.
fn lock(cache: &Mutex<InspectCache>) -> std::sync::MutexGuard<'_, InspectCache> {
    cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the list endpoint shows of a container, in berth's terms.
fn summary(s: ContainerSummary) -> Option<Summary> {
    Some(Summary {
        id: s.id?,
        name: cache::primary_name(&s.names.unwrap_or_default()),
        image_id: s.image_id.unwrap_or_default(),
        labels: s.labels.unwrap_or_default().into_iter().collect(),
        status: Status::parse(&s.state.map(|st| st.to_string()).unwrap_or_default()),
    })
}

/// How much longer than its own stop timeout a stop may take before the
/// client gives up on the engine's answer (the engine kills after the stop
/// timeout, then waits for the process to go).
pub const STOP_MARGIN: Duration = Duration::from_secs(30);

/// A client timeout that never fires (bollard skips a deadline it cannot
/// represent).
const NO_TIMEOUT: Duration = Duration::from_secs(u64::MAX);

/// Where the engine is and how to reach it, as the docker CLI decides it
/// from its environment ([`endpoint`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// As written: a unix socket, plain `tcp://` or `http://`, `ssh://`.
    Plain(String),
    /// HTTPS, trusting only `ca.pem` in `cert_dir` (with `cert.pem` and
    /// `key.pem` there as the client certificate when both exist).
    Tls {
        /// `https://host:port`.
        url: String,
        /// `DOCKER_CERT_PATH`, else `DOCKER_CONFIG`, else `~/.docker`.
        cert_dir: PathBuf,
    },
}

/// Drops all but the last [`super::OUTPUT_LIMIT`] bytes of `out`.
fn keep_tail(out: &mut String) {
    if out.len() > super::OUTPUT_LIMIT {
        let start = out.len() - super::tail(out, super::OUTPUT_LIMIT).len();
        out.drain(..start);
    }
}

/// The engine's default socket.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// bollard's request timeout, in seconds, for the TLS client berth builds.
const TLS_CLIENT_TIMEOUT: u64 = 120;

/// bollard's request timeout, in seconds, over a unix socket (its default).
const UNIX_CLIENT_TIMEOUT: u64 = 120;

/// The API version to speak to the engine on the unix socket `path`: the
/// engine's own (the `Api-Version` header of its `/_ping`), or bollard's
/// when that is older. bollard's `negotiate_version` asks `/version`
/// instead, which has the engine ask containerd for its version too: 9 to
/// 60 ms here against half a millisecond, the largest single cost of a
/// no-op `berth apply` (issue 25). `None` when the engine does not answer
/// so, and berth negotiates the usual way (whose error then says why).
pub async fn ping_api_version(path: &str) -> Option<bollard::ClientVersion> {
    use http_body_util::Empty;
    use hyper::body::Bytes;

    let stream = tokio::net::UnixStream::connect(path).await.ok()?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    let driven = tokio::spawn(connection);
    let request = hyper::Request::get("/_ping")
        .header(hyper::header::HOST, "docker")
        .body(Empty::<Bytes>::new())
        .ok()?;
    let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
        .await
        .ok()?
        .ok()?;
    driven.abort();
    let header = response.headers().get("api-version")?.to_str().ok()?;
    let (major, minor) = header.split_once('.')?;
    let engine = bollard::ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    };
    Some(if engine < *bollard::API_DEFAULT_VERSION {
        engine
    } else {
        *bollard::API_DEFAULT_VERSION
    })
}

/// Decides the endpoint the way the docker CLI does (`cli/flags/options.go`):
/// `host`, else a non-empty `DOCKER_HOST`, else the local socket; TLS
/// verification is on when `DOCKER_TLS_VERIFY` is non-empty, whatever it
/// says (`0` and `false` too, like the CLI), and then `tcp://` is HTTPS.
/// `https://` is always verified TLS. The certificates are in
/// `DOCKER_CERT_PATH`, else the CLI's configuration directory
/// (`DOCKER_CONFIG`, else `$HOME/.docker`). `env` looks a variable up, so
/// the decision is testable without touching the process's environment.
///
/// # Errors
/// TLS is asked for and no certificate directory can be named (no
/// `DOCKER_CERT_PATH`, `DOCKER_CONFIG` or `HOME`).
pub fn endpoint(
    host: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> std::result::Result<Endpoint, String> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    let host = host
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .or_else(|| set("DOCKER_HOST"))
        .unwrap_or_else(|| DEFAULT_HOST.to_string());
    let verify = set("DOCKER_TLS_VERIFY").is_some();
    let rest = match (host.split_once("://"), verify) {
        (Some(("tcp", rest)), true) | (Some(("https", rest)), _) => rest.to_string(),
        _ => return Ok(Endpoint::Plain(host)),
    };
    let cert_dir = set("DOCKER_CERT_PATH")
        .map(PathBuf::from)
        .or_else(|| set("DOCKER_CONFIG").map(PathBuf::from))
        .or_else(|| set("HOME").map(|h| Path::new(&h).join(".docker")))
        .ok_or_else(|| {
            "DOCKER_TLS_VERIFY is set but no certificate directory is: \
             set DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem)"
                .to_string()
        })?;
    Ok(Endpoint::Tls {
        url: format!("https://{rest}"),
        cert_dir,
    })
}

/// A client for `url` over TLS that trusts `ca.pem` in `cert_dir` and
/// nothing else: the docker CLI's "trust certs signed only by this CA", so
/// an engine's certificate from any public CA is refused. `cert.pem` and
/// `key.pem` are the client certificate when both exist; one without the
/// other is an error rather than a silent connection without it.
fn connect_tls(url: &str, cert_dir: &Path) -> std::result::Result<Docker, String> {
    use bollard::BollardRequest;
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::Arc;

    let file = |name: &str| cert_dir.join(name);
    let certs = |path: &Path| -> std::result::Result<Vec<CertificateDer<'static>>, String> {
        CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let ca = file("ca.pem");
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(&ca)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate in it", ca.display()));
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    let (cert, key) = (file("cert.pem"), file("key.pem"));
    let config = match (cert.exists(), key.exists()) {
        (true, true) => {
            let key_der = PrivateKeyDer::from_pem_file(&key)
                .map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(certs(&cert)?, key_der)
                .map_err(|e| format!("{}: {e}", cert.display()))?
        }
        (false, false) => builder.with_no_client_auth(),
        (true, false) => return Err(format!("{} has no {}", cert.display(), key.display())),
        (false, true) => return Err(format!("{} has no {}", key.display(), cert.display())),
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let client = Arc::new(
        Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(https),
    );
    Docker::connect_with_custom_transport(
        move |request: BollardRequest| {
            let client = Arc::clone(&client);
            async move { client.request(request).await.map_err(BollardError::from) }
        },
        Some(url),
        TLS_CLIENT_TIMEOUT,
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(|e| e.to_string())
}

/// An error and its causes, each once: hyper's "client error (Connect)"
/// alone would hide why a connection failed (a TLS certificate refused,
/// say), which its sources say.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = cause.source();
    }
    text
}

/// A connected Docker engine.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
    endpoint: String,
    /// Handed to the engine with every pull and registry look-up: the
    /// engine itself knows no `docker login`, only what the client sends.
    credentials: crate::registry::Credentials,
    /// The last list's inspects, reused while the event log says nothing
    /// happened to them (see [`super::cache`]); shared by clones.
    cache: Arc<Mutex<InspectCache>>,
    /// Where the cache is kept between runs (the CLI's state directory);
    /// shared by clones, set once.
    cache_file: Arc<OnceLock<(PathBuf, crate::redact::Redactor)>>,
    /// Container inspects made, for tests and debug logs.
    inspects: Arc<AtomicU64>,
}

impl DockerRuntime {
    /// Connects the way the docker CLI does: `host` (from `--docker-host`), else
    /// `DOCKER_HOST`, else the local unix socket; with `DOCKER_TLS_VERIFY`
    /// set to anything non-empty, `tcp://` is HTTPS verified against
    /// `$DOCKER_CERT_PATH/ca.pem` alone, with the client certificate
    /// `cert.pem`/`key.pem` there when both exist (see [`endpoint`]).
    /// The API version is negotiated, so both Debian's engine (API 1.41) and
    /// current engines work: over a unix socket from the engine's `/_ping`,
    /// elsewhere from its `/version`.
    ///
    /// # Errors
    /// [`RuntimeError::Unavailable`] when the endpoint is malformed, its TLS
    /// files cannot be used, or it does not answer.
    pub async fn connect(host: Option<&str>) -> Result<Self> {
        let env = |name: &str| std::env::var(name).ok();
        let target = endpoint(host, env);
        let url = match &target {
            Ok(Endpoint::Plain(url) | Endpoint::Tls { url, .. }) => url.clone(),
            Err(_) => host
                .map(str::to_string)
                .or_else(|| env("DOCKER_HOST"))
                .unwrap_or_default(),
        };
        let unavailable = |message: String| RuntimeError::Unavailable {
            endpoint: crate::redact::userinfo(&url).into_owned(),
            message: words(message),
        };
        let pinged = match &target {
            Ok(Endpoint::Plain(url)) => match url.strip_prefix("unix://") {
                Some(path) => ping_api_version(path).await,
                None => None,
            },
            _ => None,
        };
        let docker = match (target.map_err(&unavailable)?, pinged) {
            (Endpoint::Plain(url), Some(version)) => {
                Docker::connect_with_unix(&url, UNIX_CLIENT_TIMEOUT, &version)
                    .map_err(|e| unavailable(e.to_string()))?
            }
            (Endpoint::Plain(url), None) => Docker::connect_with_host(&url)
                .map_err(|e| unavailable(e.to_string()))?
                .negotiate_version()
                .await
                .map_err(|e| unavailable(with_causes(&e)))?,
            (Endpoint::Tls { url, cert_dir }, _) => connect_tls(&url, &cert_dir)
                .map_err(unavailable)?
                .negotiate_version()
                .await
                .map_err(|e| unavailable(with_causes(&e)))?,
        };
        Ok(Self::from_client(
            docker,
            url,
            crate::registry::Credentials::new(Vec::new()),
        ))
    }

    /// A runtime over a client, with an empty inspect cache.
    fn from_client(
        docker: Docker,
        endpoint: String,
        credentials: crate::registry::Credentials,
    ) -> Self {
        Self {
            docker,
            cache: Arc::new(Mutex::new(InspectCache::new(&endpoint))),
            endpoint,
            credentials,
            cache_file: Arc::new(OnceLock::new()),
            inspects: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Keeps the inspect cache in `path` from now on, and takes up the one
    /// stored there when this runtime has none yet, so a process that lives
    /// for one command (`berth apply`) reuses the previous one's inspects.
    /// A missing or unusable file just starts empty. Called once the state
    /// directory is berth's (claimed): a refused document writes nothing.
    /// Only the first call of a runtime and its clones counts. Containers
    /// with an env variable `redactor` calls secret are never written to
    /// the file (they are inspected at every run): the persisted document
    /// stays the one file with secrets in it.
    pub async fn keep_inspect_cache_in(&self, path: PathBuf, redactor: crate::redact::Redactor) {
        if self.cache_file.get().is_some() {
            return;
        }
        if let Ok(text) = tokio::fs::read_to_string(&path).await {
            let stored = InspectCache::from_json(&text, &self.endpoint);
            let mut cache = lock(&self.cache);
            if cache.is_empty() {
                *cache = stored;
            }
        }
        let _ = self.cache_file.set((path, redactor));
    }

    /// How many container inspects this runtime (and its clones) made.
    pub fn inspects_made(&self) -> u64 {
        self.inspects.load(Ordering::Relaxed)
    }

    /// What the engine's event log holds from `since_ns` to `until_ns`;
    /// `None` when it cannot be read in [`EVENTS_WAIT`]. The query returns
    /// only once the engine's clock has passed `until_ns`.
    async fn event_window(&self, since_ns: i64, until_ns: i64) -> Option<Window> {
        let since = engine_time(since_ns);
        let until = engine_time(until_ns);
        let options = EventsOptionsBuilder::default()
            .since(&since)
            .until(&until)
            .build();
        let read = self.docker.events(Some(options)).try_fold(
            (0usize, HashSet::new()),
            |(count, mut touched), message| async move {
                let actor = message.actor.unwrap_or_default();
                match message.typ {
                    Some(EventMessageTypeEnum::CONTAINER)
                        if message.action.as_deref().is_none_or(cache::touches) =>
                    {
                        touched.extend(actor.id);
                    }
                    Some(EventMessageTypeEnum::NETWORK) => {
                        touched.extend(actor.attributes.unwrap_or_default().remove("container"));
                    }
                    _ => {}
                }
                Ok((count + 1, touched))
            },
        );
        match tokio::time::timeout(EVENTS_WAIT, read).await {
            Ok(Ok((count, touched))) => Some(Window {
                complete: count < TRUNCATED_AT,
                touched,
            }),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot read the engine's events; inspecting every container");
                None
            }
            Err(_) => {
                tracing::debug!(
                    "the engine's events did not come in time; inspecting every container"
                );
                None
            }
        }
    }

    /// Stores the cache where [`Self::keep_inspect_cache_in`] said,
    /// atomically (another berth may read it at the same time).
    async fn save_cache(&self, text: String) {
        let Some((path, _)) = self.cache_file.get() else {
            return;
        };
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        // It holds what inspect shows, environment values included: the
        // state directory's file mode, readable by its owner alone.
        let write = async {
            let mut file = tokio::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(crate::journal::FILE_MODE)
                .open(&tmp)
                .await?;
            tokio::io::AsyncWriteExt::write_all(&mut file, text.as_bytes()).await?;
            file.sync_data().await?;
            tokio::fs::rename(&tmp, path).await
        };
        let saved = write.await;
        if let Err(e) = saved {
            let _ = tokio::fs::remove_file(&tmp).await;
            tracing::debug!(path = %path.display(), error = %e, "cannot store the inspect cache");
        }
    }

    /// Uses `credentials` (berth's `[[registries]]` and docker's stored
    /// logins) for pulls and registry look-ups instead of docker's alone.
    pub fn with_credentials(mut self, credentials: crate::registry::Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// The engine's form of the credentials for `reference`'s registry, or
    /// `None` for an anonymous pull.
    async fn engine_credentials(
        &self,
        reference: &str,
    ) -> Result<Option<bollard::auth::DockerCredentials>> {
        let Ok(image) = crate::spec::image::ImageRef::parse(reference) else {
            return Ok(None);
        };
        let found = self
            .credentials
            .for_host(&image.registry)
            .await
            .map_err(|e| RuntimeError::Unauthorized {
                registry: image.registry.clone(),
                message: words(e.to_string()),
            })?;
        Ok(found.map(|(credential, _)| {
            let mut c = bollard::auth::DockerCredentials {
                serveraddress: Some(image.registry.clone()),
                ..Default::default()
            };
            match credential {
                crate::registry::Credential::Basic { username, password } => {
                    c.username = Some(username);
                    c.password = Some(password.expose().to_string());
                }
                crate::registry::Credential::IdentityToken(token) => {
                    c.identitytoken = Some(token.expose().to_string());
                }
            }
            c
        }))
    }

    /// Sets the client's timeout for one request (bollard's default is
    /// 120 s). It bounds the wait for the engine's answer to every call
    /// except `stop` (its own timeout plus [`STOP_MARGIN`], when longer),
    /// `pull` (none: the caller bounds a pull with its pull timeout) and
    /// the event stream (bounded until the engine answers, which it does at
    /// once, never while events flow). bollard counts whole seconds.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.docker = self.docker.with_timeout(timeout);
        self
    }

    /// The client's timeout for one request.
    pub fn request_timeout(&self) -> Duration {
        self.docker.timeout()
    }

    /// The client for a `stop` that may take `timeout` before the engine kills.
    fn for_stop(&self, timeout: Duration) -> Docker {
        let needed = timeout.saturating_add(STOP_MARGIN);
        self.docker
            .clone()
            .with_timeout(needed.max(self.docker.timeout()))
    }

    /// Maps a pull's error: the engine reports a tag or repository the
    /// registry does not have as 404 (`manifest for <ref> not found:
    /// manifest unknown: …`), or as 500 when the registry's answer carried no
    /// error document; both say the image is missing.
    fn pull_error(&self, e: BollardError, reference: &str) -> RuntimeError {
        if let BollardError::DockerResponseServerError { ref message, .. } = e {
            if let Some(e) = unauthorized(message, reference, false) {
                return e;
            }
        }
        match e {
            BollardError::DockerResponseServerError { ref message, .. }
                if pull_says_missing(message) =>
            {
                RuntimeError::not_found(Missing::Image, reference)
            }
            e => image_missing(self.map_err(Missing::Image, reference)(e), reference),
        }
    }

    /// Maps a bollard error. A 404 says what was missing from the engine's
    /// message when it can be read from it, else `kind` and `what` (what the
    /// call was about) stand in.
    fn map_err(&self, kind: Missing, what: &str) -> impl Fn(BollardError) -> RuntimeError + '_ {
        let what = what.to_string();
        move |e| match e {
            BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            } => {
                let message = words(message);
                let (kind, found) = missing_from_message(&message).unwrap_or((kind, String::new()));
                let what = if found.is_empty() {
                    what.clone()
                } else {
                    found
                };
                RuntimeError::NotFound { kind, what }
            }
            BollardError::DockerResponseServerError {
                status_code: 409,
                message,
            } => RuntimeError::Conflict {
                message: words(message),
            },
            BollardError::DockerResponseServerError {
                status_code,
                message,
            } => RuntimeError::Refused {
                status: status_code,
                message: words(message),
            },
            BollardError::SocketNotFoundError(_)
            | BollardError::HyperResponseError { .. }
            | BollardError::RequestTimeoutError => RuntimeError::Unavailable {
                endpoint: self.endpoint.clone(),
                message: words(e.to_string()),
            },
            other => {
                RuntimeError::Other(words(format!("{}: {other}", describe_missing(kind, &what))))
            }
        }
    }
}

#[cfg(test)]
impl DockerRuntime {
    /// [`DockerRuntime::map_err`] without a connection.
    fn map_err_for_test(e: BollardError) -> RuntimeError {
        let rt = Self::from_client(
            Docker::connect_with_http("http://127.0.0.1:9", 1, bollard::API_DEFAULT_VERSION)
                .expect("a client needs no connection"),
            "test".into(),
            crate::registry::Credentials::default(),
        );
        let mapped = rt.map_err(Missing::Container, "c")(e);
        mapped
    }
}

/// The engine's words as berth may repeat them: they can quote a command
/// line (`exec: "psql postgres://u:pw@db"`), an env entry or a request
/// body, and they end up in feedback, logs and on the terminal.
fn words(message: String) -> String {
    match crate::redact::default_rule().text(&message) {
        std::borrow::Cow::Borrowed(_) => message,
        std::borrow::Cow::Owned(redacted) => redacted,
    }
}

/// Reads what was missing from the engine's 404 message (API 1.41 wording,
/// checked against Docker 20.10):
///
/// - `No such container: <x>` (inspect, start, stop, rename, remove, update,
///   connect; kill prefixes `Cannot kill container: <x>: `; start of a
///   container whose `container:<x>` network target is gone names the target)
/// - `No such image: <ref>` (create), `no such image: <ref>: No such image: <ref>`
/// - `network <x> not found` (start with a missing user network; create and
///   connect of a stopped container accept it), `No such network: <x>`
/// - `get <x>: no such volume`
/// - `manifest for <ref> not found: manifest unknown: manifest unknown` (pull
///   of a missing tag or repository), `manifest unknown: manifest unknown`
///   (registry digest): an image, its name left to the caller (empty).
pub(crate) fn missing_from_message(message: &str) -> Option<(Missing, String)> {
    let lower = message.to_ascii_lowercase();
    let after = |needle: &str| {
        lower
            .rfind(needle)
            .map(|i| message[i + needle.len()..].trim().to_string())
    };
    if let Some(what) = after("no such container: ") {
        return Some((Missing::Container, what));
    }
    if let Some(what) = after("no such image: ") {
        return Some((Missing::Image, what));
    }
    if let Some(what) = after("no such network: ") {
        return Some((Missing::Network, what));
    }
    if let Some(name) = message
        .strip_prefix("network ")
        .and_then(|rest| rest.strip_suffix(" not found"))
    {
        return Some((Missing::Network, name.to_string()));
    }
    if lower.contains("no such volume") {
        let what = after("no such volume: ").unwrap_or_else(|| {
            message
                .strip_prefix("get ")
                .and_then(|rest| rest.split_once(": "))
                .map(|(name, _)| name.to_string())
                .unwrap_or_default()
        });
        return Some((Missing::Volume, what));
    }
    if lower.starts_with("manifest for ") || lower.contains("manifest unknown") {
        return Some((Missing::Image, String::new()));
    }
    None
}

/// The engine's words for a registry that wants credentials or refused
/// them (Docker 20.10: `no basic auth credentials`, `unauthorized:
/// authentication required`, `denied: requested access to the resource is
/// denied`), as [`RuntimeError::Unauthorized`] naming the registry and
/// where credentials come from. `sent` says whether berth sent any.
fn unauthorized(message: &str, reference: &str, sent: bool) -> Option<RuntimeError> {
    let lower = message.to_ascii_lowercase();
    let problem = if lower.contains("no basic auth credentials") {
        "no basic auth credentials"
    } else if lower.contains("unauthorized") || lower.contains("authentication required") {
        "unauthorized"
    } else if lower.contains("denied") {
        "access denied"
    } else {
        return None;
    };
    let registry = crate::spec::image::ImageRef::parse(reference)
        .map(|i| i.registry)
        .unwrap_or_else(|_| reference.to_string());
    let hint = if sent {
        "the credentials berth sent were refused (check [[registries]] or docker login)"
    } else {
        "it needs a login: run docker login, or add [[registries]] to berth's configuration"
    };
    Some(RuntimeError::Unauthorized {
        message: format!("{problem}; {hint}"),
        registry,
    })
}

/// Whether an error a pull reports inside its stream says the image is not
/// there.
fn pull_says_missing(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("manifest unknown")
        || lower.contains("not found")
        || lower.contains("repository does not exist")
}

impl Runtime for DockerRuntime {
    async fn info(&self) -> Result<EngineInfo> {
        let v = self
            .docker
            .version()
            .await
            .map_err(self.map_err(Missing::Other, "engine"))?;
        Ok(EngineInfo {
            version: v.version.unwrap_or_default(),
            api_version: self.docker.client_version().to_string(),
        })
    }

    async fn ping(&self) -> Result<()> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(self.map_err(Missing::Other, "engine"))
    }

    async fn list(&self) -> Result<Vec<ContainerDetails>> {
        // The order matters for the cache's soundness: see `InspectCache`.
        let until_ns = now_ns();
        let options = ListContainersOptionsBuilder::default().all(true).build();
        let listed: Vec<Summary> = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(self.map_err(Missing::Other, "containers"))?
            .into_iter()
            .filter_map(summary)
            .collect();
        // With nothing cached the window is empty, but still waited for:
        // what is inspected now is kept for the next list.
        let since_ns = lock(&self.cache).since_ns().unwrap_or(until_ns);
        let window = self.event_window(since_ns, until_ns).await;
        let reuse = lock(&self.cache).reuse(&listed, window.as_ref());
        let reused = reuse.cached.len();
        let inspected: Vec<Option<ContainerDetails>> = futures_util::stream::iter(reuse.inspect)
            .map(|id| async move { self.inspect(&id).await })
            .buffered(INSPECT_CONCURRENCY)
            .try_collect()
            .await?;
        // A container removed between list and inspect is simply gone.
        let mut by_id: HashMap<String, ContainerDetails> = reuse
            .cached
            .into_iter()
            .chain(inspected.into_iter().flatten())
            .map(|d| (d.id.clone(), d))
            .collect();
        let details: Vec<ContainerDetails> =
            listed.iter().filter_map(|s| by_id.remove(&s.id)).collect();
        tracing::debug!(
            containers = details.len(),
            reused,
            "listed the engine's containers"
        );
        let stored = {
            let mut cache = lock(&self.cache);
            match window {
                // Only inspects made after the engine passed `until` may be kept.
                Some(_) => cache.store(&details, until_ns),
                None => *cache = InspectCache::new(&self.endpoint),
            }
            self.cache_file
                .get()
                .and_then(|(_, redactor)| cache.to_json_without(|k| redactor.is_secret(k)).ok())
        };
        if let Some(text) = stored {
            self.save_cache(text).await;
        }
        Ok(details)
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerDetails>> {
        self.inspects.fetch_add(1, Ordering::Relaxed);
        match self.docker.inspect_container(id, None).await {
            Ok(c) => Ok(Some(details(c))),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.map_err(Missing::Container, id)(e)),
        }
    }

    async fn image(&self, reference: &str) -> Result<Option<ImageDetails>> {
        match self.docker.inspect_image(reference).await {
            Ok(i) => Ok(Some(image_details(i))),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.map_err(Missing::Image, reference)(e)),
        }
    }

    async fn registry_digest(&self, reference: &str) -> Result<String> {
        let d = self
            .docker
            .inspect_registry_image(reference, self.engine_credentials(reference).await?)
            .await
            .map_err(|e| self.pull_error(e, reference))?;
        d.descriptor.digest.ok_or_else(|| {
            RuntimeError::Other(format!("the registry gave no digest for {reference}"))
        })
    }

    async fn networks(&self) -> Result<Vec<String>> {
        let networks = self
            .docker
            .list_networks(None)
            .await
            .map_err(self.map_err(Missing::Other, "networks"))?;
        Ok(networks.into_iter().filter_map(|n| n.name).collect())
    }

    async fn pull(
        &self,
        reference: &str,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<()> {
        // Split "name:tag" / "name@digest" so the engine pulls exactly that.
        let (name, tag) = split_reference(reference);
        let options = CreateImageOptionsBuilder::default()
            .from_image(name)
            .tag(tag)
            .build();
        // The client timeout would cut a pull off while the engine waits for
        // the registry's manifest (the engine answers only then), and report
        // a slow registry as an unreachable engine; the caller bounds the
        // whole pull with its own pull timeout instead.
        let docker = self.docker.clone().with_timeout(NO_TIMEOUT);
        let credentials = self.engine_credentials(reference).await?;
        let sent = credentials.is_some();
        let mut stream = docker.create_image(Some(options), None, credentials);
        let mut layers: HashMap<String, (u64, u64)> = HashMap::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| self.pull_error(e, reference))?;
            if let Some(detail) = info.error_detail {
                let message = detail.message.unwrap_or_else(|| "pull failed".into());
                if pull_says_missing(&message) {
                    return Err(RuntimeError::not_found(Missing::Image, reference));
                }
                if let Some(e) = unauthorized(&message, reference, sent) {
                    return Err(e);
                }
                return Err(RuntimeError::Refused {
                    status: 500,
                    message: words(message),
                });
            }
            if let (Some(id), Some(p)) = (info.id, info.progress_detail) {
                let entry = layers.entry(id).or_default();
                let current = p.current.unwrap_or(0).max(0) as u64;
                let total = p.total.unwrap_or(0).max(0) as u64;
                if total > 0 {
                    *entry = (current, total);
                } else if info.status.as_deref() == Some("Pull complete") {
                    entry.0 = entry.1;
                }
                let (current, total) = layers
                    .values()
                    .fold((0, 0), |(c, t), (lc, lt)| (c + lc, t + lt));
                progress(PullProgress { current, total });
            }
        }
        Ok(())
    }

    async fn create(&self, request: &CreateRequest) -> Result<String> {
        let options = CreateContainerOptionsBuilder::default()
            .name(&request.name)
            .build();
        let body = create_body(request);
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(self.map_err(Missing::Container, &request.name))?;
        let primary = primary_network(&request.config.network);
        for (network, aliases) in &request.networks {
            if Some(network.as_str()) == primary.as_deref() {
                continue;
            }
            let connect = NetworkConnectRequest {
                container: created.id.clone(),
                endpoint_config: Some(EndpointSettings {
                    aliases: (!aliases.is_empty()).then(|| aliases.clone()),
                    ..Default::default()
                }),
            };
            if let Err(e) = self.docker.connect_network(network, connect).await {
                // Half-made containers are not left behind.
                let _ = self.remove(&created.id).await;
                return Err(self.map_err(Missing::Network, network)(e));
            }
        }
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> Result<()> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(self.map_err(Missing::Container, id))
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<()> {
        let secs = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(secs).build();
        // The engine answers only once the container is gone, which may take
        // the whole stop timeout: the client waits that long and then some.
        let docker = self.for_stop(timeout);
        match docker.stop_container(id, Some(options)).await {
            // 304: already stopped, which is what was asked for.
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            other => other.map_err(self.map_err(Missing::Container, id)),
        }
    }

    async fn kill(&self, id: &str, signal: &str) -> Result<()> {
        let options = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        self.docker
            .kill_container(id, Some(options))
            .await
            .map_err(self.map_err(Missing::Container, id))
    }

    async fn unpause(&self, id: &str) -> Result<()> {
        self.docker
            .unpause_container(id)
            .await
            .map_err(self.map_err(Missing::Container, id))
    }

    async fn rename(&self, id: &str, new_name: &str) -> Result<()> {
        let options = RenameContainerOptionsBuilder::default()
            .name(new_name)
            .build();
        self.docker
            .rename_container(id, options)
            .await
            .map_err(self.map_err(Missing::Container, id))
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(false)
            .build();
        self.docker
            .remove_container(id, Some(options))
            .await
            .map_err(self.map_err(Missing::Container, id))
    }

    async fn update(&self, id: &str, config: &ContainerConfig) -> Result<()> {
        let r = &config.resources;
        let body = ContainerUpdateBody {
            memory: r.memory.map(as_i64),
            memory_reservation: r.memory_reservation.map(as_i64),
            memory_swap: swap_for_update(config),
            nano_cpus: r.nano_cpus.map(as_i64),
            restart_policy: Some(restart_policy(&config.restart)),
            ..Default::default()
        };
        self.docker
            .update_container(id, body)
            .await
            .map_err(self.map_err(Missing::Container, id))
    }

    async fn logs(&self, id: &str) -> Result<String> {
        // The engine counts lines; a line is rarely longer than a few
        // hundred bytes, and the tail is cut to the byte limit anyway.
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail("400")
            .build();
        let mut out = String::new();
        let mut stream = self.docker.logs(id, Some(options));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(self.map_err(Missing::Container, id))?;
            out.push_str(&chunk.to_string());
            keep_tail(&mut out);
        }
        Ok(out)
    }

    async fn exec(&self, id: &str, cmd: &[String]) -> Result<ExecOutput> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let options = CreateExecOptions {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(cmd.to_vec()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(id, options)
            .await
            .map_err(self.map_err(Missing::Container, id))?;
        // The command may run long: the caller bounds it, not the client.
        let docker = self.docker.clone().with_timeout(NO_TIMEOUT);
        let started = docker
            .start_exec(&created.id, None)
            .await
            .map_err(self.map_err(Missing::Container, id))?;
        let mut out = String::new();
        if let StartExecResults::Attached { mut output, .. } = started {
            while let Some(chunk) = output.next().await {
                let chunk = chunk.map_err(self.map_err(Missing::Container, id))?;
                out.push_str(&chunk.to_string());
                keep_tail(&mut out);
            }
        }
        // The stream ends when the process does; the engine may take a
        // moment more to record its exit code.
        for _ in 0..50 {
            let inspected = self
                .docker
                .inspect_exec(&created.id)
                .await
                .map_err(self.map_err(Missing::Container, id))?;
            if inspected.running != Some(true) {
                if let Some(code) = inspected.exit_code {
                    return Ok(ExecOutput {
                        exit_code: code,
                        output: out,
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(RuntimeError::Other(format!(
            "the engine did not report how the command in {id} ended"
        )))
    }

    async fn host_path_exists(&self, path: &str) -> Option<bool> {
        // The engine's host is this one only over its unix socket.
        if !self.endpoint.starts_with("unix://") {
            return None;
        }
        tokio::fs::try_exists(path).await.ok()
    }

    fn events(&self) -> EventStream {
        let filters = HashMap::from([("type", vec!["container"])]);
        // The request goes out on the first poll; `since` makes the engine
        // replay what happened between this call and that poll.
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default();
        let options = EventsOptionsBuilder::default()
            .filters(&filters)
            .since(&since)
            .build();
        let endpoint = self.endpoint.clone();
        let stream = self.docker.events(Some(options)).map(move |item| {
            let message = item.map_err(|e| RuntimeError::Unavailable {
                endpoint: endpoint.clone(),
                message: words(e.to_string()),
            })?;
            let actor = message.actor.unwrap_or_default();
            let attributes = actor.attributes.unwrap_or_default();
            Ok(Event {
                action: message.action.unwrap_or_default(),
                id: actor.id.unwrap_or_default(),
                name: attributes.get("name").cloned().unwrap_or_default(),
            })
        });
        Box::pin(stream)
    }
}

/// A pull or registry look-up names the reference it was asked for, not the
/// engine's spelling of it.
fn image_missing(e: RuntimeError, reference: &str) -> RuntimeError {
    match e {
        RuntimeError::NotFound {
            kind: Missing::Image,
            ..
        } => RuntimeError::not_found(Missing::Image, reference),
        other => other,
    }
}

/// The network a container joins at create: its user network (aliases can
/// only be set on user networks).
fn primary_network(mode: &NetworkMode) -> Option<String> {
    match mode {
        NetworkMode::User(n) => Some(n.clone()),
        _ => None,
    }
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `docker update` rejects a memory limit above the current swap limit, so
/// the swap limit always travels with the memory limit: the document's value,
/// or the engine's default of twice the memory.
fn swap_for_update(config: &ContainerConfig) -> Option<i64> {
    match (config.resources.memory_swap, config.resources.memory) {
        (Some(Swap::Unlimited), _) => Some(-1),
        (Some(Swap::Limit(s)), _) => Some(as_i64(s)),
        (None, Some(m)) => Some(as_i64(m).saturating_mul(2)),
        (None, None) => None,
    }
}

fn split_reference(reference: &str) -> (&str, &str) {
    if let Some((name, digest)) = reference.split_once('@') {
        let name = name
            .rsplit_once(':')
            .filter(|(_, t)| !t.contains('/'))
            .map_or(name, |(n, _)| n);
        return (name, digest);
    }
    match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (reference, "latest"),
    }
}

fn restart_policy(policy: &RestartPolicy) -> BollardRestart {
    let (name, retries) = match policy {
        RestartPolicy::No => (RestartPolicyNameEnum::NO, None),
        RestartPolicy::Always => (RestartPolicyNameEnum::ALWAYS, None),
        RestartPolicy::UnlessStopped => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
        RestartPolicy::OnFailure { max_retries } => (
            RestartPolicyNameEnum::ON_FAILURE,
            Some(i64::from(*max_retries)),
        ),
    };
    BollardRestart {
        name: Some(name),
        maximum_retry_count: retries,
    }
}

fn nanos(d: Option<Duration>) -> Option<i64> {
    d.map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Translates berth's request into the engine's create body.
pub(crate) fn create_body(request: &CreateRequest) -> ContainerCreateBody {
    let c = &request.config;
    let env: Vec<String> = c
        .env
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        })
        .collect();
    let mut port_bindings: HashMap<String, Option<Vec<BollardPortBinding>>> = HashMap::new();
    for p in &c.ports {
        let host_port = match (p.host_port, p.host_port_end) {
            (0, _) => String::new(),
            (a, b) if a == b => a.to_string(),
            (a, b) => format!("{a}-{b}"),
        };
        port_bindings
            .entry(format!("{}/{}", p.container_port, p.protocol))
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(BollardPortBinding {
                host_ip: Some(p.host_ip.to_string()),
                host_port: Some(host_port),
            });
    }
    let mut exposed: Vec<String> = port_bindings.keys().cloned().collect();
    exposed.sort();
    let mut binds: Vec<String> = c
        .mounts
        .iter()
        .map(|m| {
            let access = if m.read_only { "ro," } else { "" };
            format!(
                "{}:{}:{access}{}",
                m.source,
                m.destination,
                m.propagation.as_str()
            )
        })
        .collect();
    binds.extend(c.volumes.iter().map(|v| {
        let access = if v.read_only { ":ro" } else { "" };
        format!("{}:{}{access}", v.name, v.destination)
    }));
    binds.extend(
        request
            .inherited_volumes
            .iter()
            .map(|(name, path)| format!("{name}:{path}")),
    );
    let devices: Vec<BollardDevice> = c
        .devices
        .iter()
        .map(|d| BollardDevice {
            path_on_host: Some(d.host_path.clone()),
            path_in_container: Some(d.container_path.clone()),
            cgroup_permissions: Some(d.permissions.clone()),
        })
        .collect();
    let mut log_options = HashMap::new();
    if let Some(files) = c.log.max_files {
        log_options.insert("max-file".to_string(), files.to_string());
    }
    if let Some(size) = c.log.max_size {
        log_options.insert("max-size".to_string(), size.to_string());
    }
    if c.log.non_blocking {
        log_options.insert("mode".to_string(), "non-blocking".to_string());
        if let Some(b) = c.log.max_buffer_size {
            log_options.insert("max-buffer-size".to_string(), b.to_string());
        }
    }
    let h = &c.health;
    let healthcheck = (h.test.is_some()
        || h.interval.is_some()
        || h.timeout.is_some()
        || h.retries.is_some()
        || h.start_period.is_some())
    .then(|| BollardHealth {
        test: h.test.as_ref().map(|t| match t {
            HealthTest::Shell(cmd) => vec!["CMD-SHELL".to_string(), cmd.clone()],
            HealthTest::Disabled => vec!["NONE".to_string()],
        }),
        interval: nanos(h.interval),
        timeout: nanos(h.timeout),
        retries: h.retries.map(i64::from),
        start_period: nanos(h.start_period),
        start_interval: None,
    });
    let network_mode = match &c.network {
        NetworkMode::Bridge => "bridge".to_string(),
        other => other.to_string(),
    };
    let primary = primary_network(&c.network);
    let networking_config = primary.and_then(|net| {
        let aliases = request
            .networks
            .iter()
            .find(|(n, _)| *n == net)
            .map(|(_, a)| a.clone())
            .filter(|a| !a.is_empty())?;
        Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                net,
                EndpointSettings {
                    aliases: Some(aliases),
                    ..Default::default()
                },
            )])),
        })
    });
    ContainerCreateBody {
        networking_config,
        image: Some(c.image.to_string()),
        env: Some(env),
        cmd: c.cmd.clone(),
        entrypoint: c.entrypoint.clone(),
        working_dir: c.workdir.clone(),
        user: c.user.clone(),
        hostname: c.hostname.clone(),
        domainname: c.domainname.clone(),
        labels: Some(request.labels.clone().into_iter().collect()),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        tty: Some(c.terminal),
        open_stdin: Some(c.interactive),
        stop_timeout: c.stop_timeout.map(|d| as_i64(d.as_secs())),
        stop_signal: c.stop_signal.clone(),
        healthcheck,
        host_config: Some(HostConfig {
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            binds: (!binds.is_empty()).then_some(binds),
            devices: (!devices.is_empty()).then_some(devices),
            extra_hosts: (!request.extra_hosts.is_empty()).then(|| request.extra_hosts.clone()),
            network_mode: Some(network_mode),
            privileged: Some(c.privileged),
            restart_policy: Some(restart_policy(&c.restart)),
            log_config: Some(HostConfigLogConfig {
                typ: Some(c.log.driver.as_str().to_string()),
                config: Some(log_options),
            }),
            memory: c.resources.memory.map(as_i64),
            memory_reservation: c.resources.memory_reservation.map(as_i64),
            memory_swap: c.resources.memory_swap.map(|s| match s {
                Swap::Unlimited => -1,
                Swap::Limit(b) => as_i64(b),
            }),
            nano_cpus: c.resources.nano_cpus.map(as_i64),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Devices as (host path, container path, permissions).
pub(crate) fn raw_devices(devices: Option<Vec<BollardDevice>>) -> Vec<(String, String, String)> {
    devices
        .unwrap_or_default()
        .into_iter()
        .map(|d| {
            (
                d.path_on_host.unwrap_or_default(),
                d.path_in_container.unwrap_or_default(),
                d.cgroup_permissions.unwrap_or_default(),
            )
        })
        .collect()
}

pub(crate) fn raw_health(h: BollardHealth) -> RawHealthcheck {
    RawHealthcheck {
        test: h.test.unwrap_or_default(),
        interval_ns: h.interval.unwrap_or(0),
        timeout_ns: h.timeout.unwrap_or(0),
        retries: h.retries.unwrap_or(0),
        start_period_ns: h.start_period.unwrap_or(0),
    }
}

/// Translates the engine's inspect output into berth's terms.
fn details(c: ContainerInspectResponse) -> ContainerDetails {
    let config = c.config.unwrap_or_default();
    let host = c.host_config.unwrap_or_default();
    let state = c.state.unwrap_or_default();
    let status = match state.status {
        Some(ContainerStateStatusEnum::CREATED) => Status::Created,
        Some(ContainerStateStatusEnum::RUNNING) => Status::Running,
        Some(ContainerStateStatusEnum::PAUSED) => Status::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => Status::Restarting,
        Some(ContainerStateStatusEnum::REMOVING) => Status::Removing,
        Some(ContainerStateStatusEnum::EXITED) | Some(ContainerStateStatusEnum::STOPPING) => {
            Status::Exited
        }
        _ => Status::Dead,
    };
    let health = state.health.and_then(|h| match h.status {
        Some(HealthStatusEnum::STARTING) => Some(Health::Starting),
        Some(HealthStatusEnum::HEALTHY) => Some(Health::Healthy),
        Some(HealthStatusEnum::UNHEALTHY) => Some(Health::Unhealthy),
        _ => None,
    });
    let zero_time = |t: Option<String>| t.filter(|t| !t.starts_with("0001-01-01"));
    let mut port_bindings = Vec::new();
    for (key, bindings) in host.port_bindings.unwrap_or_default() {
        let (port, protocol) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let Ok(container_port) = port.parse::<u16>() else {
            continue;
        };
        for b in bindings.unwrap_or_default() {
            port_bindings.push(RawPortBinding {
                container_port,
                protocol: protocol.to_string(),
                host_ip: b.host_ip.unwrap_or_default(),
                host_port: b.host_port.unwrap_or_default(),
            });
        }
    }
    let mounts = c
        .mounts
        .unwrap_or_default()
        .into_iter()
        .map(|m| RawMount {
            kind: m.typ.map(|t| t.to_string()).unwrap_or_default(),
            name: m.name,
            source: m.source.unwrap_or_default(),
            destination: m.destination.unwrap_or_default(),
            rw: m.rw.unwrap_or(true),
            propagation: m.propagation.unwrap_or_default(),
        })
        .collect();
    let log = host.log_config.unwrap_or_default();
    let restart = host.restart_policy.unwrap_or_default();
    let endpoints = c
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default();
    let ips = endpoints
        .iter()
        .filter_map(|(name, e)| {
            e.ip_address
                .clone()
                .filter(|ip| !ip.is_empty())
                .map(|ip| (name.clone(), ip))
        })
        .collect();
    let networks = endpoints
        .into_iter()
        .map(|(name, endpoint)| (name, endpoint.aliases.unwrap_or_default()))
        .collect();
    ContainerDetails {
        id: c.id.unwrap_or_default(),
        name: c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image_ref: config.image.unwrap_or_default(),
        image_id: c.image.unwrap_or_default(),
        created: c.created.map(|d| d.to_string()).unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        state: ContainerState {
            status,
            exit_code: state.exit_code.unwrap_or(0),
            started_at: zero_time(state.started_at),
            finished_at: zero_time(state.finished_at),
            health,
            restart_count: c.restart_count.unwrap_or(0),
            error: state.error.filter(|e| !e.is_empty()),
        },
        env: config.env.unwrap_or_default(),
        cmd: config.cmd,
        entrypoint: config.entrypoint,
        workdir: config.working_dir.unwrap_or_default(),
        user: config.user.unwrap_or_default(),
        hostname: config.hostname.unwrap_or_default(),
        domainname: config.domainname.unwrap_or_default(),
        port_bindings,
        mounts,
        devices: raw_devices(host.devices),
        extra_hosts: host.extra_hosts.unwrap_or_default(),
        network_mode: host.network_mode.unwrap_or_default(),
        networks,
        ips,
        privileged: host.privileged.unwrap_or(false),
        tty: config.tty.unwrap_or(false),
        open_stdin: config.open_stdin.unwrap_or(false),
        restart_policy: restart.name.map(|n| n.to_string()).unwrap_or_default(),
        restart_max_retries: restart.maximum_retry_count.unwrap_or(0),
        log_driver: log.typ.unwrap_or_default(),
        log_options: log.config.unwrap_or_default().into_iter().collect(),
        memory: host.memory.unwrap_or(0),
        memory_reservation: host.memory_reservation.unwrap_or(0),
        memory_swap: host.memory_swap.unwrap_or(0),
        nano_cpus: host.nano_cpus.unwrap_or(0),
        stop_timeout: config.stop_timeout,
        stop_signal: config.stop_signal.filter(|s| !s.is_empty()),
        healthcheck: config.healthcheck.map(raw_health),
    }
}

fn image_details(i: ImageInspect) -> ImageDetails {
    let config = i.config.unwrap_or_default();
    ImageDetails {
        id: i.id.unwrap_or_default(),
        repo_tags: i.repo_tags.unwrap_or_default(),
        repo_digests: i.repo_digests.unwrap_or_default(),
        env: config.env.unwrap_or_default(),
        cmd: config.cmd,
        entrypoint: config.entrypoint,
        workdir: config.working_dir.unwrap_or_default(),
        user: config.user.unwrap_or_default(),
        labels: config
            .labels
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        volumes: config.volumes.unwrap_or_default(),
        stop_signal: config.stop_signal.filter(|s| !s.is_empty()),
        healthcheck: config.healthcheck.map(raw_health),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment of these variables only.
    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn tls(url: &str, dir: &str) -> Result<Endpoint, String> {
        Ok(Endpoint::Tls {
            url: url.into(),
            cert_dir: dir.into(),
        })
    }

    #[test]
    fn without_docker_tls_verify_the_endpoint_is_used_as_written() {
        assert_eq!(
            endpoint(None, env(&[])),
            Ok(Endpoint::Plain(DEFAULT_HOST.into()))
        );
        assert_eq!(
            endpoint(None, env(&[("DOCKER_HOST", "tcp://h:2375")])),
            Ok(Endpoint::Plain("tcp://h:2375".into()))
        );
        assert_eq!(
            endpoint(
                None,
                env(&[("DOCKER_HOST", "tcp://h:2375"), ("DOCKER_TLS_VERIFY", "")])
            ),
            Ok(Endpoint::Plain("tcp://h:2375".into())),
            "an empty DOCKER_TLS_VERIFY is unset, as for the docker CLI"
        );
    }

    #[test]
    fn any_non_empty_docker_tls_verify_makes_tcp_verified_https() {
        for value in ["1", "0", "false", "yes"] {
            let vars = [
                ("DOCKER_HOST", "tcp://engine:2376"),
                ("DOCKER_TLS_VERIFY", value),
                ("HOME", "/root"),
            ];
            assert_eq!(
                endpoint(None, env(&vars)),
                tls("https://engine:2376", "/root/.docker"),
                "DOCKER_TLS_VERIFY={value}"
            );
        }
    }

    #[test]
    fn the_certificate_directory_is_docker_cert_path_else_docker_config_else_home() {
        let base = [("DOCKER_TLS_VERIFY", "1"), ("HOME", "/home/u")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut vars = base.to_vec();
            vars.extend_from_slice(extra);
            endpoint(Some("tcp://e:2376"), env(&vars))
        };
        assert_eq!(with(&[]), tls("https://e:2376", "/home/u/.docker"));
        assert_eq!(
            with(&[("DOCKER_CONFIG", "/etc/docker-cli")]),
            tls("https://e:2376", "/etc/docker-cli")
        );
        assert_eq!(
            with(&[
                ("DOCKER_CONFIG", "/etc/docker-cli"),
                ("DOCKER_CERT_PATH", "/etc/berth/docker")
            ]),
            tls("https://e:2376", "/etc/berth/docker")
        );
    }

    #[test]
    fn the_host_flag_wins_over_docker_host_and_unix_sockets_never_use_tls() {
        let vars = [
            ("DOCKER_HOST", "tcp://elsewhere:2376"),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", "/c"),
        ];
        assert_eq!(
            endpoint(Some("unix:///run/docker.sock"), env(&vars)),
            Ok(Endpoint::Plain("unix:///run/docker.sock".into()))
        );
        assert_eq!(
            endpoint(Some("https://e:2376"), env(&[("DOCKER_CERT_PATH", "/c")])),
            tls("https://e:2376", "/c"),
            "https:// is verified TLS with or without DOCKER_TLS_VERIFY"
        );
    }

    #[test]
    fn tls_without_any_certificate_directory_is_refused_naming_docker_cert_path() {
        let e = endpoint(Some("tcp://e:2376"), env(&[("DOCKER_TLS_VERIFY", "1")])).unwrap_err();
        assert!(e.contains("DOCKER_CERT_PATH"), "{e}");
    }

    #[test]
    fn a_tls_client_is_not_built_without_a_ca_or_with_half_a_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let e = connect_tls("https://e:2376", dir.path()).unwrap_err();
        assert!(e.contains("ca.pem"), "{e}");
        std::fs::write(dir.path().join("ca.pem"), "").unwrap();
        let e = connect_tls("https://e:2376", dir.path()).unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
    }

    // Issue 20: the engine's messages quote command lines and env entries.
    #[test]
    fn engine_error_messages_never_repeat_a_url_password_or_a_secret_assignment() {
        let said = words(
            "OCI runtime create failed: exec: \"postgres://u:s3cr3t@db/x\": stat: no such file; env DB_PASSWORD=hunter2".into(),
        );
        assert!(
            !said.contains("s3cr3t") && !said.contains("hunter2"),
            "{said}"
        );
        let e = DockerRuntime::map_err_for_test(BollardError::DockerResponseServerError {
            status_code: 500,
            message: "invalid --api-token=hunter2".into(),
        });
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn split_reference_separates_tag_from_registry_port() {
        assert_eq!(
            split_reference("127.0.0.1:5000/app:1"),
            ("127.0.0.1:5000/app", "1")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/app"),
            ("127.0.0.1:5000/app", "latest")
        );
    }

    #[test]
    fn the_engines_404_messages_say_what_is_missing() {
        let id = "8b5a0a15e3a8b0ab2581c2181ec2d66729fdb23753a0212cccea9b446f774372";
        for (message, kind, what) in [
            ("No such container: nosuchctr", Missing::Container, "nosuchctr"),
            (
                "Cannot kill container: nosuchctr: No such container: nosuchctr",
                Missing::Container,
                "nosuchctr",
            ),
            (&format!("No such container: {id}"), Missing::Container, id),
            (
                "No such image: 127.0.0.1:5000/berth-test/service:nosuch",
                Missing::Image,
                "127.0.0.1:5000/berth-test/service:nosuch",
            ),
            (
                "no such image: nosuch:1: No such image: nosuch:1",
                Missing::Image,
                "nosuch:1",
            ),
            ("network nosuchnet not found", Missing::Network, "nosuchnet"),
            ("No such network: nosuchnet", Missing::Network, "nosuchnet"),
            ("get nosuchvol: no such volume", Missing::Volume, "nosuchvol"),
            (
                "manifest for 127.0.0.1:5000/berth-test/service:nosuch not found: manifest unknown: manifest unknown",
                Missing::Image,
                "",
            ),
            ("manifest unknown: manifest unknown", Missing::Image, ""),
        ] {
            assert_eq!(
                missing_from_message(message),
                Some((kind, what.to_string())),
                "{message}"
            );
        }
        assert_eq!(missing_from_message("page not found"), None);
    }

    #[test]
    fn a_404_names_what_the_engine_says_is_missing_not_what_was_asked_for() {
        let rt = DockerRuntime::from_client(
            Docker::connect_with_http("tcp://127.0.0.1:9", 1, bollard::API_DEFAULT_VERSION)
                .unwrap(),
            "tcp://127.0.0.1:9".into(),
            crate::registry::Credentials::default(),
        );
        let e = |message: &str| BollardError::DockerResponseServerError {
            status_code: 404,
            message: message.into(),
        };
        let err = rt.map_err(Missing::Container, "web")(e("network edge not found"));
        assert_eq!(err, RuntimeError::not_found(Missing::Network, "edge"));
        assert_eq!(err.to_string(), "network \"edge\" not found");
        let err = rt.map_err(Missing::Container, "web")(e("page not found"));
        assert_eq!(err, RuntimeError::not_found(Missing::Container, "web"));
        let err = rt.map_err(Missing::Image, "x:1")(e("manifest unknown: manifest unknown"));
        assert_eq!(err.to_string(), "image x:1 not found");
        let err = rt.map_err(Missing::Container, "web")(BollardError::DockerResponseServerError {
            status_code: 409,
            message: "busy".into(),
        });
        assert_eq!(
            err,
            RuntimeError::Conflict {
                message: "busy".into()
            }
        );
    }

    #[test]
    fn an_engine_that_wants_a_login_names_the_registry_and_where_credentials_come_from() {
        let e = unauthorized(
            "Head \"http://127.0.0.1:5001/v2/app/manifests/1\": no basic auth credentials",
            "127.0.0.1:5001/app:1",
            false,
        )
        .unwrap();
        let text = e.to_string();
        assert!(
            text.starts_with("registry 127.0.0.1:5001: no basic auth credentials"),
            "{text}"
        );
        assert!(
            text.contains("docker login") && text.contains("[[registries]]"),
            "{text}"
        );
        let e = unauthorized("unauthorized: authentication required", "reg/app:1", true).unwrap();
        assert!(e.to_string().contains("were refused"), "{e}");
        assert_eq!(unauthorized("manifest unknown", "reg/app:1", false), None);
    }

    #[test]
    fn a_stop_waits_longer_than_its_own_timeout() {
        let rt = DockerRuntime::from_client(
            Docker::connect_with_http("tcp://127.0.0.1:9", 2, bollard::API_DEFAULT_VERSION)
                .unwrap(),
            "tcp://127.0.0.1:9".into(),
            crate::registry::Credentials::default(),
        );
        assert_eq!(
            rt.for_stop(Duration::from_secs(300)).timeout(),
            Duration::from_secs(300) + STOP_MARGIN
        );
        let rt = rt.with_request_timeout(Duration::from_secs(120));
        assert_eq!(rt.request_timeout(), Duration::from_secs(120));
        assert_eq!(
            rt.for_stop(Duration::from_secs(1)).timeout(),
            Duration::from_secs(120),
            "never shorter than the base timeout"
        );
    }

    #[test]
    fn split_reference_pulls_by_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            split_reference(&format!("x/app:1@{d}")),
            ("x/app", d.as_str())
        );
    }
}
