//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root, for fixtures and examples.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path below the repository root.
pub fn repo_path(rel: &str) -> PathBuf {
    root().join(rel)
}

/// The berth binary built for this test run.
///
/// Each test gets its own berth instance (named after the test), so the
/// containers one test's berth creates are never planned, removed or
/// recovered by another test's berth running at the same time.
pub fn berth() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.current_dir(root());
    cmd.env_remove("BERTH_LOG");
    cmd.env("BERTH_INSTANCE", instance());
    cmd
}

/// The berth instance name of the current test.
pub fn instance() -> String {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("main");
    let name: String = test
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("it-{}-{}", std::process::id(), name.trim_matches('-'))
}

/// Runs a command and captures what it printed.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("command starts")
}

/// Text of a captured stream.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the docker CLI and returns its stdout, panicking with its stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI runs");
    assert!(
        out.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

/// The registry the test environment serves images from.
pub fn registry() -> String {
    std::env::var("BERTH_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
}

/// Writes a file into a fresh temporary directory.
pub fn temp_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write temp file");
    path
}

/// A container name unique to this test process: tests of one run share an
/// engine with each other and with any other run going on at the same time.
pub fn unique(name: &str) -> String {
    format!("berth-it-{}-{name}", std::process::id())
}

/// Removes a container, and its anonymous volumes, when the test ends,
/// however it ends.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.0])
            .output();
    }
}

/// A test image in the local registry: `image("service", "1")`.
pub fn image(name: &str, tag: &str) -> String {
    format!("{}/berth-test/{name}:{tag}", registry())
}

/// One component of a document: its id, its version and its config.
pub type Component<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// A desired-state document with one component per `(id, version, config)`.
pub fn desired_state(activity: &str, components: &[Component]) -> String {
    let components: Vec<serde_json::Value> = components
        .iter()
        .map(|(id, version, config)| {
            let config: Vec<serde_json::Value> = config
                .iter()
                .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
                .collect();
            serde_json::json!({"id": id, "version": version, "config": config})
        })
        .collect();
    serde_json::json!({
        "activityId": activity,
        "payload": {"domains": [{"id": "containers", "components": components}]}
    })
    .to_string()
}

/// Parses a command's standard output as JSON, failing with everything it
/// printed when that is not possible.
pub fn json_stdout(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}); status {:?}\nstdout: {}\nstderr: {}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// A TCP port nothing on 127.0.0.1 listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A private view of the shared engine for a process under test: a unix
/// socket that forwards every request to the real engine unchanged, except
/// that container listings show only containers whose names start with
/// `prefix`.
///
/// `berth apply` plans against (and recovers) every container it can list,
/// and removes the berth-managed ones absent from its document. On an engine
/// shared with concurrent tests that would remove or rename their
/// containers, so a berth that acts gets this view: what it can see is
/// exactly what the test owns. Everything else (inspect, create, start,
/// stop, rename, remove, pull, volumes, networks) reaches the engine as is.
pub struct EngineView {
    socket: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    _dir: tempfile::TempDir,
}

impl EngineView {
    /// Starts serving the view.
    pub fn new(prefix: &str) -> Self {
        use std::os::unix::net::UnixListener;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;

        let dir = tempfile::tempdir().expect("temp dir for the engine view");
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket).expect("bind the engine view's socket");
        let upstream = engine_socket();
        let stop = Arc::new(AtomicBool::new(false));
        let (prefix, stopped) = (prefix.to_string(), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (prefix, upstream) = (prefix.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = forward(conn, &upstream, &prefix);
                });
            }
        });
        Self {
            socket,
            stop,
            _dir: dir,
        }
    }

    /// The endpoint, for `DOCKER_HOST` or `--docker-host`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

impl Drop for EngineView {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = std::os::unix::net::UnixStream::connect(&self.socket);
    }
}

/// The engine's unix socket: DOCKER_HOST's when it names one.
fn engine_socket() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if h.starts_with("unix://") => PathBuf::from(&h["unix://".len()..]),
        Ok(h) if !h.is_empty() => {
            panic!("EngineView needs a unix-socket engine, DOCKER_HOST is {h}")
        }
        _ => PathBuf::from("/var/run/docker.sock"),
    }
}

/// Reads up to the end of an HTTP head; returns the head (with its final
/// blank line) and whatever was read past it.
fn read_head(stream: &mut impl std::io::Read) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed inside an HTTP head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The head's lines without the final blank line.
fn head_lines(head: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// A head rebuilt without the named headers, plus `extra` ones.
fn rebuild_head(lines: &[String], drop: &[&str], extra: &[String]) -> Vec<u8> {
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let name = line.split(':').next().unwrap_or("").trim();
        if i > 0 && drop.iter().any(|d| d.eq_ignore_ascii_case(name)) {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    for line in extra {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Decodes a chunked body (trailers ignored).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&body[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let end = (start + size).min(body.len());
        out.extend_from_slice(&body[start..end]);
        body = body.get(end + 2..).unwrap_or(&[]);
    }
    out
}

/// Serves one connection: one request, one response, then both sides close
/// (the request goes upstream with `Connection: close`, and so does the
/// response), so the only HTTP parsing needed is of the two heads.
fn forward(
    client: std::os::unix::net::UnixStream,
    upstream: &Path,
    prefix: &str,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    use std::net::Shutdown;
    use std::os::unix::net::UnixStream;

    let close = ["Connection".to_string() + ": close"];
    let mut from_client = client.try_clone()?;
    let (head, rest) = read_head(&mut from_client)?;
    let lines = head_lines(&head);
    let mut request = lines.first().map(String::as_str).unwrap_or("").split(' ');
    let method = request.next().unwrap_or("");
    let path = request.next().unwrap_or("").split('?').next().unwrap_or("");
    let is_list = method == "GET" && path.ends_with("/containers/json");
    // An exec's start upgrades the connection to a raw stream: its
    // `Connection: Upgrade` must reach the engine, and the answer the client
    // (both sides are then copied until either closes).
    let upgrade = lines.iter().skip(1).any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("upgrade:")
    });
    let keep: &[&str] = if upgrade { &[] } else { &["Connection"] };
    let add: &[String] = if upgrade { &[] } else { &close };

    let mut server = UnixStream::connect(upstream)?;
    server.write_all(&rebuild_head(&lines, keep, add))?;
    server.write_all(&rest)?;
    let mut to_server = server.try_clone()?;
    let body = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_server);
    });

    let mut to_client = client;
    let (head, rest) = read_head(&mut server)?;
    let lines = head_lines(&head);
    if is_list {
        let mut raw = rest;
        server.read_to_end(&mut raw)?;
        let chunked = lines.iter().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        let mut payload = if chunked { dechunk(&raw) } else { raw };
        if let Ok(serde_json::Value::Array(items)) = serde_json::from_slice(&payload) {
            let mine: Vec<serde_json::Value> = items
                .into_iter()
                .filter(|c| {
                    c["Names"].as_array().is_some_and(|names| {
                        names.iter().any(|n| {
                            n.as_str()
                                .is_some_and(|n| n.trim_start_matches('/').starts_with(prefix))
                        })
                    })
                })
                .collect();
            payload = serde_json::to_vec(&mine).expect("a JSON array serialises");
        }
        let extra = [
            close[0].clone(),
            format!("Content-Length: {}", payload.len()),
        ];
        to_client.write_all(&rebuild_head(
            &lines,
            &["Connection", "Content-Length", "Transfer-Encoding"],
            &extra,
        ))?;
        to_client.write_all(&payload)?;
    } else {
        to_client.write_all(&rebuild_head(&lines, keep, add))?;
        to_client.write_all(&rest)?;
        std::io::copy(&mut server, &mut to_client)?;
    }
    let _ = to_client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    let _ = body.join();
    Ok(())
}

/// A berth process in the background (an apply paused by a test hook, or
/// the agent). Its standard error is collected as it comes; dropping it
/// kills the process.
pub struct Background {
    child: std::process::Child,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    stdout: std::sync::Arc<std::sync::Mutex<String>>,
}

/// Collects what a pipe carries, line by line, as it comes.
fn collect(pipe: impl std::io::Read + Send + 'static) -> std::sync::Arc<std::sync::Mutex<String>> {
    use std::io::BufRead;
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = std::sync::Arc::clone(&text);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
            s.push_str(&line);
            s.push('\n');
        }
    });
    text
}

impl Background {
    /// Starts `cmd` (an apply) to pause before its journal write `n`
    /// (`BERTH_TEST_PAUSE_AT=journal#n`), and waits until it paused there:
    /// `Some` with it paused, for the test to kill; `None` when it ended
    /// without reaching that write (the activity has fewer).
    pub fn paused_at_journal_write(mut cmd: Command, n: u32) -> Option<Self> {
        cmd.env("BERTH_TEST_PAUSE_AT", format!("journal#{n}"));
        let mut bg = Self::spawn(cmd);
        let needle = format!("pausing during journal write #{n}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            if bg.stderr().contains(&needle) {
                return Some(bg);
            }
            if !bg.is_running() {
                return None;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "neither paused nor done:\n{}",
                bg.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Starts `cmd` with standard error and output captured.
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("berth starts");
        let stderr = collect(child.stderr.take().expect("stderr is piped"));
        let stdout = collect(child.stdout.take().expect("stdout is piped"));
        Self {
            child,
            stderr,
            stdout,
        }
    }

    /// Everything it printed on standard output so far.
    pub fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits for it to exit on its own (fails after `within`), and gives
    /// the readers a moment to drain the pipes.
    pub fn wait_exit(&mut self, within: std::time::Duration) -> std::process::ExitStatus {
        let status = self.exit_within(within, "on its own");
        std::thread::sleep(std::time::Duration::from_millis(200));
        status
    }

    /// The exit status, once it comes; fails after `within`, saying `how`
    /// it was waited for.
    fn exit_within(&mut self, within: std::time::Duration, how: &str) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "berth did not exit {how} within {within:?}\nstderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Everything it printed on standard error so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until standard error contains `needle`; fails if the process
    /// exits first or `within` passes.
    pub fn wait_for(&mut self, needle: &str, within: std::time::Duration) {
        let deadline = std::time::Instant::now() + within;
        while !self.stderr().contains(needle) {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the reader a moment to drain the pipe.
                std::thread::sleep(std::time::Duration::from_millis(200));
                assert!(
                    self.stderr().contains(needle),
                    "berth exited ({status}) before printing {needle:?}\nstderr:\n{}",
                    self.stderr()
                );
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} within {within:?}\nstderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// SIGTERM, then the exit status (fails after a minute).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.exit_within(std::time::Duration::from_secs(60), "after SIGTERM")
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The image reference a container runs, as `docker inspect` gives it
/// (`c`): for a container berth made, the document's reference (label
/// `berth.image`), after checking that the digest berth pinned it to is
/// one the local image of that reference was pulled as; for any other,
/// `Config.Image`.
pub fn created_from(c: &serde_json::Value) -> String {
    let config_image = c["Config"]["Image"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(label) = c["Config"]["Labels"]["berth.image"].as_str() else {
        return config_image;
    };
    if let Some((_, digest)) = config_image.split_once('@') {
        let wanted = label.split_once('@').map_or(label, |(name, _)| name);
        let out = Command::new("docker")
            .args(["image", "inspect", "-f", "{{json .RepoDigests}}", wanted])
            .output()
            .expect("docker image inspect runs");
        let digests: Vec<String> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert!(
            digests.iter().any(|d| d.ends_with(&format!("@{digest}")))
                || label.ends_with(&format!("@{digest}")),
            "container made from {config_image}, which is not {label} ({digests:?})"
        );
    }
    label.to_string()
}
