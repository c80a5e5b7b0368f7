//! The routes. Each handler authenticates, checks the permission, reads
//! its input (naming the field at fault), and either answers from what
//! berth knows or derives a new desired document and hands it to the
//! agent's loop, exactly like a document from MQTT.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::Stream;
use tokio::sync::{broadcast, oneshot};

use super::auth::{audit, authenticate, AuthError, Permission};
use super::config::Grant;
use super::derive::{self, DeriveError};
use super::error::{parse_json, ApiError};
use super::events::{status_word, Event, Lookup};
use super::types::*;
use super::Context;
use crate::agent::{Body, Incoming, Input, Origin};
use crate::feedback::{now_ms, Feedback, Status};
use crate::registry::client::{Registry, RegistryError};
use crate::runtime::{ContainerDetails, Runtime};
use crate::spec::document::Envelope;

type Ctx<R> = State<Arc<Context<R>>>;

/// The most event streams open at once: each holds a connection and a
/// broadcast receiver; a device has a handful of local clients.
pub const MAX_EVENT_CLIENTS: i64 = 64;

/// The caller, when its token is valid and has `permission`; the refusal,
/// audited, when not.
fn caller<'a, R>(
    ctx: &'a Context<R>,
    headers: &HeaderMap,
    permission: Permission,
    endpoint: &str,
    component: &str,
) -> Result<&'a Grant, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match authenticate(&ctx.tokens, value) {
        Err(e) => {
            let outcome = match e {
                AuthError::Missing => "refused: no token",
                AuthError::Invalid => "refused: invalid token",
            };
            audit("-", endpoint, component, outcome);
            Err(ApiError::unauthorized(e.to_string()))
        }
        Ok(grant) if !permission.granted(grant) => {
            audit(
                &grant.name,
                endpoint,
                component,
                &format!("refused: no {}", permission.name()),
            );
            Err(ApiError::forbidden(format!(
                "the token '{}' does not have {}",
                grant.name,
                permission.name()
            )))
        }
        Ok(grant) => Ok(grant),
    }
}

fn derive_error(e: DeriveError) -> ApiError {
    match e {
        DeriveError::NoDocument => {
            ApiError::new(StatusCode::NOT_FOUND, "no_document", e.to_string())
        }
        DeriveError::Unreadable(_) => ApiError::internal(e.to_string()),
        DeriveError::NotDesired(_) => ApiError::not_found(e.to_string()),
        DeriveError::Field { field, problem } => ApiError::field(field, problem),
    }
}

/// The last accepted document, read from the state directory (off the
/// async runtime).
async fn last_accepted<R>(ctx: &Context<R>) -> Result<Envelope, ApiError> {
    let dir = ctx.state_dir.clone();
    let text = tokio::task::spawn_blocking(move || crate::journal::read_desired(&dir))
        .await
        .map_err(|e| ApiError::internal(format!("reading the desired state: {e}")))?
        .map_err(|e| ApiError::internal(format!("reading the desired state: {e}")))?;
    derive::base(text.as_deref()).map_err(derive_error)
}

/// Validation and the device policy, as the loop will judge the document:
/// `400` with every problem, or `403` naming the policy rules.
async fn preflight<R: Send + Sync + 'static>(
    ctx: &Arc<Context<R>>,
    base: Option<&Envelope>,
    text: &str,
) -> Result<(), ApiError> {
    let ctx2 = ctx.clone();
    let text = text.to_string();
    let base_text = base.and_then(|b| serde_json::to_string(b).ok());
    tokio::task::spawn_blocking(move || {
        let accepted = crate::spec::parse(&text, &ctx2.spec).map_err(|rejection| {
            let problems: Vec<String> = rejection
                .errors
                .iter()
                .map(|e| ctx2.redactor.text(&e.to_string()).into_owned())
                .collect();
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_document",
                format!(
                    "the desired state would be invalid: {}",
                    problems.join("; ")
                ),
            )
            .with_problems(problems)
        })?;
        let baseline = base_text
            .and_then(|t| crate::spec::parse(&t, &ctx2.spec).ok())
            .map_or_else(crate::policy::EnvBaseline::none, |b| {
                crate::policy::EnvBaseline::from_desired(&b.desired)
            });
        ctx2.policy
            .check(
                &accepted.desired,
                &baseline,
                &ctx2.system_containers,
                &crate::policy::RealHostPaths,
            )
            .map_err(|refusal| {
                let lines = refusal.lines();
                ApiError::forbidden(format!(
                    "the device policy refuses it: {}",
                    lines.join("; ")
                ))
                .with_problems(lines)
            })
    })
    .await
    .map_err(|e| ApiError::internal(format!("checking the document: {e}")))?
}

/// Sends a document to the loop and waits until it is persisted (or
/// refused). Returns the live feed, subscribed before sending so nothing
/// about the activity is missed.
async fn submit<R>(
    ctx: &Context<R>,
    activity_id: &str,
    text: String,
) -> Result<broadcast::Receiver<Arc<Event>>, ApiError> {
    let live = ctx.hub.subscribe(None).live;
    let (ack, acked) = oneshot::channel();
    ctx.hub
        .metrics
        .documents
        .get_or_create(&super::metrics::Source {
            origin: "api".into(),
        })
        .inc();
    ctx.inputs
        .send(Input::Document(Incoming::new(
            Origin::Api,
            Body::Text(text),
            Some(ack),
        )))
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the agent is shutting down",
            )
        })?;
    match tokio::time::timeout(ctx.accept_timeout, acked).await {
        Ok(Ok(())) => {
            ctx.hub.queued(activity_id);
            Ok(live)
        }
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_persisted",
            "the agent could not persist the document (see its feedback); nothing was changed",
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the agent did not take the document in time (it may be recovering); it may still apply it",
        )),
    }
}

/// Waits for the activity's final feedback.
async fn wait_final<R>(
    ctx: &Context<R>,
    mut live: broadcast::Receiver<Arc<Event>>,
    activity_id: &str,
) -> Result<Arc<Feedback>, ApiError> {
    let wait = async {
        loop {
            match live.recv().await {
                Ok(e) => {
                    if let Some(f) = &e.feedback {
                        if f.activity_id == activity_id && f.payload.status.is_final() {
                            return Some(f.clone());
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if let Some(f) = ctx.hub.activity(activity_id) {
                        if f.payload.status.is_final() {
                            return Some(f);
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    };
    match tokio::time::timeout(ctx.wait_timeout, wait).await {
        Ok(Some(f)) => Ok(f),
        Ok(None) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the agent stopped before the activity ended",
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("{activity_id} did not end in time; poll /api/v1/activities/{activity_id}"),
        )),
    }
}

fn location(activity_id: &str) -> String {
    format!("/api/v1/activities/{activity_id}")
}

fn accepted(activity_id: &str, note: Option<String>) -> Response {
    let loc = location(activity_id);
    let mut r = (
        StatusCode::ACCEPTED,
        Json(Accepted {
            activity_id: activity_id.to_string(),
            location: loc.clone(),
            note,
        }),
    )
        .into_response();
    if let Ok(v) = header::HeaderValue::from_str(&loc) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

impl<R> Context<R> {
    /// The remark every API change gets on a device fed by state files.
    fn note(&self) -> Option<String> {
        self.files.as_ref().map(|p| {
            format!(
                "this device reads its desired state from {}: the next change there replaces this API change",
                p.display()
            )
        })
    }
}

async fn container_id<R: Runtime>(ctx: &Context<R>, name: &str) -> Option<String> {
    ctx.rt.inspect(name).await.ok().flatten().map(|d| d.id)
}

/// What a mutation answers once its activity ended: `200` when it
/// completed, `409` when it did not (rolled back, superseded, refused).
fn finished(mut result: MutationResult, f: &Feedback) -> Response {
    result.success = f.payload.status == Status::Completed;
    result.status = status_word(f.payload.status);
    result.message = f.payload.message.clone().or_else(|| {
        f.payload
            .actions
            .iter()
            .filter_map(|a| a.message.clone())
            .next_back()
    });
    let code = if result.success {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    (code, Json(result)).into_response()
}

/// Readiness: ready once recovery ran and the desired state was first
/// enforced (no token needed).
#[utoipa::path(tag = "berth", get, path = "/healthz", responses(
    (status = 200, description = "Recovery ran and the desired state was first enforced", body = Health),
    (status = 503, description = "Still starting", body = Health)))]
pub async fn healthz<R>(State(ctx): Ctx<R>) -> Response {
    if *ctx.ready.borrow() {
        (
            StatusCode::OK,
            Json(Health {
                status: "ready".into(),
            }),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "starting".into(),
            }),
        )
            .into_response()
    }
}

/// Prometheus metrics in the OpenMetrics text format (no token needed).
#[utoipa::path(tag = "berth", get, path = "/metrics", responses(
    (status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text")))]
pub async fn metrics<R: Runtime + 'static>(State(ctx): Ctx<R>) -> Response {
    ctx.hub.metrics.ready.set(i64::from(*ctx.ready.borrow()));
    if let Ok(list) = ctx.rt.list().await {
        let mut by_state: BTreeMap<String, i64> = BTreeMap::new();
        for c in list.iter().filter(|c| {
            c.labels.get(crate::labels::INSTANCE).map(String::as_str) == Some(ctx.instance.as_str())
        }) {
            *by_state
                .entry(c.state.status.as_str().to_string())
                .or_default() += 1;
        }
        ctx.hub.metrics.containers.clear();
        for (state, n) in by_state {
            ctx.hub
                .metrics
                .containers
                .get_or_create(&super::metrics::State { state })
                .set(n);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.hub.metrics.encode(),
    )
        .into_response()
}

/// The inventory, as `berth state --json` gives it, secrets redacted.
#[utoipa::path(tag = "berth", get, path = "/api/v1/containers", security(("bearer" = [])), responses(
    (status = 200, description = "Kanto's current-state message (schemas/current-state.schema.json), secrets redacted", body = Object),
    (status = 401, description = "No valid bearer token", body = super::error::ErrorBody), (status = 403, description = "The token lacks the permission", body = super::error::ErrorBody)))]
pub async fn list<R: Runtime + 'static>(
    State(ctx): Ctx<R>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller(
        &ctx,
        &headers,
        Permission::Inspect,
        "GET /api/v1/containers",
        "-",
    )?;
    let observed = crate::observe::gather(&*ctx.rt, &[], &[])
        .await
        .map_err(|e| engine_error(&ctx, &e.to_string()))?;
    let images = crate::observe::images_of(&*ctx.rt, &observed)
        .await
        .map_err(|e| engine_error(&ctx, &e.to_string()))?;
    let options = crate::inventory::InventoryOptions {
        redact: ctx.redactor.patterns().to_vec(),
        ..Default::default()
    };
    let ms = now_ms();
    let state = crate::inventory::build(
        &observed,
        &images,
        &format!("current-state-{ms}"),
        ms,
        &options,
    );
    Ok(Json(state).into_response())
}

fn engine_error<R>(ctx: &Context<R>, e: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "engine",
        format!("the Docker engine: {}", ctx.redactor.text(e)),
    )
}

fn observed_view<R>(ctx: &Context<R>, d: &ContainerDetails, secrets: bool) -> ObservedView {
    ObservedView {
        container_id: d.id.clone(),
        image: d.image_ref.clone(),
        image_id: d.image_id.clone(),
        state: d.state.status.as_str().to_string(),
        started_at: d.state.started_at.clone(),
        env: d
            .env
            .iter()
            .map(|e| {
                if secrets {
                    e.clone()
                } else {
                    ctx.redactor.env_entry(e).into_owned()
                }
            })
            .collect(),
        mounts: d
            .mounts
            .iter()
            .map(|m| {
                format!(
                    "{}:{}",
                    m.name.clone().unwrap_or_else(|| m.source.clone()),
                    m.destination
                )
            })
            .collect(),
    }
}

/// One component: its desired settings, what the engine runs, its status.
#[utoipa::path(tag = "berth", get, path = "/api/v1/containers/{id}", security(("bearer" = [])),
    params(("id" = String, Path, description = "The component id (container name)")),
    responses((status = 200, description = "Desired and observed settings, secrets redacted", body = ContainerView),
        (status = 404, description = "Not in the desired state", body = super::error::ErrorBody),
        (status = 401, description = "No valid bearer token", body = super::error::ErrorBody), (status = 403, description = "The token lacks the permission", body = super::error::ErrorBody)))]
pub async fn get_one<R: Runtime + 'static>(
    State(ctx): Ctx<R>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let grant = caller(
        &ctx,
        &headers,
        Permission::Inspect,
        "GET /api/v1/containers/{id}",
        &id,
    )?;
    let doc = last_accepted(&ctx).await?;
    let c = derive::component(&doc, &ctx.spec.domain, &id)
        .ok_or_else(|| derive_error(DeriveError::NotDesired(id.clone())))?;
    let desired = c
        .config
        .iter()
        .map(|kv| Setting {
            key: kv.key.clone(),
            value: if kv.key == "env" && !grant.can_read_secrets {
                ctx.redactor.env_entry(&kv.value).into_owned()
            } else if grant.can_read_secrets {
                kv.value.clone()
            } else {
                ctx.redactor.text(&kv.value).into_owned()
            },
        })
        .collect();
    let details = ctx
        .rt
        .inspect(&id)
        .await
        .map_err(|e| engine_error(&ctx, &e.to_string()))?;
    let status = details.as_ref().map_or_else(
        || "missing".to_string(),
        |d| d.state.status.as_str().to_string(),
    );
    Ok(Json(ContainerView {
        id: id.clone(),
        version: c.version.clone(),
        desired,
        observed: details
            .as_ref()
            .map(|d| observed_view(&ctx, d, grant.can_read_secrets)),
        status,
    })
    .into_response())
}

/// The environment the component's container runs with.
#[utoipa::path(tag = "berth", get, path = "/api/v1/containers/{id}/env", security(("bearer" = [])),
    params(("id" = String, Path, description = "The component id")),
    responses((status = 200, description = "The container's environment", body = EnvView),
        (status = 404, description = "Not in the desired state, or no container runs it", body = super::error::ErrorBody),
        (status = 401, description = "No valid bearer token", body = super::error::ErrorBody), (status = 403, description = "The token lacks the permission", body = super::error::ErrorBody)))]
pub async fn get_env<R: Runtime + 'static>(
    State(ctx): Ctx<R>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let grant = caller(
        &ctx,
        &headers,
        Permission::Inspect,
        "GET /api/v1/containers/{id}/env",
        &id,
    )?;
    let doc = last_accepted(&ctx).await?;
    if derive::component(&doc, &ctx.spec.domain, &id).is_none() {
        return Err(derive_error(DeriveError::NotDesired(id)));
    }
    let details = ctx
        .rt
        .inspect(&id)
        .await
        .map_err(|e| engine_error(&ctx, &e.to_string()))?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "{id} is desired but no container runs under that name yet"
            ))
        })?;
    let mut env = BTreeMap::new();
    let mut redacted = Vec::new();
    for entry in &details.env {
        let (name, value) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
        let shown = if grant.can_read_secrets {
            value.to_string()
        } else {
            let v = ctx.redactor.env_value(name, value);
            if v != value {
                redacted.push(name.to_string());
            }
            v.into_owned()
        };
        env.insert(name.to_string(), shown);
    }
    Ok(Json(EnvView {
        id,
        container_id: details.id,
        env,
        redacted,
    })
    .into_response())
}

/// Rolls one component to another image tag (kept volumes and networks).
#[utoipa::path(tag = "berth", post, path = "/api/v1/containers/{id}/update-image", security(("bearer" = [])),
    params(("id" = String, Path, description = "The component id"), WaitQuery),
    request_body = UpdateImageRequest,
    responses(
        (status = 200, description = "The activity completed", body = MutationResult),
        (status = 202, description = "With ?wait=false: accepted; poll the Location", body = Accepted),
        (status = 400, description = "Malformed JSON, an unknown field, a bad tag", body = super::error::ErrorBody),
        (status = 401, description = "No valid bearer token", body = super::error::ErrorBody),
        (status = 403, description = "Not in allowed_images, or refused by the device policy", body = super::error::ErrorBody),
        (status = 404, description = "Not in the desired state", body = super::error::ErrorBody),
        (status = 409, description = "The activity did not complete (rolled back, superseded)", body = MutationResult),
        (status = 422, description = "The tag does not exist; nothing was changed", body = super::error::ErrorBody)))]
pub async fn update_image<R: Runtime + 'static>(
    State(ctx): Ctx<R>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    const ENDPOINT: &str = "POST /api/v1/containers/{id}/update-image";
    let grant = caller(&ctx, &headers, Permission::UpdateImage, ENDPOINT, &id)?;
    let outcome = |o: &str| audit(&grant.name, ENDPOINT, &id, o);
    let result = update_image_as(&ctx, grant, &id, q, &body).await;
    match &result {
        Ok(r) => outcome(&format!("answered {}", r.status())),
        Err(e) => outcome(&format!(
            "refused {}: {}",
            e.status.as_u16(),
            ctx.redactor.text(&e.body.message)
        )),
    }
    result
}

async fn update_image_as<R: Runtime + 'static>(
    ctx: &Arc<Context<R>>,
    grant: &Grant,
    id: &str,
    q: WaitQuery,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: UpdateImageRequest = parse_json(body)?;
    if !req.preserve_volumes {
        return Err(ApiError::field(
            "preserveVolumes",
            "false is not supported: berth always keeps a component's volumes; drop a volume with a whole document",
        ));
    }
    if !req.preserve_networks {
        return Err(ApiError::field(
            "preserveNetworks",
            "false is not supported: berth always keeps a component's networks; change them with a whole document",
        ));
    }
    let image = derive::image_reference(&req.image, &req.tag).map_err(derive_error)?;
    let canonical = image.to_string();
    let written = format!("{}:{}", req.image, req.tag);
    if !grant.allows_image(&canonical) && !grant.allows_image(&written) {
        return Err(ApiError::forbidden(format!(
            "{written} is not in allowed_images of the token '{}' ({})",
            grant.name,
            grant.allowed_images.join(", ")
        )));
    }
    // A component that is not desired is a 404 whatever the tag; the
    // registry may be slow, so it is asked before other mutations are held
    // up (the document is read again under the lock).
    if derive::component(&last_accepted(ctx).await?, &ctx.spec.domain, id).is_none() {
        return Err(derive_error(DeriveError::NotDesired(id.to_string())));
    }
    tag_exists(ctx, &image).await?;
    let _one_at_a_time = ctx.mutation.lock().await;
    let base = last_accepted(ctx).await?;
    let activity_id = derive::activity_id(now_ms(), &ctx.last_activity);
    let doc = derive::update_image(base.clone(), &ctx.spec.domain, id, &image, &activity_id)
        .map_err(derive_error)?;
    let text = serde_json::to_string(&doc).map_err(|e| ApiError::internal(e.to_string()))?;
    preflight(ctx, Some(&base), &text).await?;
    let old = container_id(ctx, id).await;
    let live = submit(ctx, &activity_id, text).await?;
    drop(_one_at_a_time);
    if q.wait == Some(false) {
        return Ok(accepted(&activity_id, ctx.note()));
    }
    let f = wait_final(ctx, live, &activity_id).await?;
    Ok(finished(
        MutationResult {
            success: false,
            activity_id,
            old_container_id: old,
            new_container_id: container_id(ctx, id).await,
            image: Some(canonical),
            status: String::new(),
            message: None,
            note: ctx.note(),
            env: None,
        },
        &f,
    ))
}

/// A missing tag fails here, before anything is touched: the engine's
/// local images first (a device may run images loaded without a registry),
/// then the registry.
async fn tag_exists<R: Runtime>(
    ctx: &Context<R>,
    image: &crate::spec::image::ImageRef,
) -> Result<(), ApiError> {
    let reference = image.to_string();
    if let Ok(Some(_)) = ctx.rt.image(&reference).await {
        return Ok(());
    }
    match ctx.registry.manifest(image).await {
        Ok(_) => Ok(()),
        Err(RegistryError::NotFound(_)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "tag_not_found",
            format!("{reference} does not exist in its registry; nothing was changed"),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "registry",
            format!(
                "cannot confirm {reference} exists ({}); nothing was changed",
                ctx.redactor.text(&e.to_string())
            ),
        )),
    }
}

/// Changes a component's env with a JSON merge patch and recreates it.
#[utoipa::path(tag = "berth", patch, path = "/api/v1/containers/{id}/env", security(("bearer" = [])),
    params(("id" = String, Path, description = "The component id"), WaitQuery),
    request_body(content = Object, description = "A JSON merge patch: {\"NAME\": \"value\", \"OLD\": null}", content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The activity completed", body = MutationResult),
        (status = 202, description = "With ?wait=false: accepted; poll the Location", body = Accepted),
        (status = 400, description = "Malformed JSON or a bad value, the field named", body = super::error::ErrorBody),
        (status = 401, description = "No valid bearer token", body = super::error::ErrorBody),
        (status = 403, description = "No can_update_env, or refused by the device policy", body = super::error::ErrorBody),
        (status = 404, description = "Not in the desired state, or no container runs it", body = super::error::ErrorBody),
        (status = 409, description = "The activity did not complete (rolled back, superseded)", body = MutationResult)))]
pub async fn patch_env<R: Runtime + 'static>(
    State(ctx): Ctx<R>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    const ENDPOINT: &str = "PATCH /api/v1/containers/{id}/env";
    let grant = caller(&ctx, &headers, Permission::UpdateEnv, ENDPOINT, &id)?;
    let result = patch_env_as(&ctx, grant, &id, q, &body).await;
    match &result {
        Ok(r) => audit(
            &grant.name,
            ENDPOINT,
            &id,
            &format!("answered {}", r.status()),
        ),
        Err(e) => audit(
            &grant.name,
            ENDPOINT,
            &id,
            &format!(
                "refused {}: {}",
                e.status.as_u16(),
                ctx.redactor.text(&e.body.message)
            ),
        ),
    }
    result
}

async fn patch_env_as<R: Runtime + 'static>(
    ctx: &Arc<Context<R>>,
    grant: &Grant,
    id: &str,
    q: WaitQuery,
    body: &[u8],
) -> Result<Response, ApiError> {
    let patch: serde_json::Value = parse_json(body)?;
    let _one_at_a_time = ctx.mutation.lock().await;
    let base = last_accepted(ctx).await?;
    let activity_id = derive::activity_id(now_ms(), &ctx.last_activity);
    let doc = derive::patch_env(base.clone(), &ctx.spec.domain, id, &patch, &activity_id).map_err(
        |e| match e {
            DeriveError::Field { field, problem } if field != "body" => {
                ApiError::field(format!("env.{field}"), problem)
            }
            e => derive_error(e),
        },
    )?;
    let text = serde_json::to_string(&doc).map_err(|e| ApiError::internal(e.to_string()))?;
    preflight(ctx, Some(&base), &text).await?;
    let env = derive::component(&doc, &ctx.spec.domain, id).map(|c| {
        derive::desired_env(c)
            .into_iter()
            .map(|(n, v)| {
                let v = match v {
                    Some(v) if !grant.can_read_secrets => {
                        Some(ctx.redactor.env_value(&n, &v).into_owned())
                    }
                    v => v,
                };
                (n, v)
            })
            .collect()
    });
    let old = container_id(ctx, id).await;
    let live = submit(ctx, &activity_id, text).await?;
    drop(_one_at_a_time);
    if q.wait == Some(false) {
        return Ok(accepted(&activity_id, ctx.note()));
    }
    let f = wait_final(ctx, live, &activity_id).await?;
    Ok(finished(
        MutationResult {
            success: false,
            activity_id,
            old_container_id: old,
            new_container_id: container_id(ctx, id).await,
            image: None,
            status: String::new(),
            message: None,
            note: ctx.note(),
            env,
        },
        &f,
    ))
}

/// Applies a whole desired-state document, the same path as MQTT.
#[utoipa::path(tag = "berth", post, path = "/api/v1/desired-state", security(("bearer" = [])),
    params(WaitQuery),
    request_body(content = Object, description = "A desired-state document (schemas/desired-state.schema.json)"),
    responses(
        (status = 200, description = "The activity completed", body = MutationResult),
        (status = 202, description = "With ?wait=false: accepted; poll the Location", body = Accepted),
        (status = 400, description = "Not a valid document; every problem listed", body = super::error::ErrorBody),
        (status = 401, description = "No valid bearer token", body = super::error::ErrorBody),
        (status = 403, description = "No can_apply, or refused by the device policy", body = super::error::ErrorBody),
        (status = 409, description = "The activity did not complete (rolled back, superseded)", body = MutationResult)))]
pub async fn desired_state<R: Runtime + 'static>(
    State(ctx): Ctx<R>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    const ENDPOINT: &str = "POST /api/v1/desired-state";
    let grant = caller(&ctx, &headers, Permission::Apply, ENDPOINT, "-")?;
    let result = apply_as(&ctx, q, &body).await;
    match &result {
        Ok(r) => audit(
            &grant.name,
            ENDPOINT,
            "-",
            &format!("answered {}", r.status()),
        ),
        Err(e) => audit(
            &grant.name,
            ENDPOINT,
            "-",
            &format!(
                "refused {}: {}",
                e.status.as_u16(),
                ctx.redactor.text(&e.body.message)
            ),
        ),
    }
    result
}

async fn apply_as<R: Runtime + 'static>(
    ctx: &Arc<Context<R>>,
    q: WaitQuery,
    body: &[u8],
) -> Result<Response, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::field("body", "is not UTF-8"))?
        .to_string();
    let doc: Envelope = parse_json(body)?;
    let activity_id = doc.activity_id.clone();
    let _one_at_a_time = ctx.mutation.lock().await;
    let base = last_accepted(ctx).await.ok();
    preflight(ctx, base.as_ref(), &text).await?;
    let live = submit(ctx, &activity_id, text).await?;
    drop(_one_at_a_time);
    if q.wait == Some(false) {
        return Ok(accepted(&activity_id, ctx.note()));
    }
    let f = wait_final(ctx, live, &activity_id).await?;
    Ok(finished(
        MutationResult {
            success: false,
            activity_id,
            old_container_id: None,
            new_container_id: None,
            image: None,
            status: String::new(),
            message: None,
            note: ctx.note(),
            env: None,
        },
        &f,
    ))
}

/// What the agent's periodic registry check found last (`check_interval`),
/// the same report it publishes on `containersupdate/upgrades`.
#[utoipa::path(tag = "berth", get, path = "/api/v1/upgrades", security(("bearer" = [])),
    responses((status = 200, description = "The last check's report, or null", body = UpgradesView)))]
pub async fn upgrades<R>(State(ctx): Ctx<R>, headers: HeaderMap) -> Result<Response, ApiError> {
    caller(
        &ctx,
        &headers,
        Permission::Inspect,
        "GET /api/v1/upgrades",
        "",
    )?;
    let report = ctx.hub.upgrades().map(|r| (*r).clone());
    Ok(Json(UpgradesView { report }).into_response())
}

/// An activity's latest feedback, to poll after `?wait=false`.
#[utoipa::path(tag = "berth", get, path = "/api/v1/activities/{id}", security(("bearer" = [])),
    params(("id" = String, Path, description = "The activity id")),
    responses((status = 200, description = "The latest feedback", body = ActivityView),
        (status = 404, description = "Unknown, or no longer remembered", body = super::error::ErrorBody)))]
pub async fn activity<R>(
    State(ctx): Ctx<R>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller(
        &ctx,
        &headers,
        Permission::Inspect,
        "GET /api/v1/activities/{id}",
        &id,
    )?;
    match ctx.hub.lookup(&id) {
        Lookup::Feedback(f) => Ok(Json(ActivityView {
            activity_id: id,
            status: status_word(f.payload.status),
            done: f.payload.status.is_final(),
            feedback: serde_json::to_value(&*f).unwrap_or_default(),
        })
        .into_response()),
        Lookup::Queued => Ok(Json(ActivityView {
            activity_id: id,
            status: "QUEUED".into(),
            done: false,
            feedback: serde_json::Value::Null,
        })
        .into_response()),
        Lookup::Unknown => Err(ApiError::not_found(format!(
            "{id} is unknown, or too old to be remembered (the last {} activities are)",
            super::events::ACTIVITIES_KEPT
        ))),
    }
}

fn sse(e: &Event) -> SseEvent {
    SseEvent::default()
        .id(e.id.to_string())
        .event(e.name)
        .data(e.data.clone())
}

fn reset(why: String) -> SseEvent {
    SseEvent::default()
        .event("reset")
        .data(serde_json::json!({ "reason": why }).to_string())
}

/// Server-sent events: feedback and per-container version updates.
#[utoipa::path(tag = "berth", get, path = "/api/v1/events", security(("bearer" = [])),
    params(EventsQuery, ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event")),
    responses((status = 200, description = "text/event-stream: `feedback` events (Kanto's desiredstatefeedback message), `version-update` events (VersionUpdate), `reset` when events were missed", content_type = "text/event-stream", body = super::events::VersionUpdate)))]
pub async fn events<R: Send + Sync + 'static>(
    State(ctx): Ctx<R>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    caller(
        &ctx,
        &headers,
        Permission::Inspect,
        "GET /api/v1/events",
        "-",
    )?;
    if ctx.hub.metrics.event_clients.get() >= MAX_EVENT_CLIENTS {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_clients",
            format!("{MAX_EVENT_CLIENTS} event streams are open already; close one"),
        ));
    }
    let header_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| ApiError::field("Last-Event-ID", "must be an event id (a number)"))
        })
        .transpose()?;
    let sub = ctx.hub.subscribe(header_id.or(q.last_event_id));
    let mut first: Vec<SseEvent> = Vec::new();
    if sub.missed {
        first.push(reset(
            "events after the given Last-Event-ID are no longer buffered; read the state again"
                .into(),
        ));
    }
    first.extend(sub.replay.iter().map(|e| sse(e)));
    let guard = ClientGauge::new(ctx.clone());
    let live = futures_util::stream::unfold((sub.live, guard), |(mut live, guard)| async move {
        let item = match live.recv().await {
            Ok(e) => sse(&e),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                guard.0.hub.metrics.events_lagged.inc_by(n);
                reset(format!(
                    "this client was too slow and missed {n} events; resume with Last-Event-ID or read the state again"
                ))
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(item), (live, guard)))
    });
    let stream =
        futures_util::StreamExt::chain(futures_util::stream::iter(first.into_iter().map(Ok)), live);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Counts a connected event client while it lives.
struct ClientGauge<R>(Arc<Context<R>>);

impl<R> ClientGauge<R> {
    fn new(ctx: Arc<Context<R>>) -> Self {
        ctx.hub.metrics.event_clients.inc();
        Self(ctx)
    }
}

impl<R> Drop for ClientGauge<R> {
    fn drop(&mut self) {
        self.0.hub.metrics.event_clients.dec();
    }
}
