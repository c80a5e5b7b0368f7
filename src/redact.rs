//! The one rule that keeps secrets out of everything berth prints, logs or
//! publishes. Pure: no I/O.
//!
//! Two things are secret:
//! - the value of an env variable whose *name* matches a pattern
//!   ([`DEFAULT_PATTERNS`] unless configured with `redact_env`), matched
//!   case-insensitively with glob syntax;
//! - the password of a URL with user-info (`scheme://user:pass@host`),
//!   wherever it appears: env values, command arguments, free text.
//!
//! Every output builds its text from parts that went through a
//! [`Redactor`] at the point the text is made (inventory parameters, plan
//! reasons and diffs, feedback, validation messages); [`Redactor::text`] is
//! the safety net for text berth did not build, such as an engine's error
//! message quoting a command line.

use std::borrow::Cow;
use std::fmt;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Env names whose values are secret unless configured otherwise: the
/// usual words for credentials, in any case, anywhere in the name. Broad
/// on purpose: hiding a harmless value costs a look at the document,
/// showing a password cannot be undone.
pub const DEFAULT_PATTERNS: [&str; 8] = [
    "*PASSWORD*",
    "*PASSWD*",
    "*SECRET*",
    "*TOKEN*",
    "*KEY*",
    "*CREDENTIAL*",
    "*AUTH*",
    "*PRIVATE*",
];

/// The default rule, compiled once: for code with no configuration at
/// hand (engine error messages, validation, the panic hook).
pub fn default_rule() -> &'static Redactor {
    static RULE: std::sync::OnceLock<Redactor> = std::sync::OnceLock::new();
    RULE.get_or_init(Redactor::default)
}

/// What stands in for a secret value.
pub const REDACTED: &str = "<redacted>";

/// A pattern that is not a valid glob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("redact pattern \"{pattern}\" is not a valid glob: {reason}")]
pub struct RedactError {
    /// The pattern as given.
    pub pattern: String,
    /// What globset said.
    pub reason: String,
}

/// The compiled redaction rule. Cheap to clone; build it once from the
/// configured patterns and hand it to every output.
#[derive(Clone)]
pub struct Redactor {
    set: GlobSet,
    patterns: Vec<String>,
}

impl Default for Redactor {
    /// The [`DEFAULT_PATTERNS`].
    fn default() -> Self {
        Self::compile(&DEFAULT_PATTERNS).unwrap_or_else(|_| Self::everything())
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.patterns)
            .finish()
    }
}

impl PartialEq for Redactor {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl Redactor {
    /// Compiles `patterns` (globs: `*`, `?`, `[...]`, `{a,b}`), matched
    /// against whole env names, ignoring case.
    ///
    /// # Errors
    /// [`RedactError`] names the first pattern that is not a valid glob.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, RedactError> {
        Self::compile(patterns)
    }

    /// Like [`Redactor::new`], but a pattern list that does not compile
    /// hides every env value instead of failing: for outputs that must not
    /// fail and must not leak (configuration is checked at start-up, so
    /// this only guards callers that skipped the check).
    pub fn or_everything<S: AsRef<str>>(patterns: &[S]) -> Self {
        Self::compile(patterns).unwrap_or_else(|_| Self::everything())
    }

    fn compile<S: AsRef<str>>(patterns: &[S]) -> Result<Self, RedactError> {
        let mut builder = GlobSetBuilder::new();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let glob = GlobBuilder::new(p)
                .case_insensitive(true)
                .literal_separator(false)
                .backslash_escape(true)
                .build()
                .map_err(|e| RedactError {
                    pattern: p.to_string(),
                    reason: e.kind().to_string(),
                })?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| RedactError {
            pattern: patterns
                .iter()
                .map(|p| p.as_ref())
                .collect::<Vec<_>>()
                .join(","),
            reason: e.to_string(),
        })?;
        Ok(Self {
            set,
            patterns: patterns.iter().map(|p| p.as_ref().to_string()).collect(),
        })
    }

    /// Hides every env value (the fallback when patterns do not compile).
    fn everything() -> Self {
        let mut builder = GlobSetBuilder::new();
        if let Ok(g) = GlobBuilder::new("*").build() {
            builder.add(g);
        }
        Self {
            set: builder.build().unwrap_or_else(|_| GlobSet::empty()),
            patterns: vec!["*".into()],
        }
    }

    /// The patterns as configured, for showing the configuration back.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether the value of env variable `name` is secret. Also used for
    /// the name part of `--flag=value` arguments (leading dashes ignored).
    pub fn is_secret(&self, name: &str) -> bool {
        let name = name.trim_start_matches('-');
        !name.is_empty() && self.set.is_match(name)
    }

    /// The value of env variable `name` as it may be shown: [`REDACTED`]
    /// when the name is secret, else with any URL password hidden.
    pub fn env_value<'a>(&self, name: &str, value: &'a str) -> Cow<'a, str> {
        if self.is_secret(name) {
            Cow::Borrowed(REDACTED)
        } else {
            userinfo(value)
        }
    }

    /// An env entry (`NAME=value` or `NAME`) as it may be shown.
    pub fn env_entry<'a>(&self, entry: &'a str) -> Cow<'a, str> {
        match entry.split_once('=') {
            Some((name, _)) if self.is_secret(name) => Cow::Owned(format!("{name}={REDACTED}")),
            Some((name, value)) => match userinfo(value) {
                Cow::Borrowed(_) => Cow::Borrowed(entry),
                Cow::Owned(v) => Cow::Owned(format!("{name}={v}")),
            },
            None => Cow::Borrowed(entry),
        }
    }

    /// One command argument (cmd, entrypoint) as it may be shown: a URL
    /// password is hidden, and so is the value of `--name=value` or
    /// `NAME=value` when the name is secret.
    pub fn arg<'a>(&self, arg: &'a str) -> Cow<'a, str> {
        if let Some((name, _)) = arg.split_once('=') {
            if is_name_like(name) && self.is_secret(name) {
                return Cow::Owned(format!("{name}={REDACTED}"));
            }
        }
        userinfo(arg)
    }

    /// A whole argument vector as it may be shown: each argument by
    /// [`Redactor::arg`], and the argument after a secret-named flag
    /// (`--password hunter2`) hidden too.
    pub fn argv<S: AsRef<str>>(&self, argv: &[S]) -> Vec<String> {
        let mut out = Vec::with_capacity(argv.len());
        let mut hide_next = false;
        for a in argv {
            let a = a.as_ref();
            if hide_next {
                out.push(REDACTED.to_string());
                hide_next = false;
                continue;
            }
            hide_next = a.starts_with('-') && !a.contains('=') && self.is_secret(a);
            out.push(self.arg(a).into_owned());
        }
        out
    }

    /// Free text that may quote values berth did not redact itself (an
    /// engine's error message with a command line, a log line): URL
    /// passwords are hidden, and so is the value after `NAME=`, a JSON
    /// `"NAME":` or a flag `--NAME ` when NAME is secret, up to the next space, quote or bracket.
    /// Best effort by nature; outputs build their text from redacted parts
    /// rather than rely on this.
    pub fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let text = userinfo(text);
        match self.assignments(&text) {
            Some(t) => Cow::Owned(t),
            None => text,
        }
    }

    /// `NAME=value` / `"NAME":"value"` with a secret NAME,
    /// value hidden; `None` when there is none.
    fn assignments(&self, text: &str) -> Option<String> {
        let bytes = text.as_bytes();
        let mut out = String::new();
        let mut copied = 0;
        let mut i = 0;
        while i < bytes.len() {
            if !is_name_byte(bytes[i]) || (i > 0 && is_name_byte(bytes[i - 1])) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && is_name_byte(bytes[i]) {
                i += 1;
            }
            let name = &text[start..i];
            // The separator: `=`, or `":` after a quoted JSON key (a bare
            // `word: ` is prose), then optional spaces and an opening quote.
            let mut j = i;
            let json = j + 1 < bytes.len() && bytes[j] == b'"' && bytes[j + 1] == b':';
            let flag = name.starts_with('-') && j < bytes.len() && bytes[j] == b' ';
            if json || flag {
                j += if json { 2 } else { 1 };
            } else {
                // `NAME=value`, or `NAME = value` as in TOML and shell.
                let mut k = j;
                while k < bytes.len() && bytes[k] == b' ' {
                    k += 1;
                }
                if k < bytes.len() && bytes[k] == b'=' && bytes.get(k + 1) != Some(&b'=') {
                    j = k + 1;
                } else {
                    continue;
                }
            }
            while j < bytes.len() && bytes[j] == b' ' {
                j += 1;
            }
            // Debug of an env map: `"NAME": Some("value")`.
            if text[j..].starts_with("Some(") {
                j += "Some(".len();
            }
            let quote =
                (j < bytes.len() && (bytes[j] == b'"' || bytes[j] == b'\'')).then(|| bytes[j]);
            if quote.is_some() {
                j += 1;
            }
            let value_start = j;
            if text[value_start..].starts_with(REDACTED) {
                i = value_start + REDACTED.len();
                continue;
            }
            while j < bytes.len() {
                let b = bytes[j];
                let end = match quote {
                    Some(q) => b == q,
                    None => b.is_ascii_whitespace() || b"\"'`,;)]}>".contains(&b),
                };
                if end {
                    break;
                }
                j += 1;
            }
            if j > value_start && self.is_secret(name) {
                out.push_str(&text[copied..value_start]);
                out.push_str(REDACTED);
                copied = j;
            }
            i = j.max(i);
        }
        (copied > 0).then(|| {
            out.push_str(&text[copied..]);
            out
        })
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'
}

fn is_name_like(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_name_byte)
}

/// `text` with the password of every URL with user-info
/// (`scheme://user:pass@host`) replaced by [`REDACTED`]. Independent of
/// any pattern, so pure code with no configuration (validation) can use it.
/// The user-info is what comes between `://` and the last `@` before the
/// first `/`, `?`, `#`, space or quote, as RFC 3986 reads it; a user name
/// alone (`ssh://git@host`) is kept.
pub fn userinfo(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(at) = text[from..].find("://") {
        let authority_start = from + at + 3;
        let rest = &text[authority_start..];
        let authority_len = rest
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '`' | '<' | '>') || c.is_whitespace()
            })
            .unwrap_or(rest.len());
        let authority = &rest[..authority_len];
        if let Some(at_sign) = authority.rfind('@') {
            if let Some(colon) = authority[..at_sign].find(':') {
                let pass_start = authority_start + colon + 1;
                let pass_end = authority_start + at_sign;
                if text[pass_start..pass_end] != *REDACTED {
                    out.push_str(&text[copied..pass_start]);
                    out.push_str(REDACTED);
                    copied = pass_end;
                }
            }
        }
        from = authority_start + authority_len;
        if from >= text.len() {
            break;
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Redactor {
        Redactor::default()
    }

    #[test]
    fn every_default_pattern_marks_its_word_as_secret_anywhere_in_the_name() {
        for name in [
            "DB_PASSWORD",
            "MYSQL_ROOT_PASSWD",
            "CLIENT_SECRET",
            "API_TOKEN",
            "SSH_KEY_FILE",
            "AWS_CREDENTIALS",
            "BASIC_AUTH",
            "PRIVATE_DATA",
        ] {
            assert!(r().is_secret(name), "{name}");
        }
        assert_eq!(DEFAULT_PATTERNS.len(), 8);
    }

    #[test]
    fn secret_names_match_whatever_their_case() {
        assert!(r().is_secret("db_password"));
        assert!(r().is_secret("Api_Token"));
        assert!(r().is_secret("apikey"));
    }

    #[test]
    fn ordinary_names_are_not_secret() {
        for name in ["LOG_LEVEL", "PORT", "HOME", "PATH", ""] {
            assert!(!r().is_secret(name), "{name}");
        }
    }

    #[test]
    fn configured_patterns_replace_the_defaults() {
        let r = Redactor::new(&["*PIN*", "EXACT"]).unwrap();
        assert!(r.is_secret("SIM_PIN"));
        assert!(r.is_secret("exact"));
        assert!(!r.is_secret("EXACTLY"));
        assert!(!r.is_secret("DB_PASSWORD"));
        assert_eq!(r.patterns(), ["*PIN*", "EXACT"]);
    }

    #[test]
    fn an_invalid_pattern_is_an_error_naming_it() {
        let e = Redactor::new(&["[oops"]).unwrap_err();
        assert_eq!(e.pattern, "[oops");
    }

    #[test]
    fn patterns_that_do_not_compile_hide_every_value_rather_than_none() {
        let r = Redactor::or_everything(&["[oops"]);
        assert!(r.is_secret("LOG_LEVEL"));
    }

    #[test]
    fn a_secret_env_value_is_replaced_and_others_are_kept() {
        assert_eq!(r().env_value("DB_PASSWORD", "hunter2"), REDACTED);
        assert_eq!(r().env_value("LOG_LEVEL", "debug"), "debug");
        assert_eq!(
            r().env_entry("DB_PASSWORD=hunter2"),
            "DB_PASSWORD=<redacted>"
        );
        assert_eq!(r().env_entry("LOG_LEVEL=debug"), "LOG_LEVEL=debug");
        assert_eq!(r().env_entry("UNSET"), "UNSET");
    }

    #[test]
    fn a_url_password_in_an_ordinary_env_value_is_hidden() {
        assert_eq!(
            r().env_entry("DATABASE_URL=postgres://app:s3cr3t@db:5432/x"),
            "DATABASE_URL=postgres://app:<redacted>@db:5432/x"
        );
    }

    #[test]
    fn url_user_info_forms() {
        let cases = [
            ("postgres://u:s3cr3t@db/x", "postgres://u:<redacted>@db/x"),
            // A user name alone is not a password.
            ("ssh://git@example.com/repo", "ssh://git@example.com/repo"),
            // An empty password stays empty-looking but hidden all the same.
            ("http://u:@host/", "http://u:<redacted>@host/"),
            // `@` in the path is not user-info.
            ("https://host/users/@me", "https://host/users/@me"),
            ("https://host:8443/a@b", "https://host:8443/a@b"),
            // `@` in the password: the last `@` of the authority ends it.
            ("amqp://u:p@ss@broker", "amqp://u:<redacted>@broker"),
            // IPv6 hosts.
            (
                "http://u:pw@[2001:db8::1]:8080/x",
                "http://u:<redacted>@[2001:db8::1]:8080/x",
            ),
            ("http://[::1]:8080/x", "http://[::1]:8080/x"),
            // No user-info at all, query and fragment.
            ("https://example.com?a=b#c", "https://example.com?a=b#c"),
            ("not a url", "not a url"),
        ];
        for (input, want) in cases {
            assert_eq!(userinfo(input), want, "{input}");
        }
    }

    #[test]
    fn every_url_in_free_text_is_redacted() {
        assert_eq!(
            userinfo("exec: \"postgres://a:b@h/x\" and redis://:c@r:6379 failed"),
            "exec: \"postgres://a:<redacted>@h/x\" and redis://:<redacted>@r:6379 failed"
        );
    }

    #[test]
    fn redacting_twice_changes_nothing_more() {
        let once = r().text("postgres://u:s@h DB_PASSWORD=x").into_owned();
        assert_eq!(r().text(&once), once);
    }

    #[test]
    fn secret_flags_in_an_argv_hide_their_values() {
        assert_eq!(
            r().argv(&[
                "app",
                "--db-password=hunter2",
                "--token",
                "abc",
                "--port",
                "80"
            ]),
            [
                "app",
                "--db-password=<redacted>",
                "--token",
                "<redacted>",
                "--port",
                "80"
            ]
        );
        assert_eq!(
            r().argv(&["psql", "postgres://u:s3cr3t@db/x"]),
            ["psql", "postgres://u:<redacted>@db/x"]
        );
    }

    #[test]
    fn free_text_hides_secret_assignments_and_url_passwords() {
        assert_eq!(
            r().text("invalid env DB_PASSWORD=hunter2 for web"),
            "invalid env DB_PASSWORD=<redacted> for web"
        );
        assert_eq!(
            r().text(r#"{"API_TOKEN":"abc def","LOG":"x"}"#),
            r#"{"API_TOKEN":"<redacted>","LOG":"x"}"#
        );
        assert_eq!(
            r().text("[\"DB_PASSWORD=hunter2\", \"LOG=1\"]"),
            "[\"DB_PASSWORD=<redacted>\", \"LOG=1\"]"
        );
        assert_eq!(r().text("nothing secret: here"), "nothing secret: here");
        // Debug of a spec's env map, as a panic message may hold it.
        assert_eq!(
            r().text(r#"env: {"DB_PASSWORD": Some("hunter2"), "LOG": Some("x")}"#),
            r#"env: {"DB_PASSWORD": Some("<redacted>"), "LOG": Some("x")}"#
        );
        assert_eq!(
            r().text("1 | password = hunter2\n  |"),
            "1 | password = <redacted>\n  |"
        );
        assert_eq!(
            r().text("app --db-password hunter2 --port 80"),
            "app --db-password <redacted> --port 80"
        );
        assert_eq!(
            r().text("exec: \"postgres://u:pw@db/x\": not found"),
            "exec: \"postgres://u:<redacted>@db/x\": not found"
        );
    }
}
