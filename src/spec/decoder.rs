//! The envelope as Kanto's Go decoder reads it (`encoding/json` into
//! `types.Envelope`): fields it does not know are ignored, and a config
//! entry without `value` has the empty value.
//!
//! Real documents depend on both: Leda's blueprint files carry
//! `blueprintMetadata`, the Update Manager's API example has a
//! `precondition` typo, and the Update Manager omits empty values when it
//! forwards a document (`omitempty`). berth reads them as Kanto does, but
//! never silently: every ignored field is named, in one warning, so a typo
//! in a field name is still seen. Unknown config *keys* are another matter
//! (see `validate`).

use serde_json::{Map, Value};

/// How many ignored fields the warning names; the rest are counted.
const MAX_NAMED: usize = 10;

/// What reading the document as Go does changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Lenience {
    /// The paths of the fields ignored, in key order (at most
    /// [`MAX_NAMED`]).
    pub ignored: Vec<String>,
    /// How many were ignored in all.
    pub ignored_count: usize,
    /// Config entries given the empty value.
    pub filled: usize,
}

impl Lenience {
    /// Whether the document was changed at all.
    pub fn changed(&self) -> bool {
        self.ignored_count > 0 || self.filled > 0
    }

    /// The one warning naming the ignored fields, if any.
    pub fn warning(&self) -> Option<String> {
        if self.ignored_count == 0 {
            return None;
        }
        let mut names = self.ignored.join(", ");
        let more = self.ignored_count - self.ignored.len();
        if more > 0 {
            names.push_str(&format!(" and {more} more"));
        }
        Some(format!(
            "has fields berth does not know, ignored as Kanto ignores them: {names}"
        ))
    }

    fn ignore(&mut self, path: String) {
        self.ignored_count += 1;
        if self.ignored.len() < MAX_NAMED {
            self.ignored.push(path);
        }
    }
}

/// The envelope of a document that validation accepted, read as Kanto
/// reads it (for the code that works on the wire form, like the merge of
/// state files).
///
/// # Errors
/// The JSON's problem, when it is not an envelope.
pub fn envelope(text: &str) -> Result<super::Envelope, String> {
    let mut raw: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    read_as_go(&mut raw);
    serde_json::from_value(raw).map_err(|e| e.to_string())
}

/// Removes the fields Kanto's decoder would ignore and fills the missing
/// config values, in place; says what it did.
pub fn read_as_go(raw: &mut Value) -> Lenience {
    let mut l = Lenience::default();
    let Some(envelope) = raw.as_object_mut() else {
        return l;
    };
    keep(
        envelope,
        "",
        &["activityId", "timestamp", "payload"],
        &mut l,
    );
    let Some(payload) = envelope.get_mut("payload").and_then(Value::as_object_mut) else {
        return l;
    };
    keep(payload, "payload.", &["baselines", "domains"], &mut l);
    each(payload, "baselines", |i, b| {
        let path = format!("payload.baselines[{i}].");
        keep(
            b,
            &path,
            &["title", "description", "preconditions", "components"],
            &mut l,
        );
    });
    let mut domains = Vec::new();
    each(payload, "domains", |i, d| domains.push((i, d)));
    for (i, domain) in domains {
        let path = format!("payload.domains[{i}].");
        keep(domain, &path, &["id", "config", "components"], &mut l);
        config(domain, &path, &mut l);
        let mut components = Vec::new();
        each(domain, "components", |j, c| components.push((j, c)));
        for (j, component) in components {
            let path = format!("{path}components[{j}].");
            keep(component, &path, &["id", "version", "config"], &mut l);
            config(component, &path, &mut l);
        }
    }
    l
}

/// The objects of the array `field` of `parent`, with their index.
fn each<'a>(
    parent: &'a mut Map<String, Value>,
    field: &str,
    mut f: impl FnMut(usize, &'a mut Map<String, Value>),
) {
    if let Some(Value::Array(items)) = parent.get_mut(field) {
        for (i, item) in items.iter_mut().enumerate() {
            if let Some(o) = item.as_object_mut() {
                f(i, o);
            }
        }
    }
}

fn config(parent: &mut Map<String, Value>, path: &str, l: &mut Lenience) {
    let mut entries = Vec::new();
    each(parent, "config", |k, e| entries.push((k, e)));
    for (k, entry) in entries {
        keep(entry, &format!("{path}config[{k}]."), &["key", "value"], l);
        if !entry.contains_key("value") {
            entry.insert("value".into(), Value::String(String::new()));
            l.filled += 1;
        }
    }
}

/// Drops the fields of `object` not in `known`, recording each.
fn keep(object: &mut Map<String, Value>, path: &str, known: &[&str], l: &mut Lenience) {
    let unknown: Vec<String> = object
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .cloned()
        .collect();
    for k in unknown {
        object.remove(&k);
        l.ignore(format!("{path}{}", super::limits::excerpt(&k)));
    }
}
