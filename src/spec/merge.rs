//! A directory of state files as one document. Pure.
//!
//! GitOps repositories often keep one file per application. Each file must
//! be a valid document on its own (so its errors name the file), and no two
//! may describe the same container: berth would otherwise have to guess
//! which one wins, and a silent guess is how devices drift.

use std::collections::{BTreeMap, HashSet};

use super::document::{Domain, Envelope, KeyValue};
use super::limits::{self, excerpt, Bounded};
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
/// then overlaps between files; nothing is merged partially. Like a single
/// document's, the list holds the first [`limits::MAX_LISTED`] problems and
/// then one line saying how many more there were.
pub fn merge(parts: &[Part], options: &Options) -> Result<Merged, Vec<String>> {
    let mut errors: Bounded<String> = Bounded::default();
    let mut envelopes = Vec::new();
    for part in parts {
        match parse(&part.text, options) {
            Ok(accepted) => match super::decoder::envelope(&part.text) {
                Ok(envelope) => envelopes.push((part, envelope, accepted)),
                Err(e) => errors.push(format!("{}: {e}", part.name)),
            },
            Err(rejection) => {
                let ignored: Vec<String> = rejection
                    .lines()
                    .into_iter()
                    .skip(rejection.errors.len())
                    .map(|w| format!("{}: {w}", part.name))
                    .collect();
                let n = rejection.count + ignored.len();
                errors.extend_counted(
                    rejection
                        .listed()
                        .iter()
                        .map(|e| format!("{}: {e}", part.name))
                        .chain(ignored),
                    n,
                );
            }
        }
    }
    if !errors.is_empty() {
        return Err(lines(errors));
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
    let mut seen_ids: HashSet<&str> = HashSet::new();
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
        if seen_ids.insert(&envelope.activity_id) {
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
                            part.name,
                            kv.key,
                            kv.value,
                            excerpt(&seen.value)
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
        return Err(lines(errors));
    }
    merged.activity_id = activity_ids.join("+");
    merged.payload.domains.push(domain);
    let text = serde_json::to_string_pretty(&merged).map_err(|e| vec![e.to_string()])?;
    match parse(&text, options) {
        Ok(accepted) => Ok(Merged { text, accepted }),
        Err(rejection) => {
            let names = joined_names(parts);
            let mut errors = Bounded::default();
            errors.extend_counted(
                rejection
                    .listed()
                    .iter()
                    .map(|e| format!("{names} merged: {e}")),
                rejection.count,
            );
            Err(lines(errors))
        }
    }
}

fn lines(errors: Bounded<String>) -> Vec<String> {
    errors.into_lines(|n| limits::more(n, "problem"))
}

/// The files a merged document came from, for the start of each of its
/// lines: all of them when there are few, else the first two and a count,
/// so that a directory of ten thousand files does not repeat ten thousand
/// names on every line.
fn joined_names(parts: &[Part]) -> String {
    const SHOWN: usize = 4;
    let names = parts.iter().map(|p| excerpt(&p.name));
    if parts.len() <= SHOWN {
        names.collect::<Vec<_>>().join(" + ")
    } else {
        let first: Vec<_> = names.take(2).collect();
        format!("{} + {} more files", first.join(" + "), parts.len() - 2)
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

    fn numbered(n: usize, component: impl Fn(usize) -> String) -> Vec<Part> {
        (0..n)
            .map(|i| {
                let id = component(i);
                part(&format!("f{i}.json"), &format!("a{i}"), &[(&id, "nginx:1")])
            })
            .collect()
    }

    #[test]
    fn ten_thousand_files_sharing_one_id_list_a_hundred_overlaps_and_count_the_rest() {
        let e = merge(&numbered(10_000, |_| "web".into()), &Options::default()).unwrap_err();
        assert_eq!(e.len(), limits::MAX_LISTED + 1);
        assert!(
            e[0].starts_with("f1.json: component \"web\" is also in f0.json"),
            "{}",
            e[0]
        );
        assert_eq!(e[limits::MAX_LISTED], "and 9899 more problems");
    }

    #[test]
    fn ten_thousand_files_with_distinct_ids_merge_into_one_document() {
        let m = merge(&numbered(10_000, |i| format!("c{i}")), &Options::default()).unwrap();
        assert_eq!(m.accepted.desired.containers.len(), 10_000);
        assert!(m.accepted.desired.activity_id.starts_with("a0+a1+"));
    }

    #[test]
    fn the_files_errors_beyond_the_bound_are_counted_exactly() {
        let bad = |name: &str| {
            let mut p = part(name, name, &[("web", "nginx:1")]);
            let repeats = vec![r#"{"key":"privileged","value":"YES"}"#; 150].join(",");
            p.text = p.text.replace(
                r#"{"key":"image","value":"nginx:1"}"#,
                &format!(r#"{{"key":"image","value":"nginx:1"}},{repeats}"#),
            );
            p
        };
        let e = merge(&[bad("a.json"), bad("b.json")], &Options::default()).unwrap_err();
        assert_eq!(e.len(), limits::MAX_LISTED + 1);
        assert!(e[0].starts_with("a.json: "), "{}", e[0]);
        assert_eq!(e[limits::MAX_LISTED], "and 200 more problems");
    }

    #[test]
    fn problems_of_a_merge_of_many_files_name_the_first_two_and_count_the_rest() {
        let parts: Vec<Part> = (0..10)
            .map(|i| {
                let mut p = part(&format!("f{i}.json"), "a", &[(&format!("c{i}"), "nginx:1")]);
                p.text = p.text.replace(
                    r#"{"key":"image","value":"nginx:1"}"#,
                    r#"{"key":"image","value":"nginx:1"},{"key":"port","value":"8080:80"}"#,
                );
                p
            })
            .collect();
        let e = merge(&parts, &Options::default()).unwrap_err();
        assert_eq!(e.len(), 9);
        assert!(
            e[0].starts_with("f0.json + f1.json + 8 more files merged: "),
            "{}",
            e[0]
        );
    }

    #[test]
    fn the_component_limit_applies_to_the_merged_document() {
        let options = Options {
            limits: crate::spec::Limits {
                max_components: 2,
                ..Default::default()
            },
            ..Options::default()
        };
        let e = merge(&numbered(3, |i| format!("c{i}")), &options).unwrap_err();
        assert_eq!(
            e,
            ["f0.json + f1.json + f2.json merged: domains[0].components: 3 components; at most 2 (limits.max_components)"]
        );
    }
}
