//! Helpers shared by the unit tests of the planner and the executor.

use std::future::Future;

use crate::spec::{self, DesiredState};

/// Runs a future to completion on a fresh single-threaded runtime.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// A document's text: one component (version `1`) per `(id, config)` in
/// `domain`.
pub fn document_in(domain: &str, activity: &str, components: &[(&str, &[(&str, &str)])]) -> String {
    let comps: Vec<serde_json::Value> = components
        .iter()
        .map(|(id, config)| {
            let config: Vec<serde_json::Value> = config
                .iter()
                .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
                .collect();
            serde_json::json!({"id": id, "version": "1", "config": config})
        })
        .collect();
    serde_json::json!({
        "activityId": activity,
        "payload": {"domains": [{"id": domain, "components": comps}]}
    })
    .to_string()
}

/// A validated document: one component (version `1`) per `(id, config)`.
pub fn desired(activity: &str, components: &[(&str, &[(&str, &str)])]) -> DesiredState {
    let text = document_in(spec::validate::DEFAULT_DOMAIN, activity, components);
    match spec::parse(&text, &Default::default()) {
        Ok(a) => a.desired,
        Err(r) => panic!("{r}"),
    }
}

/// The test service image as the engine describes it: a default env and
/// command, and an anonymous volume at `/data`.
pub fn service_image(id: &str) -> crate::runtime::ImageDetails {
    crate::runtime::ImageDetails {
        id: format!("sha256:{id:0>64}"),
        env: vec!["PATH=/bin".into()],
        cmd: Some(vec!["/bin/service".into()]),
        volumes: vec!["/data".into()],
        ..Default::default()
    }
}
