//! A counting proxy on a unix socket in front of the engine's socket. Every
//! HTTP request the client sends is logged as one line,
//! `<unix time ns> <METHOD> <path>`, with the API version prefix and the
//! query dropped and container, image, exec and network ids or names
//! collapsed to `{id}`: counts by method and path say what a scenario costs
//! on the engine whatever the names. Keep-alive connections carry many
//! requests: the client-to-engine stream is parsed request by request
//! (headers, then `Content-Length` bytes of body); an upgraded connection
//! (attach, exec start) is passed through unparsed after its request line.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

#[derive(Debug, clap::Args)]
pub struct ProxyArgs {
    /// The socket clients connect to (DOCKER_HOST=unix://<this>).
    #[arg(long)]
    listen: PathBuf,
    /// The engine's socket.
    #[arg(long, default_value = "/var/run/docker.sock")]
    upstream: PathBuf,
    /// Where the request lines go (appended).
    #[arg(long)]
    log: PathBuf,
}

pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(&args.listen);
    let listener = UnixListener::bind(&args.listen)
        .with_context(|| format!("binding {}", args.listen.display()))?;
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let mut log = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log)
        .await
        .with_context(|| format!("opening {}", args.log.display()))?;
    tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            // One write per request, flushed: the log is read while we run.
            if log.write_all(line.as_bytes()).await.is_err() || log.flush().await.is_err() {
                break;
            }
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (client, _) = accepted?;
                let upstream = args.upstream.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Ok(engine) = UnixStream::connect(&upstream).await {
                        relay(client, engine, tx).await;
                    }
                });
            }
            _ = term.recv() => break,
        }
    }
    drop(tx);
    // Let the writer drain what is queued.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let _ = std::fs::remove_file(&args.listen);
    Ok(())
}

async fn relay(client: UnixStream, engine: UnixStream, tx: mpsc::UnboundedSender<String>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (engine_read, mut engine_write) = engine.into_split();
    let mut engine_read = engine_read;
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut engine_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    });
    let mut parser = Parser::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match client_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for line in parser.feed(&buf[..n]) {
            let _ = tx.send(line);
        }
        if engine_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = engine_write.shutdown().await;
    let _ = down.await;
}

/// Finds request lines in a client-to-engine byte stream.
#[derive(Default)]
struct Parser {
    head: Vec<u8>,
    body_left: usize,
    raw: bool,
}

impl Parser {
    fn feed(&mut self, mut bytes: &[u8]) -> Vec<String> {
        let mut found = Vec::new();
        while !bytes.is_empty() && !self.raw {
            if self.body_left > 0 {
                let skip = self.body_left.min(bytes.len());
                self.body_left -= skip;
                bytes = &bytes[skip..];
                continue;
            }
            self.head.push(bytes[0]);
            bytes = &bytes[1..];
            if self.head.ends_with(b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.head).into_owned();
                self.head.clear();
                let mut lines = head.lines();
                let request = lines.next().unwrap_or_default();
                let mut parts = request.split_whitespace();
                let (method, target) = (parts.next().unwrap_or("?"), parts.next().unwrap_or("?"));
                found.push(format!("{} {} {}\n", now_ns(), method, collapse(target)));
                for header in lines {
                    let Some((name, value)) = header.split_once(':') else {
                        continue;
                    };
                    let name = name.trim().to_ascii_lowercase();
                    if name == "content-length" {
                        self.body_left = value.trim().parse().unwrap_or(0);
                    } else if name == "upgrade"
                        || (name == "transfer-encoding" && value.contains("chunked"))
                    {
                        self.raw = true;
                    }
                }
            }
        }
        found
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// `/v1.41/containers/bench-1/json?all=1` -> `/containers/{id}/json`.
fn collapse(target: &str) -> String {
    let path = target.split('?').next().unwrap_or(target);
    let mut segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments
        .first()
        .is_some_and(|s| s.starts_with('v') && s[1..].contains('.'))
    {
        segments.remove(0);
    }
    let out: Vec<String> = match segments.as_slice() {
        // Image names hold slashes: everything between /images/ and the
        // last segment is the name.
        ["images", name @ .., last] if !name.is_empty() => {
            vec!["images".into(), "{id}".into(), (*last).into()]
        }
        ["images", "create"] | ["images", "json"] => {
            segments.iter().map(|s| s.to_string()).collect()
        }
        [kind @ ("containers" | "exec" | "networks" | "volumes"), id, rest @ ..]
            if *id != "json" && *id != "create" && *id != "prune" =>
        {
            let mut v = vec![kind.to_string(), "{id}".to_string()];
            v.extend(rest.iter().map(|s| s.to_string()));
            v
        }
        _ => segments.iter().map(|s| s.to_string()).collect(),
    };
    format!("/{}", out.join("/"))
}

/// The parser's and the collapsing's specification, checked whenever the
/// harness runs without a command (`cargo test --all-targets` does: a
/// `harness = false` target runs no `#[test]` functions).
pub fn self_check() {
    ids_and_versions_are_collapsed();
    keep_alive_requests_are_each_counted_and_bodies_skipped();
}

fn ids_and_versions_are_collapsed() {
    assert_eq!(
        collapse("/v1.41/containers/bench-1/json?size=0"),
        "/containers/{id}/json"
    );
    assert_eq!(
        collapse("/v1.41/containers/json?all=true"),
        "/containers/json"
    );
    assert_eq!(
        collapse("/v1.41/containers/create?name=x"),
        "/containers/create"
    );
    assert_eq!(
        collapse("/v1.41/images/127.0.0.1:5000/berth-test/service:1/json"),
        "/images/{id}/json"
    );
    assert_eq!(collapse("/_ping"), "/_ping");
}

fn keep_alive_requests_are_each_counted_and_bodies_skipped() {
    let mut p = Parser::default();
    let stream = b"POST /v1.41/containers/create?name=a HTTP/1.1\r\nContent-Length: 30\r\n\r\n{\"x\":\"GET /fake HTTP/1.1\r\n\r\n\"}GET /v1.41/containers/a/json HTTP/1.1\r\nHost: d\r\n\r\n";
    let lines: Vec<String> = p
        .feed(stream)
        .into_iter()
        .map(|l| {
            l.split_once(' ')
                .map(|(_, r)| r.to_string())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        lines,
        ["POST /containers/create\n", "GET /containers/{id}/json\n"]
    );
}
