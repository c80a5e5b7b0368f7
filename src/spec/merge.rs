//! A directory of state files as one document. Pure.
//!
//! GitOps repositories often keep one file per application. Each file must
//! be a valid document on its own (so its errors name the file), and no two
//! may describe the same container: berth would otherwise have to guess
//! which one wins, and a silent guess is how devices drift.

use std::collections::BTreeMap;

use super::document::{Domain, Envelope, KeyValue};
use super::validate::{parse, Accepted, Options};

/// One state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The file's name, for messages.
    pub name: String,
    /// Its contents.
    pub text: String,
}

/// The documents merged, as text (what berth persists) and accepted.
#[derive(Debug, Clone)]
pub struct Merged {
    /// One document holding every file's containers.
    pub text: String,
    /// The validated result.
    pub accepted: Accepted,
}

/// Merges the files' documents. A single file is taken as it is.
///
/// # Errors
/// Every problem of every file, each line starting with the file's name,
/// then overlaps between files; nothing is merged partially.
pub fn merge(parts: &[Part], options: &Options) -> Result<Merged, Vec<String>> {
    let mut errors = Vec::new();
    let mut envelopes = Vec::new();
    for part in parts {
        match parse(&part.text, options) {
            Ok(accepted) => match serde_json::from_str::<Envelope>(&part.text) {
                Ok(envelope) => envelopes.push((part, envelope, accepted)),
                Err(e) => errors.push(format!("{}: {e}", part.name)),
            },
            Err(rejection) => errors.extend(
                rejection
                    .errors
                    .iter()
                    .map(|e| format!("{}: {e}", part.name)),
            ),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if let [(part, _, accepted)] = envelopes.as_slice() {
        return Ok(Merged {
            text: part.text.clone(),
            accepted: accepted.clone(),
        });
    }
    if envelopes.is_empty() {
        return Err(vec!["no state files".into()]);
    }

    let mut owner: BTreeMap<String, &str> = BTreeMap::new();
    let mut system: Option<(&str, &KeyValue)> = None;
    let mut activity_ids: Vec<&str> = Vec::new();
    let mut merged = Envelope {
        activity_id: String::new(),
        timestamp: None,
        payload: Default::default(),
    };
    let mut domain = Domain {
        id: options.domain.clone(),
        config: Vec::new(),
        components: Vec::new(),
    };
    for (part, envelope, _) in &envelopes {
        if !activity_ids.contains(&envelope.activity_id.as_str()) {
            activity_ids.push(&envelope.activity_id);
        }
        merged.timestamp = merged.timestamp.max(envelope.timestamp);
        merged
            .payload
            .baselines
            .extend(envelope.payload.baselines.iter().cloned());
        // Validation accepted exactly one domain, ours.
        for d in &envelope.payload.domains {
            for kv in &d.config {
                match system {
                    Some((first, seen)) if seen.value != kv.value || seen.key != kv.key => {
                        errors.push(format!(
                            "{}: domain config \"{}\" = \"{}\" differs from {first}'s \"{}\"; set it in one file only",
                            part.name, kv.key, kv.value, seen.value
                        ));
                    }
                    Some(_) => {}
                    None => {
                        system = Some((&part.name, kv));
                        domain.config.push(kv.clone());
                    }
                }
            }
            for c in &d.components {
                match owner.get(&c.id) {
                    Some(first) => errors.push(format!(
                        "{}: component \"{}\" is also in {first}; the files of a directory must not share component ids",
                        part.name, c.id
                    )),
                    None => {
                        owner.insert(c.id.clone(), &part.name);
                        domain.components.push(c.clone());
                    }
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    merged.activity_id = activity_ids.join("+");
    merged.payload.domains.push(domain);
    let text = serde_json::to_string_pretty(&merged).map_err(|e| vec![e.to_string()])?;
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    match parse(&text, options) {
        Ok(accepted) => Ok(Merged { text, accepted }),
        Err(rejection) => Err(rejection
            .errors
            .iter()
            .map(|e| format!("{} merged: {e}", names.join(" + ")))
            .collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &str, activity: &str, components: &[(&str, &str)]) -> Part {
        let components: Vec<String> = components
            .iter()
            .map(|(id, image)| {
                format!(
                    r#"{{"id":"{id}","version":"1","config":[{{"key":"image","value":"{image}"}}]}}"#
                )
            })
            .collect();
        Part {
            name: name.into(),
            text: format!(
                r#"{{"activityId":"{activity}","payload":{{"domains":[{{"id":"containers","components":[{}]}}]}}}}"#,
                components.join(",")
            ),
        }
    }

    fn names(m: &Merged) -> Vec<&str> {
        m.accepted
            .desired
            .containers
            .iter()
            .map(|c| c.name.as_str())
            .collect()
    }

    #[test]
    fn a_single_file_is_taken_verbatim() {
        let p = part("a.json", "a", &[("web", "nginx:1")]);
        let m = merge(std::slice::from_ref(&p), &Options::default()).unwrap();
        assert_eq!(m.text, p.text);
        assert_eq!(names(&m), ["web"]);
    }

    #[test]
    fn files_with_distinct_components_merge_in_file_order() {
        let m = merge(
            &[
                part("a.json", "a", &[("web", "nginx:1")]),
                part(
                    "b.json",
                    "b",
                    &[("db", "postgres:16"), ("cache", "redis:7")],
                ),
            ],
            &Options::default(),
        )
        .unwrap();
        assert_eq!(names(&m), ["web", "db", "cache"]);
        assert_eq!(m.accepted.desired.activity_id, "a+b");
    }

    #[test]
    fn the_merged_text_is_a_valid_document_itself() {
        let m = merge(
            &[
                part("a.json", "a", &[("web", "nginx:1")]),
                part("b.json", "b", &[("db", "postgres:16")]),
            ],
            &Options::default(),
        )
        .unwrap();
        let again = parse(&m.text, &Options::default()).unwrap();
        assert_eq!(again.desired, m.accepted.desired);
    }

    #[test]
    fn overlapping_component_ids_are_refused_naming_both_files() {
        let e = merge(
            &[
                part("a.json", "a", &[("web", "nginx:1")]),
                part("b.json", "b", &[("web", "nginx:2")]),
            ],
            &Options::default(),
        )
        .unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("b.json:") && e[0].contains("also in a.json"),
            "{e:?}"
        );
    }

    #[test]
    fn each_files_errors_are_named_by_file() {
        let mut bad = part("b.json", "b", &[("db", "postgres:16")]);
        bad.text = bad.text.replace("\"image\"", "\"imag\"");
        let e = merge(
            &[part("a.json", "a", &[("web", "nginx:1")]), bad],
            &Options::default(),
        )
        .unwrap_err();
        assert!(e.iter().all(|m| m.starts_with("b.json: ")), "{e:?}");
        assert!(e.iter().any(|m| m.contains("imag")), "{e:?}");
    }

    #[test]
    fn a_file_that_is_not_json_is_named() {
        let e = merge(
            &[
                part("a.json", "a", &[("web", "nginx:1")]),
                Part {
                    name: "b.json".into(),
                    text: "{".into(),
                },
            ],
            &Options::default(),
        )
        .unwrap_err();
        assert!(e[0].starts_with("b.json: "), "{e:?}");
    }

    #[test]
    fn conflicting_system_containers_are_refused() {
        let with_system = |name: &str, id: &str, system: &str| {
            let mut p = part(name, name, &[(id, "nginx:1")]);
            p.text = p.text.replace(
                r#""id":"containers","#,
                &format!(
                    r#""id":"containers","config":[{{"key":"systemContainers","value":"{system}"}}],"#
                ),
            );
            p
        };
        let e = merge(
            &[
                with_system("a.json", "web", "agent"),
                with_system("b.json", "db", "broker"),
            ],
            &Options::default(),
        )
        .unwrap_err();
        assert!(e[0].contains("differs from a.json"), "{e:?}");
        let ok = merge(
            &[
                with_system("a.json", "web", "agent"),
                with_system("b.json", "db", "agent"),
            ],
            &Options::default(),
        )
        .unwrap();
        assert_eq!(
            ok.accepted.desired.system_containers,
            Some(vec!["agent".to_string()])
        );
    }

    #[test]
    fn an_empty_directory_is_not_a_document() {
        assert!(merge(&[], &Options::default()).is_err());
    }
}
