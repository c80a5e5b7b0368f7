//! A small client for the API, over the unix socket or TCP: what `berth
//! status` and `berth events` use, so operators on the device need no
//! curl (and what the integration tests drive the API with).

use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::config::Listen;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket or port does not answer.
    #[error("cannot reach the berth API at {at}: {source} (is `berth run` running with [api]?)")]
    Connect {
        /// Where.
        at: String,
        /// Why.
        source: std::io::Error,
    },
    /// HTTP failed.
    #[error("the berth API at {at}: {message}")]
    Http {
        /// Where.
        at: String,
        /// What hyper said.
        message: String,
    },
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (`null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:`.
    pub id: Option<String>,
    /// `event:` (`message` when absent).
    pub event: String,
    /// `data:` lines joined with newlines.
    pub data: String,
}

/// Splits a byte stream into server-sent events (comments and keep-alives
/// dropped). Feed it chunks as they come.
#[derive(Debug, Default)]
pub struct SseParser {
    pending: Vec<u8>,
}

impl SseParser {
    /// The events completed by `chunk`.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::new();
        loop {
            let text = String::from_utf8_lossy(&self.pending).replace("\r\n", "\n");
            let Some(end) = text.find("\n\n") else { break };
            let block = text[..end].to_string();
            let rest = text.as_bytes()[end + 2..].to_vec();
            self.pending = rest;
            let mut e = SseEvent {
                event: "message".into(),
                ..Default::default()
            };
            let mut data: Vec<&str> = Vec::new();
            let mut any = false;
            for line in block.lines() {
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => e.id = Some(value.to_string()),
                    "event" => e.event = value.to_string(),
                    "data" => data.push(value),
                    _ => continue,
                }
                any = true;
            }
            if any {
                e.data = data.join("\n");
                out.push(e);
            }
        }
        out
    }
}

/// Where the API is and the token to present.
#[derive(Debug, Clone)]
pub struct Client {
    at: Listen,
    token: Option<String>,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

impl Client {
    /// A client for `at` presenting `token`.
    pub fn new(at: Listen, token: Option<String>) -> Self {
        Self { at, token }
    }

    /// A client for a socket path.
    pub fn unix(path: impl Into<PathBuf>, token: Option<String>) -> Self {
        Self::new(Listen::Unix(path.into()), token)
    }

    fn http(&self, message: impl std::fmt::Display) -> ClientError {
        ClientError::Http {
            at: self.at.to_string(),
            message: message.to_string(),
        }
    }

    async fn connect(&self) -> Result<Sender, ClientError> {
        let connect = |source| ClientError::Connect {
            at: self.at.to_string(),
            source,
        };
        let sender = match &self.at {
            Listen::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p).await.map_err(connect)?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                    .await
                    .map_err(|e| self.http(e))?;
                tokio::spawn(conn);
                sender
            }
            Listen::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a).await.map_err(connect)?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                    .await
                    .map_err(|e| self.http(e))?;
                tokio::spawn(conn);
                sender
            }
        };
        Ok(sender)
    }

    fn build(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Request<Full<Bytes>>, ClientError> {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "berth");
        if let Some(t) = &self.token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.http(e))
    }

    /// One request, the whole answer.
    ///
    /// # Errors
    /// When the API cannot be reached or HTTP fails.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        let mut sender = self.connect().await?;
        let request = self.build(method, path, headers, body)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.http(e))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.http(e))?
            .to_bytes()
            .to_vec();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Follows `/api/v1/events` (after `last_event_id`), calling `each`
    /// for every event until it returns `false` or the stream ends.
    ///
    /// # Errors
    /// When the API cannot be reached, refuses (the answer is returned
    /// as an error message), or HTTP fails.
    pub async fn events(
        &self,
        last_event_id: Option<&str>,
        mut each: impl FnMut(SseEvent) -> bool,
    ) -> Result<(), ClientError> {
        let mut sender = self.connect().await?;
        let mut headers = vec![("accept", "text/event-stream")];
        if let Some(id) = last_event_id {
            headers.push(("last-event-id", id));
        }
        let request = self.build("GET", "/api/v1/events", &headers, None)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.http(e))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        if status != 200 {
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            return Err(self.http(format!("{status}: {}", String::from_utf8_lossy(&bytes))));
        }
        let mut parser = SseParser::default();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.http(e))?;
            if let Some(data) = frame.data_ref() {
                for e in parser.push(data) {
                    if !each(e) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_are_put_together() {
        let mut p = SseParser::default();
        assert!(p.push(b"id: 1\nevent: feedback\ndata: {\"a\"").is_empty());
        let got = p.push(b":1}\n\n: keep-alive\n\nid: 2\ndata: x\n\n");
        assert_eq!(
            got,
            vec![
                SseEvent {
                    id: Some("1".into()),
                    event: "feedback".into(),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    id: Some("2".into()),
                    event: "message".into(),
                    data: "x".into()
                }
            ]
        );
    }
}
