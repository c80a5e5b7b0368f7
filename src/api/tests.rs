//! The router's decisions on the in-memory engine: authentication before
//! anything else, permissions before the body is read, and the answers'
//! shapes. The behaviours against the real engine are in tests/api.rs.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

use super::config::{digest, ApiConfig, TokenConfig};
use super::*;
use crate::runtime::fake::FakeRuntime;

const TOKEN: &str = "reader-token-0123456789";

fn hex(t: &str) -> String {
    digest(t).iter().map(|b| format!("{b:02x}")).collect()
}

struct Setup {
    router: Router,
    inputs: mpsc::UnboundedReceiver<Input>,
    _dir: tempfile::TempDir,
}

fn setup(ready: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let api = ApiConfig {
        tokens: vec![TokenConfig {
            name: "reader".into(),
            sha256: Some(hex(TOKEN)),
            can_inspect: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    let (tx, inputs) = mpsc::unbounded_channel();
    let (_ready_tx, ready_rx) = watch::channel(ready);
    let ctx = Arc::new(Context {
        rt: Arc::new(FakeRuntime::new()),
        registry: crate::registry::client::OciRegistry::new(
            crate::registry::Credentials::without_docker(vec![]),
        ),
        tokens: api.load_tokens().unwrap(),
        hub: Arc::new(Hub::new(16)),
        inputs: tx,
        state_dir: dir.path().to_path_buf(),
        spec: crate::spec::Options {
            domain: "containers".into(),
            limits: crate::spec::Limits::default(),
            validation: Default::default(),
        },
        policy: crate::policy::Policy::default(),
        system_containers: vec![],
        redactor: crate::redact::Redactor::default(),
        instance: "test".into(),
        files: None,
        ready: ready_rx,
        mutation: tokio::sync::Mutex::new(()),
        accept_timeout: Duration::from_secs(1),
        wait_timeout: Duration::from_secs(1),
        last_activity: std::sync::atomic::AtomicI64::new(0),
    });
    Setup {
        router: router(ctx, &api),
        inputs,
        _dir: dir,
    }
}

async fn send(
    router: &Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let response = router
        .clone()
        .oneshot(b.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}

#[tokio::test]
async fn healthz_is_503_until_the_first_enforcement_then_200() {
    let s = setup(false);
    let (status, _, body) = send(&s.router, "GET", "/healthz", None, "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "starting");
    let s = setup(true);
    let (status, _, body) = send(&s.router, "GET", "/healthz", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn no_token_is_401_with_a_bearer_challenge() {
    let s = setup(true);
    let (status, headers, body) = send(&s.router, "GET", "/api/v1/containers", None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"berth\"");
    assert_eq!(body["error"], "unauthorized");
}

#[tokio::test]
async fn a_missing_permission_is_403_before_the_body_is_read() {
    let mut s = setup(true);
    let (status, _, body) = send(
        &s.router,
        "POST",
        "/api/v1/containers/web/update-image",
        Some(TOKEN),
        "not json at all",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("can_update_image"));
    assert!(s.inputs.try_recv().is_err(), "nothing reached the agent");
}

#[tokio::test]
async fn a_read_before_any_document_is_404_saying_so() {
    let s = setup(true);
    let (status, _, body) = send(&s.router, "GET", "/api/v1/containers/web", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no_document");
}

#[tokio::test]
async fn an_unknown_activity_is_404() {
    let s = setup(true);
    let (status, _, _) = send(
        &s.router,
        "GET",
        "/api/v1/activities/api-1",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_bad_last_event_id_is_400_naming_the_header() {
    let s = setup(true);
    let request = Request::builder()
        .uri("/api/v1/events")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("last-event-id", "yesterday")
        .body(Body::empty())
        .unwrap();
    let response = s.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn metrics_are_openmetrics_text_without_a_token() {
    let s = setup(true);
    let request = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let response = s.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("berth_ready 1"), "{text}");
}
