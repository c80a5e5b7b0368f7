//! Who is calling: the bearer token, compared in constant time with every
//! configured token, and the audit line every mutation and refusal leaves.

use subtle::ConstantTimeEq;

use super::config::{digest, Grant, Token};

/// Why a request has no caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header, or not `Bearer <token>`.
    #[error("send the token as 'Authorization: Bearer <token>'")]
    Missing,
    /// A token that no `[[api.tokens]]` entry has.
    #[error("the token is not valid")]
    Invalid,
}

/// The caller whose token `header` (the `Authorization` value) carries.
///
/// The presented token is hashed and its digest compared with *every*
/// configured digest in constant time, without stopping at a match: how
/// long the answer takes says nothing about how much of a token was right,
/// nor which entry matched.
///
/// # Errors
/// [`AuthError`] when there is no usable token.
pub fn authenticate<'a>(tokens: &'a [Token], header: Option<&str>) -> Result<&'a Grant, AuthError> {
    let header = header.ok_or(AuthError::Missing)?;
    let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    let presented = digest(token);
    let mut found: Option<&Grant> = None;
    for t in tokens {
        let same: bool = t.digest.ct_eq(&presented).into();
        if same && found.is_none() {
            found = Some(&t.grant);
        }
    }
    found.ok_or(AuthError::Invalid)
}

/// A permission a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// `can_inspect`.
    Inspect,
    /// `can_update_image`.
    UpdateImage,
    /// `can_update_env`.
    UpdateEnv,
    /// `can_apply`.
    Apply,
}

impl Permission {
    /// The configuration's word for it, for 403 answers.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Inspect => "can_inspect",
            Permission::UpdateImage => "can_update_image",
            Permission::UpdateEnv => "can_update_env",
            Permission::Apply => "can_apply",
        }
    }

    /// Whether `grant` has it.
    pub fn granted(self, grant: &Grant) -> bool {
        match self {
            Permission::Inspect => grant.can_inspect,
            Permission::UpdateImage => grant.can_update_image,
            Permission::UpdateEnv => grant.can_update_env,
            Permission::Apply => grant.can_apply,
        }
    }
}

/// One audit line: who (the token's name, never the token), what
/// (endpoint, component) and how it ended. Logged under the `berth::audit`
/// target so it can be routed on its own.
pub fn audit(caller: &str, endpoint: &str, component: &str, outcome: &str) {
    tracing::info!(
        target: "berth::audit",
        caller = %caller,
        endpoint = %endpoint,
        component = %component,
        outcome = %outcome,
        "api audit"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::config::{ApiConfig, TokenConfig};

    fn tokens() -> Vec<Token> {
        let hash = |t: &str| {
            digest(t)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        ApiConfig {
            tokens: vec![
                TokenConfig {
                    name: "ui".into(),
                    sha256: Some(hash("ui-token-0123456789")),
                    can_inspect: true,
                    ..Default::default()
                },
                TokenConfig {
                    name: "ops".into(),
                    sha256: Some(hash("ops-token-0123456789")),
                    can_apply: true,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
        .load_tokens()
        .unwrap()
    }

    #[test]
    fn a_bearer_token_names_its_caller() {
        let t = tokens();
        let g = authenticate(&t, Some("Bearer ops-token-0123456789")).unwrap();
        assert_eq!(g.name, "ops");
        assert!(g.can_apply && !g.can_inspect);
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        let t = tokens();
        assert_eq!(
            authenticate(&t, Some("bearer ui-token-0123456789"))
                .unwrap()
                .name,
            "ui"
        );
    }

    #[test]
    fn no_header_or_another_scheme_is_missing() {
        let t = tokens();
        assert_eq!(authenticate(&t, None).unwrap_err(), AuthError::Missing);
        assert_eq!(
            authenticate(&t, Some("Basic dXNlcjpwYXNz")).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            authenticate(&t, Some("Bearer ")).unwrap_err(),
            AuthError::Missing
        );
    }

    #[test]
    fn an_unknown_token_is_invalid() {
        let t = tokens();
        assert_eq!(
            authenticate(&t, Some("Bearer ui-token-012345678")).unwrap_err(),
            AuthError::Invalid
        );
    }

    #[test]
    fn permissions_are_named_as_in_the_configuration() {
        let t = tokens();
        let g = authenticate(&t, Some("Bearer ui-token-0123456789")).unwrap();
        assert!(Permission::Inspect.granted(g));
        assert!(!Permission::UpdateEnv.granted(g));
        assert_eq!(Permission::UpdateEnv.name(), "can_update_env");
    }
}
