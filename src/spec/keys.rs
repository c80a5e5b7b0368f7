//! The catalogue of every config key berth understands.
//!
//! One table feeds the parser's "unknown key / did you mean" checks, the
//! repeatability rule, the JSON schema and the documentation, so none of them
//! can disagree with another.

use serde_json::{json, Value};

/// Where a key comes from; decides how berth treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A key of Kanto's container-update-agent, with Kanto's syntax and default.
    Kanto,
    /// A key berth adds beyond Kanto.
    Berth,
    /// A key Kanto's agent writes into its current-state inventory. Accepted
    /// in desired state (documents are often derived from inventories) and
    /// ignored with a warning, as Kanto ignores it.
    Reported,
}

/// What a key's value must look like, for the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Any string; the parser checks the structure.
    Text,
    /// One of a fixed set of words.
    OneOf(&'static [&'static str]),
    /// A regular expression (ECMA-262 compatible) the value must match.
    Pattern(&'static str),
}

/// One config key.
#[derive(Debug, Clone, Copy)]
pub struct KeyInfo {
    /// The key as written in documents.
    pub name: &'static str,
    /// Whether the key may appear more than once (values then accumulate).
    pub repeatable: bool,
    /// Where it comes from.
    pub origin: Origin,
    /// The value's syntax, for error messages ("expected …").
    pub syntax: &'static str,
    /// What the key does, its default and how berth differs from Kanto.
    pub description: &'static str,
    /// The value's shape, for the JSON schema.
    pub shape: Shape,
}

/// Booleans the way Kanto's documents write them (Go's `strconv.ParseBool`),
/// in any letter case.
pub const BOOL_PATTERN: &str = "^([tT][rR][uU][eE]|[fF][aA][lL][sS][eE]|[tTfF]|1|0)$";
/// Kanto's size syntax: a number and a mandatory binary unit.
pub const SIZE_PATTERN: &str = "^[0-9]+(\\.[0-9]+)? ?[kKmMgG]$";
/// A whole number of seconds or a humantime duration.
pub const DURATION_PATTERN: &str = "^([0-9]+|([0-9]+ ?[a-zµ]+ ?)+)$";
const COUNT_PATTERN: &str = "^[0-9]+$";

macro_rules! key {
    ($name:literal, $rep:expr, $origin:ident, $shape:expr, $syntax:literal, $desc:literal) => {
        KeyInfo {
            name: $name,
            repeatable: $rep,
            origin: Origin::$origin,
            syntax: $syntax,
            description: $desc,
            shape: $shape,
        }
    };
}

const ONCE: bool = false;
const MANY: bool = true;

/// Every key a component's `config` may hold.
pub const CONTAINER_KEYS: &[KeyInfo] = &[
    key!("image", ONCE, Kanto, Shape::Text, "an image reference such as 127.0.0.1:5000/app:1, nginx or app@sha256:<64 hex>",
        "The image to run. Default: `<id>:<version>` when `version` is given. Compared fully qualified, so `nginx` equals `docker.io/library/nginx:latest`."),
    key!("env", MANY, Kanto, Shape::Pattern("^[a-zA-Z_][a-zA-Z0-9_]*(=.*)?$"), "NAME=value, NAME= (empty) or NAME (removes the image's NAME)",
        "An environment variable; repeat the key for more. Order does not matter. Only the names listed here are berth's: variables the image sets are never a difference."),
    key!("cmd", MANY, Kanto, Shape::Text, "one argument",
        "One element of the command's argv; repeat the key for more, in order. Default: the image's command."),
    key!("port", MANY, Kanto, Shape::Text, "[hostIP:]hostPort[-hostPortEnd]:containerPort[-containerPortEnd][/tcp|udp|sctp]",
        "A published port. Host IP defaults to 0.0.0.0 (IPv6 in brackets: [::1]:80:80), protocol to tcp. A host range with one container port lets the engine pick a free port in the range; two ranges must be the same length. Host port 0 lets the engine pick any free port. Kanto drops a malformed entry silently; berth rejects it."),
    key!("mount", MANY, Kanto, Shape::Text, "/host/path:/container/path[:options] with options ro, rw and one of rprivate, private, rshared, shared, rslave, slave",
        "A bind mount; repeat the key for more. Propagation defaults to rprivate. berth adds `ro` (read-only), e.g. `/etc/app:/etc/app:ro,rslave`. Both paths must be absolute."),
    key!("device", MANY, Kanto, Shape::Text, "/dev/host:/dev/container[:permissions] with permissions from r, w, m",
        "A device made available to the container. Permissions default to rwm. Not allowed with `privileged` (which already exposes every device)."),
    key!("host", MANY, Kanto, Shape::Text, "name:IP, name:host_ip, name:host_ip_<interface> or name:container_<hostname>",
        "An extra /etc/hosts entry. `host_ip` is the host's address seen from the container, `host_ip_<interface>` the address of that host interface, `container_<hostname>` the address of the managed container with that host name."),
    key!("network", ONCE, Kanto, Shape::Text, "bridge, host, none, container:<name> or the name of an existing user network",
        "The network the container joins. Default: bridge. `host` and `none` cannot publish ports."),
    key!("privileged", ONCE, Kanto, Shape::Pattern(BOOL_PATTERN), "true or false (also 1, 0, t, f, in any case)",
        "Runs the container privileged. Default: false."),
    key!("terminal", ONCE, Kanto, Shape::Pattern(BOOL_PATTERN), "true or false (also 1, 0, t, f, in any case)",
        "Allocates a TTY. Default: false."),
    key!("interactive", ONCE, Kanto, Shape::Pattern(BOOL_PATTERN), "true or false (also 1, 0, t, f, in any case)",
        "Keeps standard input open. Default: false."),
    key!("restartPolicy", ONCE, Kanto, Shape::OneOf(&["no", "always", "unless-stopped", "on-failure"]), "no, always, unless-stopped or on-failure",
        "What the engine does when the container exits. Default: unless-stopped."),
    key!("restartMaxRetries", ONCE, Kanto, Shape::Pattern(COUNT_PATTERN), "a whole number from 0 to 1000000",
        "With restartPolicy on-failure: how often the engine restarts the container; 0 means without limit. At most 1000000. Default: 0. Ignored (with a warning) for other policies, as in Kanto."),
    key!("restartTimeout", ONCE, Kanto, Shape::Pattern(DURATION_PATTERN), "whole seconds (30) or a duration (30s), at most 24h",
        "With restartPolicy on-failure: Kanto's retry timeout. The Docker engine has no such setting, so berth accepts it for compatibility and warns that it has no effect. At most 24h."),
    key!("logDriver", ONCE, Kanto, Shape::OneOf(&["json-file", "none", "local", "journald"]), "json-file, none, local or journald",
        "Where the container's output goes. Default: json-file. `local` and `journald` are berth additions."),
    key!("logMaxFiles", ONCE, Kanto, Shape::Pattern(COUNT_PATTERN), "a whole number from 1 to 1000",
        "How many log files are kept (json-file and local). At most 1000. Default: 2."),
    key!("logMaxSize", ONCE, Kanto, Shape::Pattern(SIZE_PATTERN), "a size such as 100M, at most 9223372036854775807 bytes",
        "How large one log file grows before it is rotated (json-file and local). At most 9223372036854775807 bytes (the engine's signed 64-bit limit). Default: 100M."),
    key!("logPath", ONCE, Kanto, Shape::Text, "an absolute directory",
        "Kanto's log directory. The Docker engine keeps logs under its own data root, so berth accepts it for compatibility and warns that it has no effect."),
    key!("logMode", ONCE, Kanto, Shape::OneOf(&["blocking", "non-blocking"]), "blocking or non-blocking",
        "Whether writing output blocks the container when the log driver is slow. Default: blocking."),
    key!("logMaxBufferSize", ONCE, Kanto, Shape::Pattern(SIZE_PATTERN), "a size such as 1M, at most 9223372036854775807 bytes",
        "The buffer for non-blocking logging. At most 9223372036854775807 bytes (the engine's signed 64-bit limit). Default: 1M in non-blocking mode."),
    key!("memory", ONCE, Kanto, Shape::Pattern(SIZE_PATTERN), "a size such as 512M or 1.5G (at least 6M, at most 4611686018427387903 bytes)",
        "The memory limit. At least 6M (the engine's minimum) and at most 4611686018427387903 bytes, so that the engine's default swap of twice the memory fits its signed 64-bit limit. Default: none. Changed in place, without a restart."),
    key!("memoryReservation", ONCE, Kanto, Shape::Pattern(SIZE_PATTERN), "a size no larger than memory (at least 6M, at most 9223372036854775807 bytes)",
        "The soft memory limit. At most 9223372036854775807 bytes (the engine's signed 64-bit limit). Default: none. Changed in place."),
    key!("memorySwap", ONCE, Kanto, Shape::Pattern("^(-1|[0-9]+(\\.[0-9]+)? ?[kKmMgG])$"), "a size no smaller than memory and at most 9223372036854775807 bytes, or -1 for unlimited swap",
        "Memory plus swap. Needs `memory`. At most 9223372036854775807 bytes (the engine's signed 64-bit limit). Default: twice memory (the engine's default). Changed in place."),
    key!("hostName", ONCE, Kanto, Shape::Text, "a host name",
        "The container's host name. Default: `<id>-host`, as Kanto names its containers, so `host` entries of the form `name:container_<id>-host` resolve."),
    key!("domainName", ONCE, Kanto, Shape::Text, "a domain name",
        "The container's domain name. Default: `<id>-domain`, as in Kanto."),
    key!("entrypoint", MANY, Berth, Shape::Text, "one argument (a single empty value clears the image's entrypoint)",
        "One element of the entrypoint; repeat the key for more, in order. Default: the image's entrypoint."),
    key!("workdir", ONCE, Berth, Shape::Text, "an absolute path",
        "The working directory. Default: the image's."),
    key!("user", ONCE, Berth, Shape::Pattern("^[^:\\s]+(:[^:\\s]+)?$"), "user, uid, user:group or uid:gid",
        "The user the process runs as. Default: the image's."),
    key!("label", MANY, Berth, Shape::Pattern("^[^=\\s]+=.*$"), "key=value",
        "A container label; repeat the key for more. Keys under `berth.` are berth's own and refused."),
    key!("volume", MANY, Berth, Shape::Text, "name:/container/path[:ro|rw]",
        "A named volume (created when missing, never removed by berth)."),
    key!("cpus", ONCE, Berth, Shape::Pattern("^[0-9]*\\.?[0-9]+$"), "a number of CPUs such as 0.5 or 2, at most 9223372036.854775807",
        "The CPU limit, to 9 decimal places. At most 9223372036.854775807 (the engine counts billionths of a CPU in a signed 64-bit number, and refuses more CPUs than the host has). Default: none. Changed in place."),
    key!("stopTimeout", ONCE, Berth, Shape::Pattern(DURATION_PATTERN), "whole seconds (30) or a duration in whole seconds (30s, 2m), at most 1h",
        "How long a stop waits after the stop signal before killing. At most 1h: the engine stores it in whole seconds, and every stop, recreate and rollback may wait this long. Default: the engine's (10s)."),
    key!("stopSignal", ONCE, Berth, Shape::Pattern("^([sS][iI][gG])?[a-zA-Z0-9+-]+$"), "a signal name (SIGTERM, TERM) or number",
        "The signal that asks the container to stop. Default: the image's, else SIGTERM."),
    key!("healthCmd", ONCE, Berth, Shape::Text, "a shell command, or NONE",
        "A health check run with /bin/sh -c inside the container; exit 0 means healthy. NONE disables the image's health check. Default: the image's."),
    key!("healthInterval", ONCE, Berth, Shape::Pattern(DURATION_PATTERN), "a duration from 1ms to 24h, such as 10s",
        "Time between health checks. At least 1ms (the engine's minimum), at most 24h. Default: the image's, else 30s."),
    key!("healthTimeout", ONCE, Berth, Shape::Pattern(DURATION_PATTERN), "a duration from 1ms to 24h, such as 5s",
        "How long one check may take. At least 1ms (the engine's minimum), at most 24h. Default: the image's, else 30s."),
    key!("healthRetries", ONCE, Berth, Shape::Pattern(COUNT_PATTERN), "a whole number from 0 to 100",
        "Consecutive failures before the container counts as unhealthy; 0 means the image's. At most 100: berth waits up to start period + interval x retries for a verdict. Default: the image's, else 3."),
    key!("healthStartPeriod", ONCE, Berth, Shape::Pattern(DURATION_PATTERN), "0, or a duration from 1ms to 24h, such as 30s",
        "Grace time after start during which failures do not count. 0, or at least 1ms (the engine's minimum); at most 24h. Default: the image's, else 0s."),
    key!("updateStrategy", ONCE, Berth, Shape::OneOf(&["stop-first", "start-first"]), "stop-first or start-first",
        "stop-first stops the old container before the new one starts; start-first starts the new one first (not possible when both bind the same host port) and stops the old one once the new one is ready. While both run they share the same volumes and bind mounts: two processes on one data directory, so use start-first only for services that allow it (berth's plan warns). Default: stop-first."),
    key!("pullPolicy", ONCE, Berth, Shape::OneOf(&["missing", "always", "never"]), "missing, always or never",
        "When the image is pulled: only when missing locally, on every apply, or never. Default: missing."),
    key!("dependsOn", MANY, Berth, Shape::Pattern("^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"), "the id of another component in the same document",
        "Starts this container after the named one has proven ready; repeat the key for more. A container: network and a container_<hostname> host entry imply it."),
    key!("preStart", ONCE, Berth, Shape::Text, "a shell command",
        "Run with /bin/sh -c to completion in a one-shot container of the new image, with the service's env, mounts, named and anonymous volumes, network and user, after the old container stopped and before the new one starts. Runs only when the container is created or recreated, never on a no-op re-apply or a drift repair. A non-zero exit, or running past hookTimeout, fails the activity and rolls it back. The one-shot container is always removed."),
    key!("postStart", ONCE, Berth, Shape::Text, "a shell command",
        "Run with /bin/sh -c by exec in the started new container, before its readiness gate can pass; a non-zero exit or running past hookTimeout fails the activity and rolls it back. Only when the container is created or recreated. Refused on a job (restartPolicy no), which may have exited before exec reaches it."),
    key!("onRollback", ONCE, Berth, Shape::Text, "a shell command",
        "Run with /bin/sh -c in a one-shot container of the old image (with the old container's settings) when the activity rolls back (or a recovery undoes it after a kill) after preStart or a migration ran, to undo what they did; it runs after the down migrations. Its outcome is reported in the feedback; a failure is reported, the rollback goes on."),
    key!("hookTimeout", ONCE, Berth, Shape::Pattern(DURATION_PATTERN), "a duration from 1s to 24h, such as 5m",
        "How long each hook (preStart, postStart, onRollback, each migration) may run before it is stopped and counts as failed. Default: 5m."),
    key!("migrations", ONCE, Berth, Shape::Text, "an absolute directory inside the new image, such as /migrations",
        "A directory of migration scripts in the new image, one per version (v1.2.0.sh, 0003_add_index.sh), with optional down counterparts (v1.2.0.down.sh). On a create or recreate, berth runs with /bin/sh, in version order, each script newer than the last one applied and not newer than the component's version, each in a one-shot container of the new image, and records the last applied in the state directory. A failure stops, runs the down scripts of those applied in reverse, and rolls the activity back."),
    key!("status", MANY, Reported, Shape::Text, "reported by the agent", "Current-state only; ignored in desired state."),
    key!("created", MANY, Reported, Shape::Text, "reported by the agent", "Current-state only; ignored in desired state."),
    key!("finishedAt", MANY, Reported, Shape::Text, "reported by the agent", "Current-state only; ignored in desired state."),
    key!("completed", MANY, Reported, Shape::Text, "reported by the agent", "Current-state only (a job with restart policy no that exited 0); ignored in desired state."),
    key!("exitCode", MANY, Reported, Shape::Text, "reported by the agent", "Current-state only; ignored in desired state."),
    key!("restartCount", MANY, Reported, Shape::Text, "reported by the agent", "Current-state only; ignored in desired state."),
    key!("manuallyStopped", MANY, Reported, Shape::Text, "reported by the agent", "Current-state only; ignored in desired state."),
    key!("startedSuccessfullyBefore", MANY, Reported, Shape::Text, "reported by the agent", "Current-state only; ignored in desired state."),
];

/// Every key a domain's `config` may hold.
pub const DOMAIN_KEYS: &[KeyInfo] = &[key!(
    "systemContainers",
    ONCE,
    Kanto,
    Shape::Text,
    "comma-separated container names",
    "Replaces the agent's configured system containers for this one document. System containers are never created, changed, started, stopped or removed."
)];

/// Looks a key up by its exact name.
pub fn find<'a>(table: &'a [KeyInfo], name: &str) -> Option<&'a KeyInfo> {
    table.iter().find(|k| k.name == name)
}

/// The known key closest to a misspelt one, so an error can say "did you mean".
///
/// Catches case and separator slips (`restart_policy`, `Image`) exactly and
/// typos by edit distance.
pub fn suggest(table: &[KeyInfo], name: &str) -> Option<&'static str> {
    let fold = |s: &str| {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect::<String>()
    };
    let folded = fold(name);
    if let Some(k) = table.iter().find(|k| fold(k.name) == folded) {
        return Some(k.name);
    }
    // The distance is at least the difference in length, so only names of
    // about the same length are compared: a megabyte-long key costs one
    // pass, not a megabyte-by-name matrix per known key.
    let close = |k: &str| 2.max(k.len() / 4);
    table
        .iter()
        .filter(|k| folded.len().abs_diff(k.name.len()) <= close(k.name))
        .map(|k| (strsim::damerau_levenshtein(&folded, &fold(k.name)), k.name))
        .filter(|(d, k)| *d <= close(k))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The JSON schema of one `{key, value}` entry drawn from `table`.
pub(crate) fn setting_schema(table: &[KeyInfo], description: &str) -> schemars::Schema {
    let branches: Vec<Value> = table
        .iter()
        .map(|k| {
            let mut value = json!({"type": "string", "description": format!("{} Syntax: {}.", k.description, k.syntax)});
            match k.shape {
                Shape::Text => {}
                Shape::OneOf(words) => value["enum"] = json!(words),
                Shape::Pattern(p) => value["pattern"] = json!(p),
            }
            let repeat = if k.repeatable { " Repeatable." } else { "" };
            json!({
                "type": "object",
                "title": k.name,
                "description": format!("{}{}", k.description, repeat),
                "properties": { "key": { "const": k.name }, "value": value },
                "required": ["key", "value"],
                "additionalProperties": false
            })
        })
        .collect();
    let schema = json!({ "description": description, "oneOf": branches });
    // A JSON object always converts; fall back to a permissive schema rather than panic.
    schemars::Schema::try_from(schema).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_name_is_unique() {
        let mut names: Vec<_> = CONTAINER_KEYS.iter().map(|k| k.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn suggest_catches_case_and_separator_slips() {
        assert_eq!(
            suggest(CONTAINER_KEYS, "restart_policy"),
            Some("restartPolicy")
        );
        assert_eq!(suggest(CONTAINER_KEYS, "Image"), Some("image"));
    }

    #[test]
    fn suggest_catches_typos() {
        assert_eq!(suggest(CONTAINER_KEYS, "imgae"), Some("image"));
        assert_eq!(suggest(CONTAINER_KEYS, "enviroment"), None);
        assert_eq!(suggest(CONTAINER_KEYS, "memroy"), Some("memory"));
        assert_eq!(suggest(CONTAINER_KEYS, "logMaxFile"), Some("logMaxFiles"));
    }

    /// Each bounded key's syntax names its bound, with the figure validation
    /// uses, so the schema cannot promise what validation refuses.
    #[test]
    fn bounded_keys_name_their_bounds_in_the_schema() {
        use crate::spec::values::{self, duration_text};
        let bounds = [
            (
                "restartMaxRetries",
                format!("to {}", values::MAX_RESTART_RETRIES),
            ),
            (
                "restartTimeout",
                format!("at most {}", duration_text(values::MAX_RESTART_TIMEOUT)),
            ),
            ("logMaxFiles", format!("to {}", values::MAX_LOG_FILES)),
            ("logMaxSize", format!("at most {} bytes", values::MAX_SIZE)),
            (
                "logMaxBufferSize",
                format!("at most {} bytes", values::MAX_SIZE),
            ),
            ("memory", format!("at most {} bytes", values::MAX_MEMORY)),
            (
                "memoryReservation",
                format!("at most {} bytes", values::MAX_SIZE),
            ),
            ("memorySwap", format!("at most {} bytes", values::MAX_SIZE)),
            (
                "cpus",
                format!(
                    "at most {}.{:09}",
                    values::MAX_NANO_CPUS / 1_000_000_000,
                    values::MAX_NANO_CPUS % 1_000_000_000
                ),
            ),
            (
                "stopTimeout",
                format!("at most {}", duration_text(values::MAX_STOP_TIMEOUT)),
            ),
            (
                "healthInterval",
                format!(
                    "from {} to {}",
                    duration_text(values::MIN_HEALTH_DURATION),
                    duration_text(values::MAX_HEALTH_DURATION)
                ),
            ),
            (
                "healthTimeout",
                format!(
                    "from {} to {}",
                    duration_text(values::MIN_HEALTH_DURATION),
                    duration_text(values::MAX_HEALTH_DURATION)
                ),
            ),
            (
                "healthStartPeriod",
                format!(
                    "from {} to {}",
                    duration_text(values::MIN_HEALTH_DURATION),
                    duration_text(values::MAX_HEALTH_DURATION)
                ),
            ),
            (
                "healthRetries",
                format!("to {}", values::MAX_HEALTH_RETRIES),
            ),
            (
                "hookTimeout",
                format!(
                    "from {} to {}",
                    duration_text(values::MIN_HOOK_TIMEOUT),
                    duration_text(values::MAX_HOOK_TIMEOUT)
                ),
            ),
        ];
        for (key, bound) in bounds {
            let info = find(CONTAINER_KEYS, key).map(|k| k.syntax);
            assert!(
                info.is_some_and(|s| s.contains(&bound)),
                "{key}: syntax {info:?} lacks {bound:?}"
            );
        }
    }

    #[test]
    fn suggest_gives_nothing_for_unrelated_words() {
        assert_eq!(suggest(CONTAINER_KEYS, "banana"), None);
    }
}
