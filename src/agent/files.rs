//! The file source: a state file, or a directory of them, looked at every
//! `poll_interval`. Any change (a write, an atomic rename, a new or removed
//! file) produces a document for the loop; a missing path produces
//! nothing, since "no file" must not mean "remove every container".

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{Body, Incoming, Input, Origin};
use crate::spec::merge::{merge, Part};
use crate::spec::Options;

/// Where the state files are and how often to look.
#[derive(Debug, Clone)]
pub struct FileSource {
    /// A file, or a directory whose `*.json` files are merged.
    pub path: PathBuf,
    /// How often the path is read.
    pub poll_interval: Duration,
    /// The update domain documents must name.
    pub domain: String,
}

/// What the path holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// Nothing to apply, and why.
    Nothing(String),
    /// The files, in name order.
    Parts(Vec<Part>),
}

/// Reads the path: one file, or a directory's `*.json` files (hidden and
/// temporary files are skipped, so editors and atomic writers can work
/// next to them). Blocking: call from a blocking thread.
pub fn read(path: &Path) -> Reading {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return Reading::Nothing(format!("{}: {e}", path.display())),
    };
    if !meta.is_dir() {
        return match std::fs::read_to_string(path) {
            Ok(text) => Reading::Parts(vec![Part {
                name: path.display().to_string(),
                text,
            }]),
            Err(e) => Reading::Nothing(format!("{}: {e}", path.display())),
        };
    }
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(e) => return Reading::Nothing(format!("{}: {e}", path.display())),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && name.ends_with(".json") && p.is_file()
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Reading::Nothing(format!("{}: no *.json state files", path.display()));
    }
    let mut parts = Vec::new();
    for f in files {
        match std::fs::read_to_string(&f) {
            Ok(text) => parts.push(Part {
                name: f
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                text,
            }),
            // Gone between listing and reading: the next poll sees the new state.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Reading::Nothing(format!("{}: {e}", f.display())),
        }
    }
    Reading::Parts(parts)
}

/// A digest of what was read, to notice changes.
fn fingerprint(reading: &Reading) -> Vec<u8> {
    let mut h = Sha256::new();
    match reading {
        Reading::Nothing(why) => {
            h.update(b"nothing\0");
            h.update(why.as_bytes());
        }
        Reading::Parts(parts) => {
            for p in parts {
                h.update(p.name.as_bytes());
                h.update(b"\0");
                h.update((p.text.len() as u64).to_le_bytes());
                h.update(p.text.as_bytes());
            }
        }
    }
    h.finalize().to_vec()
}

/// The document the parts make, or why they make none.
pub fn document(parts: &[Part], domain: &str) -> Body {
    let options = Options {
        domain: domain.to_string(),
    };
    match merge(parts, &options) {
        Ok(merged) => Body::Text(merged.text),
        Err(errors) => Body::Refused {
            activity_id: parts
                .iter()
                .find_map(|p| {
                    serde_json::from_str::<serde_json::Value>(&p.text)
                        .ok()?
                        .get("activityId")?
                        .as_str()
                        .map(str::to_string)
                })
                .unwrap_or_default(),
            errors,
        },
    }
}

async fn read_async(path: &Path) -> Reading {
    let path = path.to_path_buf();
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || read(&path))
        .await
        .unwrap_or_else(|e| Reading::Nothing(format!("{shown}: {e}")))
}

/// Polls the path for ever, sending a document whenever it changes.
pub async fn watch(source: FileSource, inputs: mpsc::UnboundedSender<Input>) {
    let mut last: Option<Vec<u8>> = None;
    let mut tick = tokio::time::interval(source.poll_interval.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut reading = read_async(&source.path).await;
        let mut print = fingerprint(&reading);
        if last.as_ref() == Some(&print) {
            continue;
        }
        let parts = match &reading {
            Reading::Nothing(why) => {
                tracing::warn!(path = %source.path.display(), "no desired state from files: {why}");
                last = Some(print);
                continue;
            }
            Reading::Parts(parts) => parts.clone(),
        };
        let mut body = document(&parts, &source.domain);
        if matches!(body, Body::Refused { .. }) {
            // A writer that does not rename atomically may be half-way:
            // look once more before calling the document broken.
            tokio::time::sleep(Duration::from_millis(250)).await;
            let again = read_async(&source.path).await;
            let again_print = fingerprint(&again);
            if again_print != print {
                reading = again;
                print = again_print;
                if let Reading::Parts(parts) = &reading {
                    body = document(parts, &source.domain);
                } else {
                    continue;
                }
            }
        }
        last = Some(print);
        tracing::info!(path = %source.path.display(), "state files changed");
        if inputs
            .send(Input::Document(Incoming {
                origin: Origin::Files(source.path.clone()),
                body,
                ack: None,
            }))
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"activityId":"a","payload":{"domains":[{"id":"containers","components":[{"id":"web","version":"1","config":[{"key":"image","value":"nginx:1"}]}]}]}}"#;

    #[test]
    fn a_missing_path_yields_nothing() {
        assert!(matches!(
            read(Path::new("/nonexistent/berth.json")),
            Reading::Nothing(_)
        ));
    }

    #[test]
    fn a_file_is_one_part() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("state.json");
        std::fs::write(&f, DOC).unwrap();
        let Reading::Parts(parts) = read(&f) else {
            panic!("no parts")
        };
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].text, DOC);
    }

    #[test]
    fn a_directory_yields_its_json_files_in_name_order_skipping_hidden_ones() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "b.json",
            "a.json",
            ".a.json.tmp",
            ".hidden.json",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), DOC).unwrap();
        }
        let Reading::Parts(parts) = read(dir.path()) else {
            panic!("no parts")
        };
        let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a.json", "b.json"]);
    }

    #[test]
    fn an_empty_directory_yields_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read(dir.path()), Reading::Nothing(_)));
    }

    #[test]
    fn a_changed_file_changes_the_fingerprint() {
        let part = |text: &str| {
            Reading::Parts(vec![Part {
                name: "a.json".into(),
                text: text.into(),
            }])
        };
        assert_eq!(fingerprint(&part(DOC)), fingerprint(&part(DOC)));
        assert_ne!(fingerprint(&part(DOC)), fingerprint(&part("{}")));
    }

    #[test]
    fn a_broken_file_is_refused_with_its_activity_id() {
        let broken = DOC.replace("nginx:1", "");
        let body = document(
            &[Part {
                name: "a.json".into(),
                text: broken,
            }],
            "containers",
        );
        let Body::Refused {
            activity_id,
            errors,
        } = body
        else {
            panic!("accepted")
        };
        assert_eq!(activity_id, "a");
        assert!(errors[0].starts_with("a.json: "), "{errors:?}");
    }
}
