//! The OpenAPI document, generated from the handlers' annotations and the
//! request and response types, published as schemas/openapi.json.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::ErrorBody;
use super::events::{Phase, VersionUpdate};
use super::handlers;
use super::types::*;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// berth's local API.
#[derive(OpenApi)]
#[openapi(
    info(title = "berth local API", description = "Inspect and change the containers berth runs, per-token permissions; every change becomes a desired-state document."),
    paths(
        handlers::healthz,
        handlers::metrics,
        handlers::list,
        handlers::get_one,
        handlers::get_env,
        handlers::update_image,
        handlers::patch_env,
        handlers::desired_state,
        handlers::activity,
        handlers::upgrades,
        handlers::events,
    ),
    components(schemas(
        UpdateImageRequest, MutationResult, Accepted, ActivityView, EnvView, ContainerView,
        ObservedView, Setting, Health, ErrorBody, VersionUpdate, Phase, UpgradesView
    )),
    modifiers(&Bearer)
)]
pub struct ApiDoc;

/// The document, pretty-printed with a trailing newline, as checked in.
pub fn document() -> String {
    let mut text = ApiDoc::openapi().to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}
