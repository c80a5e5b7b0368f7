//! The local HTTP API (`[api]` in the configuration), served by `berth
//! run` on a unix socket by default: read the inventory, one container and
//! its env; roll one component to another image; change its env; post a
//! whole document; watch progress as server-sent events; readiness and
//! Prometheus metrics. See README.md ("Local HTTP API") and
//! schemas/openapi.json.
//!
//! Nothing here changes a container itself. Every mutation becomes a new
//! desired document derived from the last accepted one ([`derive`]), with
//! an `api-<ms>` activity id, and goes to the agent's loop as an
//! [`crate::agent::Input::Document`] from [`crate::agent::Origin::Api`]:
//! the same queue, validation, policy, persistence, feedback (on MQTT too)
//! and rollback as any other document. The API checks validation and the
//! policy first too, so a refusal is a clear `400`/`403` instead of a
//! feedback message.
//!
//! Every token is compared in constant time ([`auth`]); every mutation and
//! every refusal leaves an audit line naming the token's name, never the
//! token.

pub mod auth;
pub mod client;
pub mod config;
pub mod derive;
pub mod error;
pub mod events;
pub mod handlers;
pub mod metrics;
pub mod openapi;
pub mod types;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{mpsc, watch};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::agent::{Input, Notify, Origin, Outbound};
use crate::runtime::Runtime;

pub use config::{ApiConfig, Listen};
pub use events::Hub;

/// Everything the handlers share.
pub struct Context<R> {
    /// The engine, for reads (the loop does every change).
    pub rt: Arc<R>,
    /// The registries, to refuse a missing tag before anything happens.
    pub registry: crate::registry::client::OciRegistry,
    /// The configured tokens.
    pub tokens: Vec<config::Token>,
    /// Events, activities, metrics.
    pub hub: Arc<Hub>,
    /// The loop's input channel.
    pub inputs: mpsc::UnboundedSender<Input>,
    /// Where the last accepted document is (desired.json).
    pub state_dir: PathBuf,
    /// How documents are read (domain, limits).
    pub spec: crate::spec::Options,
    /// The device policy, checked before a document is sent.
    pub policy: crate::policy::Policy,
    /// Containers berth never touches.
    pub system_containers: Vec<String>,
    /// Hides secret env values and URL passwords.
    pub redactor: crate::redact::Redactor,
    /// This berth's instance (for the containers metric).
    pub instance: String,
    /// The state file or directory, on a device fed by files.
    pub files: Option<PathBuf>,
    /// Whether start-up is over.
    pub ready: watch::Receiver<bool>,
    /// One mutation at a time is derived and handed over, so the next one
    /// derives from it.
    pub mutation: tokio::sync::Mutex<()>,
    /// How long the loop may take to persist a document.
    pub accept_timeout: Duration,
    /// How long a waiting mutation waits for its activity.
    pub wait_timeout: Duration,
    /// The last `api-<ms>` given, so that ids never repeat.
    pub last_activity: std::sync::atomic::AtomicI64,
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] config::ApiConfigError),
    /// Another process answers on the socket.
    #[error("api.listen: {0} is in use by a running process (another berth?)")]
    InUse(PathBuf),
    /// Something that is not a socket is in the way.
    #[error("api.listen: {0} exists and is not a socket; berth does not remove it")]
    NotASocket(PathBuf),
    /// Binding or preparing failed.
    #[error("api.listen: {what} {path}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// Where.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A socket file removed when the API stops.
#[derive(Debug)]
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A bound listener, before serving.
pub enum Bound {
    /// A unix socket, and its file.
    Unix(tokio::net::UnixListener, SocketFile),
    /// A TCP port.
    Tcp(tokio::net::TcpListener),
}

/// Makes room for the socket: creates its directory (0750) when missing,
/// removes a stale socket file (nobody answers on it), refuses a live one
/// and anything that is not a socket.
fn prepare_socket(path: &Path) -> Result<(), ServeError> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
    let io = |what, source| ServeError::Io {
        what,
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(|e| io("creating the directory of", e))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("looking at", e)),
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServeError::InUse(path.to_path_buf()));
            }
            tracing::info!(path = %path.display(), "removing a stale API socket");
            std::fs::remove_file(path).map_err(|e| io("removing the stale socket", e))
        }
        Ok(_) => Err(ServeError::NotASocket(path.to_path_buf())),
    }
}

/// Binds where `[api]` says.
///
/// # Errors
/// [`ServeError`] naming `api.listen`.
pub async fn bind(api: &ApiConfig) -> Result<Bound, ServeError> {
    let listen = config::parse_listen(&api.listen, api.allow_remote)?;
    match listen {
        Listen::Unix(path) => {
            let mode = config::parse_mode(&api.socket_mode)?;
            let p = path.clone();
            tokio::task::spawn_blocking(move || prepare_socket(&p))
                .await
                .map_err(|e| ServeError::Io {
                    what: "preparing",
                    path: path.display().to_string(),
                    source: std::io::Error::other(e.to_string()),
                })??;
            let listener =
                tokio::net::UnixListener::bind(&path).map_err(|source| ServeError::Io {
                    what: "binding",
                    path: path.display().to_string(),
                    source,
                })?;
            let file = SocketFile(path.clone());
            {
                use std::os::unix::fs::PermissionsExt;
                tokio::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .await
                    .map_err(|source| ServeError::Io {
                        what: "setting the mode of",
                        path: path.display().to_string(),
                        source,
                    })?;
            }
            Ok(Bound::Unix(listener, file))
        }
        Listen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Io {
                    what: "binding",
                    path: addr.to_string(),
                    source,
                })?;
            Ok(Bound::Tcp(listener))
        }
    }
}

impl Bound {
    /// Serves `router` until the task is aborted (open event streams would
    /// hold a graceful shutdown forever; the loop has stopped by then).
    pub async fn serve(self, router: Router) {
        let result = match self {
            Bound::Unix(l, _file) => axum::serve(l, router).await,
            Bound::Tcp(l) => axum::serve(l, router).await,
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "the API server stopped");
        }
    }
}

async fn count<R: Send + Sync + 'static>(
    State(ctx): State<Arc<Context<R>>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let code = match response.status().as_u16() {
        500.. => metrics::Code::Server,
        400..=499 => metrics::Code::Client,
        _ => metrics::Code::Success,
    };
    ctx.hub
        .metrics
        .requests
        .get_or_create(&metrics::Answer {
            route,
            code: code.label().to_string(),
        })
        .inc();
    response
}

/// Every route, with the body limit and the timeouts: quick requests get
/// `request_timeout`; mutations that wait for their activity get
/// `wait_timeout` and answer `504` themselves past it; the event stream
/// has none.
pub fn router<R: Runtime + 'static>(ctx: Arc<Context<R>>, api: &ApiConfig) -> Router {
    use handlers::*;
    let quick = TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, api.request_timeout);
    let slow = TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        ctx.wait_timeout + ctx.accept_timeout + api.request_timeout,
    );
    Router::new()
        .route("/healthz", get(healthz::<R>).layer(quick))
        .route("/metrics", get(metrics::<R>).layer(quick))
        .route("/api/v1/containers", get(list::<R>).layer(quick))
        .route("/api/v1/containers/{id}", get(get_one::<R>).layer(quick))
        .route(
            "/api/v1/containers/{id}/env",
            get(get_env::<R>)
                .layer(quick)
                .patch(patch_env::<R>)
                .layer(slow),
        )
        .route(
            "/api/v1/containers/{id}/update-image",
            post(update_image::<R>).layer(slow),
        )
        .route(
            "/api/v1/desired-state",
            post(desired_state::<R>).layer(slow),
        )
        .route("/api/v1/activities/{id}", get(activity::<R>).layer(quick))
        .route("/api/v1/upgrades", get(upgrades::<R>).layer(quick))
        .route("/api/v1/events", get(events::<R>))
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            count::<R>,
        ))
        .layer(DefaultBodyLimit::max(api.max_body_size))
        .layer(RequestBodyLimitLayer::new(api.max_body_size))
        .with_state(ctx)
}

/// Passes every message the loop publishes to the hub and then to the
/// MQTT sink (when there is one). Neither can block the loop: the hub never
/// waits and the MQTT sink is unbounded as before.
pub async fn fan_out(
    mut from_loop: mpsc::UnboundedReceiver<Outbound>,
    hub: Arc<Hub>,
    mqtt: Option<mpsc::UnboundedSender<Outbound>>,
) {
    while let Some(message) = from_loop.recv().await {
        hub.publish(&message);
        if let Some(mqtt) = &mqtt {
            let _ = mqtt.send(message);
        }
    }
}

/// A sender for the sources that counts what they hand the loop (documents
/// by origin, MQTT connections) and passes everything on unchanged.
pub fn counted_inputs(
    hub: Arc<Hub>,
    to_loop: mpsc::UnboundedSender<Input>,
) -> mpsc::UnboundedSender<Input> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Input>();
    tokio::spawn(async move {
        while let Some(input) = rx.recv().await {
            match &input {
                Input::Connected => {
                    hub.metrics.mqtt_connects.inc();
                    hub.metrics.mqtt_connected.set(1);
                }
                Input::Disconnected => {
                    hub.metrics.mqtt_connected.set(0);
                }
                Input::Document(d) => {
                    let origin = match d.origin {
                        Origin::Mqtt => "mqtt",
                        Origin::Files(_) => "files",
                        Origin::Persisted => "persisted",
                        Origin::Api => "api",
                    };
                    hub.metrics
                        .documents
                        .get_or_create(&metrics::Source {
                            origin: origin.into(),
                        })
                        .inc();
                }
                _ => {}
            }
            if to_loop.send(input).is_err() {
                break;
            }
        }
    });
    tx
}

/// Tells the API when start-up is over, besides telling systemd.
pub struct ReadyNotify<N> {
    inner: N,
    ready: watch::Sender<bool>,
}

impl<N: Notify> ReadyNotify<N> {
    /// Wraps `inner`; `ready` turns true with [`Notify::ready`].
    pub fn new(inner: N, ready: watch::Sender<bool>) -> Self {
        Self { inner, ready }
    }
}

impl<N: Notify> Notify for ReadyNotify<N> {
    fn ready(&self) {
        let _ = self.ready.send(true);
        self.inner.ready();
    }
    fn alive(&self) {
        self.inner.alive();
    }
    fn status(&self, text: &str) {
        self.inner.status(text);
    }
    fn stopping(&self) {
        let _ = self.ready.send(false);
        self.inner.stopping();
    }
    fn interval(&self) -> Option<Duration> {
        self.inner.interval()
    }
}
