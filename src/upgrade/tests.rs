use super::*;
use crate::spec;

/// A document with one component per `(id, image)`, version `1`, plus
/// settings that must survive a rewrite.
fn text(components: &[(&str, &str)]) -> String {
    let comps: Vec<serde_json::Value> = components
        .iter()
        .map(|(id, image)| {
            serde_json::json!({"id": id, "version": "1", "config": [
                {"key": "image", "value": image},
                {"key": "env", "value": "MODE=prod"},
                {"key": "restartPolicy", "value": "always"}
            ]})
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "activityId": "before",
        "timestamp": 42,
        "payload": {"domains": [{"id": "containers", "components": comps}]}
    }))
    .unwrap()
}

fn desired(text: &str) -> DesiredState {
    spec::parse(text, &Default::default()).unwrap().desired
}

fn names(moves: &[Move]) -> Vec<&str> {
    moves.iter().map(|m| m.component.as_str()).collect()
}

#[test]
fn named_components_are_the_ones_that_move() {
    let d = desired(&text(&[
        ("a", "r.io/a:1"),
        ("b", "r.io/b:1"),
        ("c", "r.io/c:1"),
    ]));
    let s = select(&d, &["a".into(), "b".into()], "2").unwrap();
    assert_eq!(names(&s.moves), ["a", "b"]);
    assert_eq!(s.others, ["c"]);
    assert_eq!(s.by_tag, None);
    assert_eq!(s.moves[0].to.to_string(), "r.io/a:2");
}

#[test]
fn without_names_the_components_on_the_most_shared_tag_move() {
    let d = desired(&text(&[
        ("a", "r.io/a:1"),
        ("b", "r.io/b:1"),
        ("c", "r.io/c:7"),
    ]));
    let s = select(&d, &[], "2").unwrap();
    assert_eq!(names(&s.moves), ["a", "b"]);
    assert_eq!(s.by_tag.as_deref(), Some("1"));
    assert_eq!(s.others, ["c"]);
}

#[test]
fn a_tie_between_tags_is_refused_naming_the_counts() {
    let d = desired(&text(&[("a", "r.io/a:1"), ("b", "r.io/b:7")]));
    let err = select(&d, &[], "2").unwrap_err().to_string();
    assert!(err.contains("tag 1: 1, tag 7: 1"), "{err}");
    assert!(err.contains("--components"), "{err}");
}

#[test]
fn an_unknown_component_is_refused_naming_it_and_the_ones_there_are() {
    let d = desired(&text(&[("a", "r.io/a:1")]));
    let err = select(&d, &["x".into()], "2").unwrap_err().to_string();
    assert_eq!(
        err,
        "--components: x is not a component of the document (it has a)"
    );
}

#[test]
fn a_version_that_is_not_a_tag_is_refused_naming_it() {
    let d = desired(&text(&[("a", "r.io/a:1")]));
    let err = select(&d, &[], "no/tag").unwrap_err().to_string();
    assert!(
        err.starts_with("version \"no/tag\" is not an image tag"),
        "{err}"
    );
}

#[test]
fn a_component_already_on_the_version_does_not_move() {
    let mut t = text(&[("a", "r.io/a:2"), ("b", "r.io/b:1")]);
    t = t.replacen("\"version\": \"1\"", "\"version\": \"2\"", 1);
    let d = desired(&t);
    let s = select(&d, &["a".into(), "b".into()], "2").unwrap();
    assert_eq!(names(&s.moves), ["b"]);
    assert_eq!(s.current, ["a"]);
}

#[test]
fn retag_keeps_the_spelling_and_replaces_a_digest() {
    assert_eq!(retag("nginx:1", "2"), "nginx:2");
    assert_eq!(retag("nginx", "2"), "nginx:2");
    assert_eq!(retag("127.0.0.1:5000/x/y:1", "2"), "127.0.0.1:5000/x/y:2");
    assert_eq!(retag("127.0.0.1:5000/x/y", "2"), "127.0.0.1:5000/x/y:2");
    let digest = format!("sha256:{}", "a".repeat(64));
    assert_eq!(retag(&format!("r.io/a:1@{digest}"), "2"), "r.io/a:2");
    assert_eq!(retag(&format!("r.io/a@{digest}"), "2"), "r.io/a:2");
}

#[test]
fn a_rewrite_changes_only_the_moved_tags_versions_and_the_activity_id() {
    let before = text(&[("a", "r.io/a:1"), ("b", "r.io/b:1"), ("c", "r.io/c:1")]);
    let d = desired(&before);
    let s = select(&d, &["a".into(), "b".into()], "2").unwrap();
    let after = rewrite(&before, &s.moves, "2", "upgrade-2").unwrap();
    let mut expected: serde_json::Value = serde_json::from_str(&before).unwrap();
    for i in 0..2 {
        let c = &mut expected["payload"]["domains"][0]["components"][i];
        let image = c["config"][0]["value"]
            .as_str()
            .unwrap()
            .replace(":1", ":2");
        c["config"][0]["value"] = image.into();
        c["version"] = "2".into();
    }
    expected["activityId"] = "upgrade-2".into();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&after).unwrap(),
        expected
    );
    assert!(after.contains('\n'), "an indented document stays indented");
}

#[test]
fn a_component_without_an_image_gets_only_its_version() {
    let before = r#"{"activityId":"x","payload":{"domains":[{"id":"containers","components":[{"id":"app","version":"1","config":[]}]}]}}"#;
    let d = desired(before);
    let s = select(&d, &[], "2").unwrap();
    assert_eq!(s.moves[0].to.to_string(), "docker.io/library/app:2");
    let after = rewrite(before, &s.moves, "2", "y").unwrap();
    assert_eq!(
        after,
        r#"{"activityId":"y","payload":{"domains":[{"components":[{"config":[],"id":"app","version":"2"}],"id":"containers"}]}}"#
    );
    assert_eq!(
        desired(&after).containers[0].config.image.tag.as_deref(),
        Some("2")
    );
}

#[test]
fn a_new_activity_id_keeps_the_rest_of_the_document() {
    let before = text(&[("a", "r.io/a:1")]);
    let after = with_activity_id(&before, "rollback-1").unwrap();
    let mut expected: serde_json::Value = serde_json::from_str(&before).unwrap();
    expected["activityId"] = "rollback-1".into();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&after).unwrap(),
        expected
    );
}
