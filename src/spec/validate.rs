//! Turns a document into a [`DesiredState`], collecting every problem.
//!
//! Kanto's agent drops malformed ports, mounts and devices silently, turns a
//! bad boolean into `false` and accepts duplicate ids; berth refuses all of
//! those, and names the path, the value and what was expected for each.
//! `validation = "lenient"` ([`Validation::Lenient`]) is for fleets whose
//! documents rely on Kanto's leniency: the ports, mounts and devices Kanto
//! drops (and unknown config keys) are dropped, each named in a warning.
//! In both modes the envelope is read as Kanto's Go decoder reads it
//! ([`super::decoder`]).
//!
//! Every check is linear (or n log n) in the document: ids and names go
//! through sets, host ports through [`HostPorts`], `dependsOn` cycles through
//! one pass of [`cycles`]; and the problem list is bounded
//! ([`limits::MAX_LISTED`]), so no document, however wrong, costs more than
//! reading it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::Serialize;

use super::cycles::cycles;
use super::document::{Component, Domain, Envelope, KeyValue};
use super::host_ports::HostPorts;
use super::image::ImageRef;
use super::keys::{self, KeyInfo, Origin, CONTAINER_KEYS, DOMAIN_KEYS};
use super::limits::{self, excerpt, Bounded, Limits};
use super::model::*;
use super::values::{self, Problem};

/// The domain berth serves unless configured otherwise.
pub const DEFAULT_DOMAIN: &str = "containers";

/// One problem found in a document, located by a path a person can follow
/// (`domains[0].components[2] (influxdb) config "port"`).
///
/// The last line of a cut list ("and 12 more problems") has an empty path
/// and is shown as its message alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Where in the document.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for Diagnostic {}

impl Diagnostic {
    /// A diagnostic whose control characters (from quoted values) are
    /// escaped, so no document can put a terminal escape sequence or a NUL
    /// into a log line or feedback message.
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        let message = message.into();
        // Quoted values may hold a URL with a password (a cmd argument, a
        // health check) or a secret `NAME=value` (a label, a flag): the net
        // under the messages that quote values. Env values are never
        // quoted in the first place.
        let message = crate::redact::default_rule().text(&message).into_owned();
        Self {
            path: limits::printable(path.into()),
            message: limits::printable(message),
        }
    }
}

/// Every error (and warning) of a document that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Rejection {
    /// Problems that make the document unusable: the first
    /// [`limits::MAX_LISTED`], then, when there were more, one line saying
    /// how many more.
    pub errors: Vec<Diagnostic>,
    /// Things berth will ignore, reported so nobody is surprised; bounded
    /// the same way.
    pub warnings: Vec<Diagnostic>,
    /// How many problems were found, listed or not.
    pub count: usize,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.count;
        write!(f, "{n} problem{}", if n == 1 { "" } else { "s" })?;
        for e in &self.errors {
            write!(f, "\n{e}")?;
        }
        Ok(())
    }
}

/// An accepted document and what berth will ignore in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The normalised desired state.
    pub desired: DesiredState,
    /// Settings that have no effect, and why (bounded like errors).
    pub warnings: Vec<Diagnostic>,
}

/// How forgiving validation is of the entries Kanto drops silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validation {
    /// Every malformed entry and unknown config key refuses the document
    /// (the default): a typo is found before it reaches a device.
    #[default]
    Strict,
    /// For fleets whose documents rely on Kanto's leniency: malformed
    /// `port`, `mount` and `device` entries and unknown config keys are
    /// dropped, each with a warning naming it, and the rest is applied.
    Lenient,
}

/// What a validation depends on besides the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The update domain berth serves (`containers`).
    pub domain: String,
    /// How large and deep a document may be.
    pub limits: Limits,
    /// Strict or lenient.
    pub validation: Validation,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            domain: DEFAULT_DOMAIN.to_string(),
            limits: Limits::default(),
            validation: Validation::Strict,
        }
    }
}

/// Parses a document as it arrived, bytes (an MQTT payload, a file), and
/// validates it. Text that is not UTF-8 is refused naming the first bad
/// byte's position, where a lossy conversion would hide the damage.
///
/// # Errors
/// As [`parse`], and one error for bytes that are not UTF-8.
pub fn parse_bytes(bytes: &[u8], options: &Options) -> Result<Accepted, Rejection> {
    match utf8(bytes) {
        Ok(text) => parse(text, options),
        Err(problem) => Err(Rejection::one("document", problem)),
    }
}

/// The bytes as text, or what is wrong with them: the first bad byte and
/// its line and column. Every source (the CLI, MQTT, state files) refuses
/// non-UTF-8 input in these words.
///
/// # Errors
/// The problem, to be put after the name of what was read.
pub fn utf8(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let (line, column) = limits::position(bytes, at);
        format!(
            "is not UTF-8: byte 0x{:02x} (line {line}, column {column}) is not part of a UTF-8 character; save the document as UTF-8",
            bytes[at]
        )
    })
}

/// Parses JSON text and validates it.
///
/// # Errors
/// Non-JSON and wrong-typed JSON give one error with the JSON path, line and
/// column; a document nested deeper than `options.limits.max_depth` one
/// error naming the limit; semantic problems give one error each.
pub fn parse(text: &str, options: &Options) -> Result<Accepted, Rejection> {
    if text.starts_with('\u{feff}') {
        return Err(Rejection::one(
            "document",
            "starts with a UTF-8 byte order mark (BOM), which JSON does not allow; save the document without it",
        ));
    }
    if text.trim().is_empty() {
        return Err(Rejection::one(
            "document",
            "is empty; expected a JSON object {\"activityId\": \"...\", \"payload\": {\"domains\": [...]}}",
        ));
    }
    let max_depth = options.limits.max_depth;
    if let Some(at) = limits::too_deep(text.as_bytes(), max_depth) {
        let (line, column) = limits::position(text.as_bytes(), at);
        return Err(Rejection::one(
            "document",
            format!("nests arrays and objects more than {max_depth} levels deep (line {line}, column {column}); at most {max_depth} (limits.max_depth)"),
        ));
    }
    let raw: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        Rejection::one(
            "document",
            format!("is not valid JSON: {}", strip_position(&e)),
        )
        .with_position(&e)
    })?;
    if let Some(hint) = shape_hint(&raw) {
        return Err(Rejection::one(hint.0, hint.1));
    }
    if let Some(path) = array_for_object(&raw) {
        return Err(Rejection::one(
            path,
            "is a JSON array where an object belongs; write it as {...} with named fields",
        ));
    }
    let mut raw = raw;
    let lenience = super::decoder::read_as_go(&mut raw);
    let path_of = |e: &serde_path_to_error::Error<serde_json::Error>| match e.path().to_string() {
        p if p == "." => "document".to_string(),
        p => p,
    };
    let envelope: Envelope = if lenience.changed() {
        serde_path_to_error::deserialize(raw)
            .map_err(|e| Rejection::one(path_of(&e), strip_position(e.inner())))?
    } else {
        // The untyped tree costs more memory than the document itself; it
        // is not kept while the typed one is built and validated.
        drop(raw);
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            Rejection::one(path_of(&e), strip_position(e.inner())).with_position(e.inner())
        })?
    };
    let result = validate(&envelope, options);
    let Some(warning) = lenience.warning() else {
        return result;
    };
    let warning = Diagnostic::new("document", warning);
    match result {
        Ok(mut accepted) => {
            accepted.warnings.insert(0, warning);
            Ok(accepted)
        }
        Err(mut rejection) => {
            rejection.warnings.insert(0, warning);
            Err(rejection)
        }
    }
}

impl Rejection {
    /// The lines a source answers with: every error (as in
    /// [`Rejection::errors`]), then the warning naming the fields that were
    /// ignored, if any (a misspelt field name may be the real mistake).
    pub fn lines(&self) -> Vec<String> {
        self.errors
            .iter()
            .map(ToString::to_string)
            .chain(
                self.warnings
                    .iter()
                    .filter(|w| w.path == "document")
                    .map(|w| format!("warning: {w}")),
            )
            .collect()
    }

    /// The problems listed in full, without the last line that counts the
    /// rest (when the list was cut).
    pub fn listed(&self) -> &[Diagnostic] {
        let n = self.errors.len().min(self.count).min(limits::MAX_LISTED);
        &self.errors[..n]
    }

    /// A rejection for one problem.
    fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            errors: vec![Diagnostic::new(path, message)],
            warnings: Vec::new(),
            count: 1,
        }
    }

    fn with_position(mut self, e: &serde_json::Error) -> Self {
        if let Some(first) = self.errors.first_mut() {
            first.message = format!(
                "{} (line {}, column {})",
                first.message,
                e.line(),
                e.column()
            );
        }
        self
    }
}

/// serde_json appends " at line L column C"; berth words the position itself.
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Recognises the shapes people confuse with a desired state (kanto#353) and
/// says what to change.
fn shape_hint(raw: &serde_json::Value) -> Option<(String, String)> {
    let obj = raw.as_object()?;
    if !obj.contains_key("payload") && obj.contains_key("domains") {
        return Some((
            "document".into(),
            "is a bare desired state; wrap it as {\"activityId\": \"...\", \"payload\": {\"domains\": [...]}}".into(),
        ));
    }
    let payload = obj.get("payload")?.as_object()?;
    if payload.contains_key("desiredState") {
        return Some((
            "payload.desiredState".into(),
            "is the Update Manager's wrapping; put baselines and domains directly under payload"
                .into(),
        ));
    }
    None
}

/// The first place where the document's types want an object and the text
/// has an array. serde reads an array into a struct field by field, so
/// `"payload": []` would pass as an empty payload and `[["a"], ...]` as a
/// whole document; Kanto refuses both, and so does berth.
fn array_for_object(raw: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    fn each(v: Option<&Value>) -> impl Iterator<Item = (usize, &Value)> {
        v.and_then(Value::as_array)
            .into_iter()
            .flat_map(|a| a.iter().enumerate())
    }
    if raw.is_array() {
        return Some("document".into());
    }
    let payload = raw.get("payload")?;
    if payload.is_array() {
        return Some("payload".into());
    }
    for (b, baseline) in each(payload.get("baselines")) {
        if baseline.is_array() {
            return Some(format!("payload.baselines[{b}]"));
        }
    }
    for (d, domain) in each(payload.get("domains")) {
        if domain.is_array() {
            return Some(format!("payload.domains[{d}]"));
        }
        for (k, kv) in each(domain.get("config")) {
            if kv.is_array() {
                return Some(format!("payload.domains[{d}].config[{k}]"));
            }
        }
        for (c, component) in each(domain.get("components")) {
            if component.is_array() {
                return Some(format!("payload.domains[{d}].components[{c}]"));
            }
            for (k, kv) in each(component.get("config")) {
                if kv.is_array() {
                    return Some(format!("payload.domains[{d}].components[{c}].config[{k}]"));
                }
            }
        }
    }
    None
}

/// Validates a parsed document and normalises it.
///
/// # Errors
/// Every problem, each with its path; nothing is partially accepted. A
/// served domain with more than `options.limits.max_components` components
/// is refused with that one problem, before any component is read.
pub fn validate(envelope: &Envelope, options: &Options) -> Result<Accepted, Rejection> {
    let mut v = Validator {
        lenient: options.validation == Validation::Lenient,
        ..Validator::default()
    };
    if envelope.activity_id.trim().is_empty() {
        v.error(
            "activityId",
            "is empty; feedback needs it to name the activity",
        );
    }

    let mut ours: Option<(usize, &Domain)> = None;
    if envelope.payload.domains.is_empty() {
        v.error(
            "domains",
            format!("has no \"{}\" domain; to remove every managed container send that domain with no components", options.domain),
        );
    }
    for (i, domain) in envelope.payload.domains.iter().enumerate() {
        if domain.id != options.domain {
            let hint = if domain.id.eq_ignore_ascii_case(&options.domain) {
                format!(" (ids are case-sensitive: \"{}\")", options.domain)
            } else {
                String::new()
            };
            v.error(
                format!("domains[{i}].id"),
                format!(
                    "\"{}\" is not a domain berth serves; expected \"{}\"{hint}",
                    excerpt(&domain.id),
                    options.domain
                ),
            );
        } else if let Some((first, _)) = ours {
            v.error(
                format!("domains[{i}]"),
                format!(
                    "is a second \"{}\" domain (the first is domains[{first}]); merge them",
                    options.domain
                ),
            );
        } else {
            ours = Some((i, domain));
        }
    }

    let max = options.limits.max_components;
    if let Some((d, domain)) = ours.filter(|(_, d)| d.components.len() > max) {
        v.error(
            format!("domains[{d}].components"),
            format!(
                "{} components; at most {max} (limits.max_components)",
                domain.components.len()
            ),
        );
        return Err(v.rejection());
    }

    let mut system_containers = None;
    let mut containers = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    if let Some((d, domain)) = ours {
        system_containers = v.domain_config(d, &domain.config);
        for (c, component) in domain.components.iter().enumerate() {
            let path = format!("domains[{d}].components[{c}] ({})", excerpt(&component.id));
            if let Some(first) = names.insert(component.id.as_str(), c) {
                v.error(
                    format!("{path} id"),
                    format!("\"{}\" is used twice (also by domains[{d}].components[{first}]); container names must be unique", component.id),
                );
                names.insert(component.id.as_str(), first);
                continue;
            }
            let spec = v.component(&path, component, &options.domain);
            containers.push((path, spec));
        }
        v.check_dependencies(&containers, &names);
        v.check_port_conflicts(&containers);
    }

    let baselines = v.baselines(envelope, options, &names);

    if v.errors.is_empty() {
        Ok(Accepted {
            desired: DesiredState {
                activity_id: envelope.activity_id.clone(),
                timestamp: envelope.timestamp,
                system_containers,
                baselines,
                containers: containers.into_iter().map(|(_, s)| s).collect(),
            },
            warnings: v.warnings.into_lines(more_warnings),
        })
    } else {
        Err(v.rejection())
    }
}

fn more_problems(n: usize) -> Diagnostic {
    Diagnostic {
        path: String::new(),
        message: limits::more(n, "problem"),
    }
}

fn more_warnings(n: usize) -> Diagnostic {
    Diagnostic {
        path: String::new(),
        message: limits::more(n, "warning"),
    }
}

/// Puts the offending value in front of a problem, so every message quotes
/// what it refuses.
fn describe(value: &str, problem: &str) -> String {
    let predicate = [
        "is ",
        "has ",
        "must ",
        "uses ",
        "names ",
        "says ",
        "maps ",
        "expected ",
    ]
    .iter()
    .any(|p| problem.starts_with(p));
    if predicate {
        format!("\"{value}\" {problem}")
    } else {
        format!("\"{value}\": {problem}")
    }
}

#[derive(Default)]
struct Validator {
    errors: Bounded<Diagnostic>,
    warnings: Bounded<Diagnostic>,
    /// Host port bindings read so far, against [`values::MAX_PORT_BINDINGS`].
    port_bindings: usize,
    /// `validation = "lenient"`: what Kanto drops is dropped with a warning.
    lenient: bool,
}

impl Validator {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Diagnostic::new(path, message));
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Diagnostic::new(path, message));
    }

    fn rejection(self) -> Rejection {
        let count = self.errors.count();
        Rejection {
            errors: self.errors.into_lines(more_problems),
            warnings: self.warnings.into_lines(more_warnings),
            count,
        }
    }

    /// Groups a config list by key, refusing unknown and repeated keys.
    fn group<'a>(
        &mut self,
        path: &str,
        table: &'static [KeyInfo],
        config: &'a [KeyValue],
    ) -> BTreeMap<&'static str, Vec<&'a str>> {
        let mut grouped: BTreeMap<&'static str, Vec<&'a str>> = BTreeMap::new();
        for (i, kv) in config.iter().enumerate() {
            let Some(info) = keys::find(table, &kv.key) else {
                if self.lenient {
                    self.warn(
                        format!("{path} config[{i}] \"{}\"", excerpt(&kv.key)),
                        "is not a known key; ignored (validation = lenient)",
                    );
                    continue;
                }
                // A suggestion costs an edit distance per known key; one
                // for a problem past the listed ones would never be read.
                let listed = self.errors.count() < limits::MAX_LISTED;
                let hint = listed
                    .then(|| keys::suggest(table, &kv.key))
                    .flatten()
                    .map(|s| format!("; did you mean \"{s}\"?"))
                    .unwrap_or_else(|| "; see the schema for the keys berth knows".into());
                self.error(
                    format!("{path} config[{i}] \"{}\"", kv.key),
                    format!("is not a known key{hint}"),
                );
                continue;
            };
            let values = grouped.entry(info.name).or_default();
            if !info.repeatable && !values.is_empty() {
                self.error(
                    format!("{path} config \"{}\"", kv.key),
                    format!(
                        "is given more than once (\"{}\" and \"{}\"); only one value is allowed",
                        excerpt(values[0]),
                        kv.value
                    ),
                );
                continue;
            }
            values.push(&kv.value);
        }
        grouped
    }

    fn domain_config(&mut self, d: usize, config: &[KeyValue]) -> Option<Vec<String>> {
        let path = format!("domains[{d}]");
        let grouped = self.group(&path, DOMAIN_KEYS, config);
        let value = grouped.get("systemContainers")?.first()?;
        let mut names = Vec::new();
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match values::check_name(name) {
                Ok(()) => names.push(name.to_string()),
                Err(e) => self.error(
                    format!("{path} config \"systemContainers\""),
                    format!("name \"{name}\" {e}"),
                ),
            }
        }
        Some(names)
    }

    /// Reads one component. The spec comes back even when some values were
    /// bad (they keep their defaults) so that cross-component rules still run
    /// and report everything; it is only used when no error was found.
    fn component(&mut self, path: &str, component: &Component, domain: &str) -> ContainerSpec {
        let id = component.id.as_str();
        if let Some(bare) = id.strip_prefix(&format!("{domain}:")) {
            self.error(
                format!("{path} id"),
                format!("\"{id}\" has the domain prefix; component ids are bare container names, use \"{bare}\" (only baselines use \"{domain}:<name>\")"),
            );
        } else if let Err(e) = values::check_name(id) {
            self.error(
                format!("{path} id"),
                describe(id, &format!("{e} (it is the container name)")),
            );
        }
        let version = component.version.clone().filter(|v| !v.is_empty());
        let grouped = self.group(path, CONTAINER_KEYS, &component.config);
        let mut r = Reader {
            v: self,
            path,
            grouped: &grouped,
        };
        r.container(id, version)
    }

    fn check_dependencies(
        &mut self,
        containers: &[(String, ContainerSpec)],
        names: &HashMap<&str, usize>,
    ) {
        let index: HashMap<&str, usize> = containers
            .iter()
            .enumerate()
            .map(|(i, (_, s))| (s.name.as_str(), i))
            .collect();
        let mut edges = Vec::with_capacity(containers.len());
        for (path, spec) in containers {
            let mut deps = Vec::new();
            for dep in &spec.rollout.depends_on {
                if dep == &spec.name {
                    self.error(
                        format!("{path} config \"dependsOn\""),
                        format!("\"{dep}\" names the component itself"),
                    );
                } else if !names.contains_key(dep.as_str()) {
                    self.error(
                        format!("{path} config \"dependsOn\""),
                        format!("\"{dep}\" is not a component of this document"),
                    );
                } else if let Some(&i) = index.get(dep.as_str()) {
                    deps.push(i);
                }
            }
            edges.push(deps);
        }
        // Each group of components that depend on each other in a circle
        // is reported once, from its member that comes first.
        for cycle in cycles(&edges) {
            let along: Vec<&str> = cycle
                .iter()
                .map(|&i| containers[i].1.name.as_str())
                .collect();
            self.error(
                format!("{} config \"dependsOn\"", containers[cycle[0]].0),
                format!("forms a cycle: {}", along.join(" -> ")),
            );
        }
    }

    /// Each component's host ports against those of the components before
    /// it; a component is told once about each component it clashes with.
    fn check_port_conflicts(&mut self, containers: &[(String, ContainerSpec)]) {
        // A component that cannot publish (host, none, container: networks)
        // already has its own error; it binds nothing to conflict with.
        let mut held: HostPorts<(usize, &PortBinding)> = HostPorts::default();
        for (i, (path, spec)) in containers.iter().enumerate() {
            if !spec.config.network.can_publish() {
                continue;
            }
            let mut told = BTreeSet::new();
            for mine in &spec.config.ports {
                let Some(&(owner, theirs)) = held.clash(mine) else {
                    continue;
                };
                if owner != i && told.insert(owner) {
                    self.error(
                        format!("{path} config \"port\""),
                        format!(
                            "host port {} (in \"{mine}\") is also bound by component \"{}\" (\"{theirs}\")",
                            describe_host_port(mine),
                            excerpt(&containers[owner].1.name)
                        ),
                    );
                }
            }
            for mine in &spec.config.ports {
                held.hold(mine, (i, mine));
            }
        }
    }

    fn baselines(
        &mut self,
        envelope: &Envelope,
        options: &Options,
        names: &HashMap<&str, usize>,
    ) -> Vec<Baseline> {
        let prefix = format!("{}:", options.domain);
        let mut titles: HashMap<&str, usize> = HashMap::new();
        let mut member_of: HashMap<&str, &str> = HashMap::new();
        let mut out = Vec::new();
        for (b, baseline) in envelope.payload.baselines.iter().enumerate() {
            let path = format!("baselines[{b}] ({})", excerpt(&baseline.title));
            if baseline.title.trim().is_empty() {
                self.error(
                    format!("baselines[{b}].title"),
                    "is empty; feedback names baselines by title",
                );
            } else if let Some(first) = titles.insert(baseline.title.as_str(), b) {
                self.error(
                    format!("{path} title"),
                    format!("is also the title of baselines[{first}]"),
                );
            }
            let mut members = Vec::new();
            for (m, member) in baseline.components.iter().enumerate() {
                let mpath = format!("{path} components[{m}]");
                let Some(name) = member.strip_prefix(&prefix) else {
                    let hint = if names.contains_key(member.as_str()) {
                        format!("; write \"{prefix}{member}\"")
                    } else {
                        String::new()
                    };
                    self.error(
                        mpath,
                        format!("\"{member}\" lacks the \"{prefix}\" prefix baselines use{hint}"),
                    );
                    continue;
                };
                if !names.contains_key(name) {
                    self.error(
                        mpath,
                        format!("\"{member}\" names no component of this document"),
                    );
                } else if let Some(other) = member_of.insert(name, baseline.title.as_str()) {
                    let msg = if other == baseline.title {
                        format!("\"{member}\" is listed twice in this baseline")
                    } else {
                        format!("\"{member}\" is already in baseline \"{}\"; a container belongs to one baseline", excerpt(other))
                    };
                    self.error(mpath, msg);
                } else {
                    members.push(name.to_string());
                }
            }
            out.push(Baseline {
                title: baseline.title.clone(),
                containers: members,
            });
        }
        out
    }
}

/// Reads one component's grouped config into a [`ContainerSpec`].
struct Reader<'v, 'g, 'a> {
    v: &'v mut Validator,
    path: &'g str,
    grouped: &'g BTreeMap<&'static str, Vec<&'a str>>,
}

impl Reader<'_, '_, '_> {
    fn key_path(&self, key: &str) -> String {
        format!("{} config \"{key}\"", self.path)
    }

    fn error(&mut self, key: &str, message: impl Into<String>) {
        let p = self.key_path(key);
        self.v.error(p, message);
    }

    fn warn(&mut self, key: &str, message: impl Into<String>) {
        let p = self.key_path(key);
        self.v.warn(p, message);
    }

    fn has(&self, key: &str) -> bool {
        self.grouped.contains_key(key)
    }

    fn raw(&self, key: &str) -> Option<&str> {
        self.grouped.get(key).and_then(|v| v.first()).copied()
    }

    /// Parses a single-valued key; `None` when absent or invalid (recorded).
    fn one<T>(&mut self, key: &str, parse: impl Fn(&str) -> Result<T, Problem>) -> Option<T> {
        let value = self.raw(key)?;
        match parse(value) {
            Ok(t) => Some(t),
            Err(p) => {
                self.error(key, describe(value, &p));
                None
            }
        }
    }

    /// A malformed entry of a key Kanto drops silently (`port`, `mount`,
    /// `device`): refused in strict mode, dropped with a warning in lenient.
    fn bad_entry(&mut self, key: &str, message: String) {
        if self.v.lenient {
            self.warn(key, format!("{message}; dropped (validation = lenient)"));
        } else {
            self.error(key, message);
        }
    }

    /// As [`Reader::many`], a bad value going to [`Reader::bad_entry`].
    fn entries<T>(&mut self, key: &str, parse: impl Fn(&str) -> Result<T, Problem>) -> Vec<T> {
        let values = self.grouped.get(key).cloned().unwrap_or_default();
        let mut out = Vec::new();
        for value in values {
            match parse(value) {
                Ok(t) => out.push(t),
                Err(p) => self.bad_entry(key, describe(value, &p)),
            }
        }
        out
    }

    /// Parses every value of a repeatable key, recording each bad one.
    fn many<T>(&mut self, key: &str, parse: impl Fn(&str) -> Result<T, Problem>) -> Vec<T> {
        let values = self.grouped.get(key).cloned().unwrap_or_default();
        let mut out = Vec::new();
        for value in values {
            match parse(value) {
                Ok(t) => out.push(t),
                Err(p) => self.error(key, describe(value, &p)),
            }
        }
        out
    }

    fn container(&mut self, id: &str, version: Option<String>) -> ContainerSpec {
        for (key, _) in self.grouped.iter() {
            if keys::find(CONTAINER_KEYS, key).is_some_and(|k| k.origin == Origin::Reported) {
                let p = self.key_path(key);
                self.v
                    .warn(p, "is reported in current state, not a setting; ignored");
            }
        }
        let image = self.image(id, version.as_deref());
        let env = self.env();
        let network = self
            .one("network", values::parse_network)
            .unwrap_or_default();
        let ports = self.ports();
        let extra_hosts: BTreeSet<ExtraHost> =
            self.many("host", values::parse_host).into_iter().collect();
        self.check_network(id, &network, &extra_hosts);
        let (mounts, volumes) = self.mounts();
        let privileged = self.one("privileged", values::parse_bool).unwrap_or(false);
        let devices = self.devices(privileged);
        let restart = self.restart();
        let log = self.log();
        let resources = self.resources();
        let health = self.health();
        let labels = self.labels();
        let (hostname, domainname) = self.names(id, &network);
        let rollout = self.rollout(&restart);

        let config = ContainerConfig {
            // Without a valid image an error is already recorded, so this
            // placeholder never leaves validation.
            image: image.unwrap_or_else(|| ImageRef {
                registry: String::new(),
                repository: id.to_string(),
                tag: None,
                digest: None,
            }),
            env,
            cmd: self
                .has("cmd")
                .then(|| self.many("cmd", |s| Ok(s.to_string()))),
            entrypoint: self
                .has("entrypoint")
                .then(|| self.many("entrypoint", |s| Ok(s.to_string()))),
            workdir: self.one("workdir", values::parse_absolute),
            user: self.one("user", values::parse_user),
            hostname,
            domainname,
            labels,
            ports,
            mounts,
            volumes,
            devices,
            extra_hosts,
            network,
            privileged,
            terminal: self.one("terminal", values::parse_bool).unwrap_or(false),
            interactive: self.one("interactive", values::parse_bool).unwrap_or(false),
            restart,
            log,
            resources,
            stop_timeout: self.one("stopTimeout", values::parse_stop_timeout),
            stop_signal: self.one("stopSignal", values::parse_signal),
            health,
        };
        ContainerSpec {
            name: id.to_string(),
            version,
            keys: self.grouped.keys().copied().collect(),
            rollout,
            config,
        }
    }

    fn image(&mut self, id: &str, version: Option<&str>) -> Option<ImageRef> {
        if self.has("image") {
            return self.one("image", ImageRef::parse);
        }
        let Some(version) = version else {
            self.error(
                "image",
                "is missing; give an image, or a version so the image defaults to <id>:<version>",
            );
            return None;
        };
        let implied = format!("{id}:{version}");
        match ImageRef::parse(&implied) {
            Ok(r) => Some(r),
            Err(p) => {
                let p = format!(
                    "is missing and the default \"{implied}\" (from id and version) is not a valid image: {p}"
                );
                self.error("image", p);
                None
            }
        }
    }

    fn env(&mut self) -> BTreeMap<String, Option<String>> {
        let mut env: BTreeMap<String, Option<String>> = BTreeMap::new();
        // Env problems are whole messages that name the variable and never
        // quote a value: any value may be a secret (see values::parse_env).
        let entries = self.grouped.get("env").cloned().unwrap_or_default();
        for entry in entries {
            let (name, value) = match values::parse_env(entry) {
                Ok(parsed) => parsed,
                Err(problem) => {
                    self.error("env", problem);
                    continue;
                }
            };
            match env.get(&name) {
                Some(old) if *old != value => {
                    let msg = format!(
                        "sets {name} twice with different values (the values are not shown)"
                    );
                    self.error("env", msg);
                }
                _ => {
                    env.insert(name, value);
                }
            }
        }
        env
    }

    /// Bindings within one component: an exact repeat is harmless, a
    /// second binding of a held host port is refused. Past
    /// [`values::MAX_PORT_BINDINGS`] in the document, ranges are not
    /// expanded any further (one error says so).
    fn ports(&mut self) -> BTreeSet<PortBinding> {
        let mut ports = BTreeSet::new();
        let mut held: HostPorts<PortBinding> = HostPorts::default();
        let values = self.grouped.get("port").cloned().unwrap_or_default();
        for value in values {
            if self.v.port_bindings > values::MAX_PORT_BINDINGS {
                break;
            }
            // Kanto's own inventories report `localhost`; the engine needs an IP.
            let local = values::localhost_as_loopback(value);
            if local.is_some() {
                self.warn(
                    "port",
                    format!("\"{value}\": host IP \"localhost\" is read as 127.0.0.1"),
                );
            }
            let value = local.as_deref().unwrap_or(value);
            match values::parse_port(value) {
                Ok(bindings) => {
                    self.v.port_bindings += bindings.len();
                    if self.v.port_bindings > values::MAX_PORT_BINDINGS {
                        let msg = format!(
                            "\"{value}\" brings the document to {} port bindings (one per port of a range); at most {}",
                            self.v.port_bindings,
                            values::MAX_PORT_BINDINGS
                        );
                        self.error("port", msg);
                        break;
                    }
                    for b in bindings {
                        if ports.contains(&b) {
                            // The same binding written twice asks for nothing more.
                            continue;
                        }
                        if let Some(clash) = held.clash(&b) {
                            let msg = format!(
                                "\"{value}\" binds host port {} again (already bound by \"{clash}\")",
                                describe_host_port(&b)
                            );
                            self.error("port", msg);
                            break;
                        }
                        held.hold(&b, b.clone());
                        ports.insert(b);
                    }
                }
                Err(p) => self.bad_entry("port", describe(value, &p)),
            }
        }
        ports
    }

    fn check_network(&mut self, id: &str, network: &NetworkMode, hosts: &BTreeSet<ExtraHost>) {
        if !network.can_publish() && self.has("port") {
            let msg = format!("cannot publish ports with network \"{network}\"; remove the ports or use a bridge or user network");
            self.error("port", msg);
        }
        let uses_host_ip = hosts.iter().any(|h| {
            matches!(
                h.target,
                HostTarget::HostGateway | HostTarget::HostInterface(_)
            )
        });
        match network {
            NetworkMode::Host if uses_host_ip => {
                self.error("host", "cannot use host_ip with network \"host\"; the container already shares the host's addresses");
            }
            NetworkMode::Container(other) => {
                if other == id {
                    self.error(
                        "network",
                        format!("\"container:{other}\" names the container itself"),
                    );
                }
                if !hosts.is_empty() {
                    self.error("host", format!("cannot add host entries with network \"container:{other}\"; the container shares that container's /etc/hosts"));
                }
            }
            _ => {}
        }
    }

    fn mounts(&mut self) -> (BTreeSet<BindMount>, BTreeSet<VolumeMount>) {
        let mounts: BTreeSet<BindMount> = self
            .entries("mount", values::parse_mount)
            .into_iter()
            .collect();
        let volumes: BTreeSet<VolumeMount> = self
            .many("volume", values::parse_volume)
            .into_iter()
            .collect();
        let mut seen: HashMap<&str, String> = HashMap::new();
        let targets = mounts
            .iter()
            .map(|m| (m.destination.as_str(), "mount", m.to_string()))
            .chain(
                volumes
                    .iter()
                    .map(|v| (v.destination.as_str(), "volume", v.to_string())),
            );
        let mut clashes = Vec::new();
        for (dest, key, text) in targets {
            if let Some(first) = seen.insert(dest, text.clone()) {
                clashes.push((
                    key,
                    format!(
                        "\"{text}\" mounts onto {dest} again (already used by \"{}\")",
                        excerpt(&first)
                    ),
                ));
            }
        }
        for (key, msg) in clashes {
            self.error(key, msg);
        }
        (mounts, volumes)
    }

    fn devices(&mut self, privileged: bool) -> BTreeSet<DeviceMapping> {
        let devices: Vec<DeviceMapping> = self.entries("device", values::parse_device);
        if privileged && self.has("device") {
            self.error("device", "cannot be combined with privileged=true (a privileged container already sees every device); choose one");
        }
        let mut out = BTreeSet::new();
        let mut seen = HashMap::new();
        for d in devices {
            if out.contains(&d) {
                continue;
            }
            if let Some(first) = seen.insert(d.container_path.clone(), d.to_string()) {
                self.error(
                    "device",
                    format!(
                        "\"{d}\" maps onto {} again (already used by \"{}\")",
                        d.container_path,
                        excerpt(&first)
                    ),
                );
            }
            out.insert(d);
        }
        out
    }

    fn restart(&mut self) -> RestartPolicy {
        let words = [
            ("no", RestartPolicy::No),
            ("always", RestartPolicy::Always),
            ("unless-stopped", RestartPolicy::UnlessStopped),
            ("on-failure", RestartPolicy::OnFailure { max_retries: 0 }),
        ];
        let parsed = self.one("restartPolicy", |v| values::parse_word(v, &words));
        let policy_ok = parsed.is_some() || !self.has("restartPolicy");
        let policy = parsed.unwrap_or_default();
        let retries = self.one("restartMaxRetries", |v| {
            values::parse_count(v, 0, values::MAX_RESTART_RETRIES)
        });
        match policy {
            RestartPolicy::OnFailure { .. } => RestartPolicy::OnFailure {
                max_retries: retries.unwrap_or(0),
            },
            other => {
                if retries.is_some() && policy_ok {
                    self.warn(
                        "restartMaxRetries",
                        format!("only applies with restartPolicy on-failure, not {other}; ignored"),
                    );
                }
                other
            }
        }
    }

    fn log(&mut self) -> LogConfig {
        let drivers = [
            ("json-file", LogDriver::JsonFile),
            ("none", LogDriver::None),
            ("local", LogDriver::Local),
            ("journald", LogDriver::Journald),
        ];
        let driver = self
            .one("logDriver", |v| values::parse_word(v, &drivers))
            .unwrap_or_default();
        let max_files = self.one("logMaxFiles", |v| {
            values::parse_count(v, 1, values::MAX_LOG_FILES)
        });
        let max_size = self.one("logMaxSize", values::parse_size);
        if max_size == Some(0) {
            self.error("logMaxSize", "must be more than 0");
        }
        let modes = [("blocking", false), ("non-blocking", true)];
        let non_blocking = self
            .one("logMode", |v| values::parse_word(v, &modes))
            .unwrap_or(false);
        let buffer = self.one("logMaxBufferSize", values::parse_size);
        if !driver.writes_files() {
            for key in ["logMaxFiles", "logMaxSize"] {
                if self.has(key) {
                    self.warn(
                        key,
                        format!(
                            "only applies to the json-file and local log drivers, not {}; ignored",
                            driver.as_str()
                        ),
                    );
                }
            }
        }
        if !non_blocking && buffer.is_some() {
            self.warn(
                "logMaxBufferSize",
                "only applies with logMode non-blocking; ignored",
            );
        }
        LogConfig {
            driver,
            max_files: driver.writes_files().then_some(max_files.unwrap_or(2)),
            max_size: driver
                .writes_files()
                .then_some(max_size.unwrap_or(100 << 20)),
            non_blocking,
            max_buffer_size: non_blocking.then_some(buffer.unwrap_or(1 << 20)),
        }
    }

    fn resources(&mut self) -> Resources {
        let memory = self.one("memory", values::parse_memory).filter(|m| *m > 0);
        let reservation = self
            .one("memoryReservation", values::parse_size)
            .filter(|m| *m > 0);
        let swap = self.one("memorySwap", values::parse_swap);
        let mi = |b: u64| format!("{}M", b >> 20);
        if let Some(m) = memory.filter(|m| *m < values::MIN_MEMORY) {
            self.error(
                "memory",
                format!("{} is below the engine's minimum of 6M", show_bytes(m)),
            );
        }
        if let Some(r) = reservation.filter(|r| *r < values::MIN_MEMORY) {
            self.error(
                "memoryReservation",
                format!("{} is below the engine's minimum of 6M", show_bytes(r)),
            );
        }
        if let (Some(m), Some(r)) = (memory, reservation) {
            if r > m {
                self.error(
                    "memoryReservation",
                    format!(
                        "{} is more than memory ({}); a reservation must not exceed the limit",
                        show_bytes(r),
                        show_bytes(m)
                    ),
                );
            }
        }
        match (swap, memory) {
            (Some(Swap::Limit(s)), Some(m)) if s < m => {
                self.error("memorySwap", format!("{} is less than memory ({}); memorySwap is memory plus swap, so it must be at least {}", show_bytes(s), show_bytes(m), mi(m)));
            }
            (Some(_), None) if !self.has("memory") => {
                self.error("memorySwap", "needs memory to be set as well");
            }
            _ => {}
        }
        Resources {
            memory,
            memory_reservation: reservation,
            memory_swap: swap,
            nano_cpus: self.one("cpus", values::parse_cpus),
        }
    }

    fn health(&mut self) -> HealthConfig {
        HealthConfig {
            test: self.one("healthCmd", |v| {
                if v.trim().is_empty() {
                    Err(
                        "is empty; give a shell command, or NONE to disable the image's check"
                            .into(),
                    )
                } else if v == "NONE" {
                    Ok(HealthTest::Disabled)
                } else {
                    Ok(HealthTest::Shell(v.to_string()))
                }
            }),
            interval: self.one("healthInterval", values::parse_health_duration),
            timeout: self.one("healthTimeout", values::parse_health_duration),
            retries: self.one("healthRetries", |v| {
                values::parse_count(v, 0, values::MAX_HEALTH_RETRIES)
            }),
            start_period: self.one("healthStartPeriod", values::parse_health_start_period),
        }
    }

    fn labels(&mut self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        for (k, val) in self.many("label", values::parse_label) {
            if let Some(old) = labels.insert(k.clone(), val.clone()) {
                if old != val {
                    let msg = if crate::redact::default_rule().is_secret(&k) {
                        format!("sets {k} twice with different values (the values are not shown)")
                    } else {
                        format!(
                            "sets {k} twice with different values (\"{}\" and \"{val}\")",
                            excerpt(&old)
                        )
                    };
                    self.error("label", msg);
                }
            }
        }
        labels
    }

    fn names(&mut self, id: &str, network: &NetworkMode) -> (Option<String>, Option<String>) {
        let hostname = self.one("hostName", values::parse_hostname);
        let domainname = self.one("domainName", values::parse_hostname);
        if let NetworkMode::Container(other) = network {
            for key in ["hostName", "domainName"] {
                if self.has(key) {
                    self.error(key, format!("cannot be set with network \"container:{other}\"; the container uses that container's names"));
                }
            }
            return (None, None);
        }
        (
            Some(hostname.unwrap_or_else(|| format!("{id}-host"))),
            Some(domainname.unwrap_or_else(|| format!("{id}-domain"))),
        )
    }

    fn rollout(&mut self, restart: &RestartPolicy) -> Rollout {
        let strategies = [
            ("stop-first", UpdateStrategy::StopFirst),
            ("start-first", UpdateStrategy::StartFirst),
        ];
        let pulls = [
            ("missing", PullPolicy::Missing),
            ("always", PullPolicy::Always),
            ("never", PullPolicy::Never),
        ];
        let restart_timeout = self.one("restartTimeout", values::parse_restart_timeout);
        if restart_timeout.is_some() {
            let msg = if matches!(restart, RestartPolicy::OnFailure { .. }) {
                "has no effect: the Docker engine has no restart retry timeout (kept for current state)".to_string()
            } else {
                format!("only applies with restartPolicy on-failure, not {restart}; ignored")
            };
            self.warn("restartTimeout", msg);
        }
        let log_path = self.one("logPath", values::parse_absolute);
        if log_path.is_some() {
            self.warn(
                "logPath",
                "has no effect: the Docker engine keeps container logs under its own data root",
            );
        }
        let hooks = Hooks {
            pre_start: self.one("preStart", values::parse_command),
            post_start: self.one("postStart", values::parse_command),
            on_rollback: self.one("onRollback", values::parse_command),
            migrations: self.one("migrations", values::parse_absolute),
            timeout: self.one("hookTimeout", values::parse_hook_timeout),
        };
        if hooks.post_start.is_some() && matches!(restart, RestartPolicy::No) {
            // exec needs a running container, and a job may have ended
            // before exec reaches it: whether it ran would be luck.
            self.error(
                "postStart",
                "cannot run in a job (restartPolicy no), which may have exited before it could be run; put it in the job's command or use preStart",
            );
        }
        if hooks.on_rollback.is_some() && hooks.pre_start.is_none() && hooks.migrations.is_none() {
            self.warn(
                "onRollback",
                "never runs: it undoes preStart or migrations, and neither is set",
            );
        }
        if hooks.timeout.is_some() && !hooks.any() {
            self.warn(
                "hookTimeout",
                "has no effect: no hook or migrations are set",
            );
        }
        Rollout {
            update_strategy: self
                .one("updateStrategy", |v| values::parse_word(v, &strategies))
                .unwrap_or_default(),
            pull_policy: self
                .one("pullPolicy", |v| values::parse_word(v, &pulls))
                .unwrap_or_default(),
            depends_on: self
                .many("dependsOn", |v| match v.split_once(':') {
                    Some((_, bare)) => Err(format!(
                        "has a prefix; dependsOn takes bare component ids, use \"{bare}\""
                    )),
                    None => values::check_name(v).map(|()| v.to_string()),
                })
                .into_iter()
                .collect(),
            restart_timeout,
            log_path,
            hooks,
        }
    }
}

fn show_bytes(b: u64) -> String {
    const MI: u64 = 1 << 20;
    if b.is_multiple_of(MI) {
        format!("{}M", b / MI)
    } else {
        format!("{b} bytes")
    }
}

fn describe_host_port(b: &PortBinding) -> String {
    if b.host_port == b.host_port_end {
        format!("{}/{}", b.host_port, b.protocol)
    } else {
        format!("{}-{}/{}", b.host_port, b.host_port_end, b.protocol)
    }
}
