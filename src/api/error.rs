//! The API's one error shape: a status, a short code, words that say what
//! to do, and the request field at fault when there is one.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {}", body.message)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body (boxed: errors travel in every handler's `Result`).
    pub body: Box<ErrorBody>,
    /// For `401`: the `WWW-Authenticate` challenge.
    challenge: bool,
}

/// The JSON body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code: `unauthorized`, `forbidden`, `bad_request`,
    /// `not_found`, `tag_not_found`, `no_document`, `unavailable`, ...
    pub error: String,
    /// What went wrong, in words.
    pub message: String,
    /// The request field at fault (`tag`, `env.PORT`, `body`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every problem, when there are several (a refused document).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl ApiError {
    /// An error with a status, a code and words.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: Box::new(ErrorBody {
                error: code.to_string(),
                message: message.into(),
                field: None,
                problems: Vec::new(),
            }),
            challenge: false,
        }
    }

    /// `400` naming `field`.
    pub fn field(field: impl Into<String>, problem: impl Into<String>) -> Self {
        let field = field.into();
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{field}: {}", problem.into()),
        );
        e.body.field = Some(field);
        e
    }

    /// `401`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
        e.challenge = true;
        e
    }

    /// `403`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// `404`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// `500`, for what should not happen.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// With every problem listed.
    pub fn with_problems(mut self, problems: Vec<String>) -> Self {
        self.body.problems = problems;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(*self.body)).into_response();
        if self.challenge {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"berth\""),
            );
        }
        r
    }
}

/// Reads a JSON body into `T`, naming the field at fault: a syntax error
/// gives its line and column, an unknown or mistyped field its path.
///
/// # Errors
/// `400` naming the field (`body` when the JSON itself is broken).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::field("body", "is empty; send a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let broken = matches!(
            inner.classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        );
        let field = if broken {
            "body".to_string()
        } else if path.is_empty() || path == "." {
            // An unknown field is reported at its parent; name it.
            unknown_field(&inner.to_string()).unwrap_or_else(|| "body".to_string())
        } else {
            path
        };
        ApiError::field(field, inner.to_string())
    })
}

fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        image: String,
        #[serde(default)]
        wait: bool,
    }

    #[test]
    fn broken_json_names_the_body_and_the_position() {
        let e = parse_json::<Body>(b"{\"image\": ").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body.field.as_deref(), Some("body"));
        assert!(e.body.message.contains("line 1"), "{}", e.body.message);
    }

    #[test]
    fn an_unknown_field_is_named() {
        let e = parse_json::<Body>(b"{\"image\": \"a\", \"imgae\": 1}").unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("imgae"));
    }

    #[test]
    fn a_mistyped_field_is_named() {
        let e = parse_json::<Body>(b"{\"image\": \"a\", \"wait\": \"yes\"}").unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("wait"));
    }

    #[test]
    fn an_empty_body_is_refused() {
        let e = parse_json::<Body>(b"").unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("body"));
    }
}
