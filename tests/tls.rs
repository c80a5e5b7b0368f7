//! `berth run` over `mqtts://` against a real mosquitto, with certificates
//! made by the test (rcgen): the broker is verified against the configured
//! CA, a broker whose certificate another CA signed is refused, and client
//! certificates work where the broker requires them.
//!
//! Each test starts its own mosquitto (Debian's binary) on a free port with
//! a TLS listener configured in a temporary directory; a guard kills it at
//! the end. What is checked from outside is checked with `mosquitto_sub`
//! over TLS, a client independent of the one berth uses.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

use crate::util::{berth, free_port, text, Background};

const WAIT: Duration = Duration::from_secs(60);
const CURRENT: &str = "containersupdate/currentstate";

/// A CA, a server certificate for 127.0.0.1 and localhost and a client
/// certificate it signed, and a second CA that signed nothing of these: PEM
/// files in a temporary directory.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = TempDir::new().expect("temp dir for the certificates");
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();

        let (ca, ca_key) = new_ca("berth test CA");
        write("ca.pem", ca.self_signed(&ca_key).unwrap().pem());
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let mut server =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        write(
            "server.pem",
            server.signed_by(&server_key, &issuer).unwrap().pem(),
        );
        write("server.key", server_key.serialize_pem());

        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "berth-device");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        write(
            "client.pem",
            client.signed_by(&client_key, &issuer).unwrap().pem(),
        );
        write("client.key", client_key.serialize_pem());

        // One certificate per fleet identity (issue 26): the broker takes
        // the user name from the CN (`use_identity_as_username`).
        for cn in ["controller", "sim-0001", "sim-0002"] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            write(
                &format!("{cn}.pem"),
                params.signed_by(&key, &issuer).unwrap().pem(),
            );
            write(&format!("{cn}.key"), key.serialize_pem());
        }

        let (other, other_key) = new_ca("another CA");
        write("other-ca.pem", other.self_signed(&other_key).unwrap().pem());
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
}

fn new_ca(name: &str) -> (CertificateParams, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params, key)
}

/// A mosquitto with one TLS listener on a free port of 127.0.0.1, serving
/// the server certificate; with `require_certificate` it accepts only
/// clients with a certificate the CA signed. Dropping it kills it.
struct TlsBroker {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl TlsBroker {
    fn start(pki: &Pki, require_certificate: bool) -> Self {
        Self::start_with(pki, require_certificate, "")
    }

    /// [`TlsBroker::start`] with `extra` config lines.
    fn start_with(pki: &Pki, require_certificate: bool, extra: &str) -> Self {
        let mut broker = Self {
            port: 0,
            dir: TempDir::new().expect("temp dir for the broker"),
            child: None,
        };
        for _ in 0..5 {
            broker.port = free_port();
            let config = format!(
                "# A TLS broker of one test (tests/tls.rs).\n\
                 listener {port} 127.0.0.1\n\
                 allow_anonymous true\n\
                 cafile {ca}\n\
                 certfile {cert}\n\
                 keyfile {key}\n\
                 require_certificate {require_certificate}\n\
                 user root\n\
                 persistence false\n\
                 log_dest stderr\n\
                 log_type all\n\
                 {extra}\n",
                port = broker.port,
                ca = pki.path("ca.pem").display(),
                cert = pki.path("server.pem").display(),
                key = pki.path("server.key").display(),
            );
            let conf = broker.dir.path().join("mosquitto.conf");
            std::fs::write(&conf, config).unwrap();
            let log = File::create(broker.log_path()).unwrap();
            let mosquitto = if Path::new("/usr/sbin/mosquitto").exists() {
                "/usr/sbin/mosquitto"
            } else {
                "mosquitto"
            };
            broker.child = Some(
                Command::new(mosquitto)
                    .arg("-c")
                    .arg(&conf)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .expect("mosquitto starts (scripts/test-env.sh installs it)"),
            );
            if broker.wait_ready() {
                return broker;
            }
            if !broker.log().contains("Address already in use") {
                panic!("mosquitto did not start\nlog:\n{}", broker.log());
            }
        }
        panic!("mosquitto found no free port\nlog:\n{}", broker.log());
    }

    fn wait_ready(&mut self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let child = self.child.as_mut().expect("spawned");
            if child.try_wait().expect("wait for mosquitto").is_some() {
                self.child = None;
                return false;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|b| text(&b))
            .unwrap_or_default()
    }

    /// The first message on `topic`, retained or published while
    /// subscribed, read over TLS with the CA and, when given, the client
    /// certificate; `None` if none comes in `secs`. (Not `--retained-only`:
    /// that exits empty-handed on a live message.)
    fn first_message(
        &self,
        pki: &Pki,
        topic: &str,
        client_cert: bool,
        secs: u64,
    ) -> Option<String> {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["--cafile", &pki.arg("ca.pem")])
            .args(["-t", topic, "-C", "1"])
            .args(["-W", &secs.to_string()]);
        if client_cert {
            cmd.args(["--cert", &pki.arg("client.pem")])
                .args(["--key", &pki.arg("client.key")]);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .expect("mosquitto_sub runs");
        match out.status.code() {
            Some(0) => Some(text(&out.stdout)),
            Some(27) => None,
            _ => panic!(
                "mosquitto_sub over TLS failed: {}\nstderr: {}\nbroker log:\n{}",
                out.status,
                text(&out.stderr),
                self.log()
            ),
        }
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `berth run` on the broker with these extra arguments.
fn agent(state: &TempDir, broker: &TlsBroker, extra: &[String]) -> Background {
    agent_with(state, broker, extra, &[])
}

/// [`agent`] with these environment variables.
fn agent_with(
    state: &TempDir,
    broker: &TlsBroker,
    extra: &[String],
    env: &[(&str, &Path)],
) -> Background {
    let mut cmd = berth();
    cmd.args(["run", "--state-dir"])
        .arg(state.path())
        .args(["--log-level", "berth=debug", "--min-ready", "500ms"])
        .args(["--mqtt-url", &broker.url()])
        .args(extra)
        .env_remove("CREDENTIALS_DIRECTORY")
        .envs(env.iter().copied());
    Background::spawn(cmd)
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Waits `for_` and asserts berth never said it connected.
fn assert_never_connects(agent: &mut Background, broker: &TlsBroker, for_: Duration) {
    agent.wait_for("TLS with the MQTT broker failed", WAIT);
    std::thread::sleep(for_);
    let log = agent.stderr();
    assert!(
        !log.contains("connected to the MQTT broker"),
        "berth connected\nberth log:\n{log}\nbroker log:\n{}",
        broker.log()
    );
    assert!(agent.is_running(), "berth keeps trying\n{log}");
    if let Some(line) = log
        .lines()
        .find(|l| l.contains("TLS with the MQTT broker failed"))
    {
        eprintln!("berth said: {line}");
    }
}

#[test]
fn berth_verifies_the_broker_against_the_configured_ca_and_publishes_its_state() {
    let pki = Pki::new();
    let broker = TlsBroker::start(&pki, false);
    let state = TempDir::new().unwrap();
    let mut run = agent(
        &state,
        &broker,
        &["--mqtt-ca-file".into(), pki.arg("ca.pem")],
    );
    run.wait_for("connected to the MQTT broker", WAIT);
    let current = broker
        .first_message(&pki, CURRENT, false, 30)
        .unwrap_or_else(|| panic!("no current state\nberth log:\n{}", run.stderr()));
    let json: serde_json::Value = serde_json::from_str(current.trim()).unwrap_or_else(|e| {
        panic!(
            "{e}: {current:?}\nberth log:\n{}\nbroker log:\n{}",
            run.stderr(),
            broker.log()
        )
    });
    assert!(json.get("payload").is_some(), "{json}");
    assert!(run.terminate().success(), "{}", run.stderr());
}

#[test]
fn berth_refuses_a_broker_whose_certificate_another_ca_signed() {
    let pki = Pki::new();
    let broker = TlsBroker::start(&pki, false);
    let state = TempDir::new().unwrap();
    let mut run = agent(
        &state,
        &broker,
        &["--mqtt-ca-file".into(), pki.arg("other-ca.pem")],
    );
    assert_never_connects(&mut run, &broker, Duration::from_secs(2));
    let log = run.stderr();
    assert!(
        log.contains("UnknownIssuer") && log.contains("mqtt.ca_file"),
        "the log says why: the certificate's issuer is not trusted\n{log}"
    );
    assert_eq!(broker.first_message(&pki, CURRENT, false, 1), None);
}

#[test]
fn berth_with_a_client_certificate_connects_where_the_broker_requires_one() {
    let pki = Pki::new();
    let broker = TlsBroker::start(&pki, true);
    let state = TempDir::new().unwrap();
    chmod(&pki.path("client.key"), 0o600);
    let mut run = agent(
        &state,
        &broker,
        &[
            "--mqtt-ca-file".into(),
            pki.arg("ca.pem"),
            "--mqtt-cert-file".into(),
            pki.arg("client.pem"),
            "--mqtt-key-file".into(),
            pki.arg("client.key"),
        ],
    );
    run.wait_for("connected to the MQTT broker", WAIT);
    assert!(
        broker.first_message(&pki, CURRENT, true, 30).is_some(),
        "berth published its current state\nberth log:\n{}",
        run.stderr()
    );
    assert!(
        !run.stderr().contains("is readable by"),
        "a key only its owner reads is not warned about\n{}",
        run.stderr()
    );
    assert!(run.terminate().success(), "{}", run.stderr());
}

/// What `LoadCredential=mqtt-key` gives berth under systemd: the key in
/// `$CREDENTIALS_DIRECTORY`, named by the configuration through it.
#[test]
fn a_client_key_in_systemds_credentials_directory_is_used_and_a_loose_mode_is_warned_about() {
    let pki = Pki::new();
    let broker = TlsBroker::start(&pki, true);
    let state = TempDir::new().unwrap();
    let credentials = TempDir::new().unwrap();
    let key = credentials.path().join("mqtt-key");
    std::fs::copy(pki.path("client.key"), &key).unwrap();
    chmod(&key, 0o640);
    let mut run = agent_with(
        &state,
        &broker,
        &[
            "--mqtt-ca-file".into(),
            pki.arg("ca.pem"),
            "--mqtt-cert-file".into(),
            pki.arg("client.pem"),
            "--mqtt-key-file".into(),
            "${CREDENTIALS_DIRECTORY}/mqtt-key".into(),
        ],
        &[("CREDENTIALS_DIRECTORY", credentials.path())],
    );
    run.wait_for("connected to the MQTT broker", WAIT);
    let warning = format!(
        "mqtt.key_file {} is readable by its group (mode 0640)",
        key.display()
    );
    let log = run.stderr();
    assert_eq!(log.matches(&warning).count(), 1, "warned once\n{log}");
    assert!(run.terminate().success(), "{}", run.stderr());
}

#[test]
fn berth_without_a_client_certificate_is_refused_where_the_broker_requires_one() {
    let pki = Pki::new();
    let broker = TlsBroker::start(&pki, true);
    let state = TempDir::new().unwrap();
    let mut run = agent(
        &state,
        &broker,
        &["--mqtt-ca-file".into(), pki.arg("ca.pem")],
    );
    assert_never_connects(&mut run, &broker, Duration::from_secs(2));
    let log = run.stderr();
    assert!(
        log.contains("CertificateRequired") && log.contains("mqtt.cert_file"),
        "the log says why: the broker wants a client certificate\n{log}"
    );
    assert_eq!(broker.first_message(&pki, CURRENT, true, 1), None);
}

#[test]
fn a_password_over_plain_mqtt_stops_start_up_unless_allowed() {
    let state = TempDir::new().unwrap();
    let out = berth()
        .args(["run", "--state-dir"])
        .arg(state.path())
        .args(["--mqtt-url", "mqtt://127.0.0.1:1", "--mqtt-username", "u"])
        .env("BERTH_MQTT_PASSWORD", "pw")
        .arg("--print-config")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("mqtt.password: the password would cross") && err.contains("allow_insecure"),
        "{err}"
    );
    let out = berth()
        .args(["run", "--state-dir"])
        .arg(state.path())
        .args(["--mqtt-url", "mqtt://127.0.0.1:1", "--mqtt-username", "u"])
        .args(["--mqtt-allow-insecure", "--print-config"])
        .env("BERTH_MQTT_PASSWORD", "pw")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("allow_insecure = true"));
}

// ---------------------------------------------------------------------------
// Docker over TLS. dockerd here listens on its unix socket only, and a TLS
// listener would need a restart of the shared engine; instead `openssl
// s_server -WWW` plays the engine's TLS endpoint, serving a `version` file:
// berth negotiating the API version through it proves the TLS connection,
// and its listing of containers failing next is where the fake ends.
// ---------------------------------------------------------------------------

/// `openssl s_server -WWW` on a free port with the server certificate,
/// serving `/version`; with `require_client_certificate`, only to clients
/// with a certificate the CA signed. Dropping it kills it.
struct FakeEngine {
    port: u16,
    dir: TempDir,
    child: Child,
}

impl FakeEngine {
    fn start(pki: &Pki, require_client_certificate: bool) -> Self {
        let dir = TempDir::new().unwrap();
        std::fs::write(
            dir.path().join("version"),
            r#"{"ApiVersion":"1.41","MinAPIVersion":"1.12","Version":"20.10.24"}"#,
        )
        .unwrap();
        let port = free_port();
        let mut cmd = Command::new("openssl");
        cmd.current_dir(dir.path())
            .args(["s_server", "-WWW", "-accept", &format!("127.0.0.1:{port}")])
            .args([
                "-cert",
                &pki.arg("server.pem"),
                "-key",
                &pki.arg("server.key"),
            ]);
        if require_client_certificate {
            cmd.args(["-Verify", "1", "-verify_return_error"])
                .args(["-CAfile", &pki.arg("ca.pem")]);
        }
        let log = File::create(dir.path().join("s_server.log")).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("openssl starts (scripts/test-env.sh installs it)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "openssl s_server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { port, dir, child }
    }

    fn log(&self) -> String {
        std::fs::read(self.dir.path().join("s_server.log"))
            .map(|b| text(&b))
            .unwrap_or_default()
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `berth state` against the fake engine with DOCKER_TLS_VERIFY and these
/// files (names in the PKI directory) as ca.pem, cert.pem and key.pem of
/// DOCKER_CERT_PATH: what it printed on standard error.
fn docker_state(engine: &FakeEngine, pki: &Pki, files: &[(&str, &str)]) -> String {
    let certs = TempDir::new().unwrap();
    for (from, to) in files {
        std::fs::copy(pki.path(from), certs.path().join(to)).unwrap();
    }
    let out = berth()
        .arg("state")
        .env("DOCKER_HOST", format!("tcp://127.0.0.1:{}", engine.port))
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", certs.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the fake engine lists no containers");
    let err = text(&out.stderr);
    eprintln!("berth said: {}", err.trim_end());
    err
}

#[test]
fn docker_tls_verifies_the_engine_against_the_ca_in_docker_cert_path() {
    let pki = Pki::new();
    let engine = FakeEngine::start(&pki, false);
    let err = docker_state(&engine, &pki, &[("ca.pem", "ca.pem")]);
    assert!(
        err.starts_with("berth: containers:"),
        "connected and negotiated over TLS; failed only at the listing\n{err}\ns_server:\n{}",
        engine.log()
    );
    assert!(engine.log().contains("FILE:version"), "{}", engine.log());
}

#[test]
fn docker_tls_refuses_an_engine_whose_certificate_another_ca_signed() {
    let pki = Pki::new();
    let engine = FakeEngine::start(&pki, false);
    let err = docker_state(&engine, &pki, &[("other-ca.pem", "ca.pem")]);
    assert!(
        err.contains("cannot reach the Docker engine at https://127.0.0.1:")
            && err.contains("UnknownIssuer"),
        "{err}"
    );
    assert!(!engine.log().contains("FILE:version"), "{}", engine.log());
}

#[test]
fn docker_tls_presents_the_client_certificate_in_docker_cert_path() {
    let pki = Pki::new();
    let engine = FakeEngine::start(&pki, true);
    let with = [
        ("ca.pem", "ca.pem"),
        ("client.pem", "cert.pem"),
        ("client.key", "key.pem"),
    ];
    let err = docker_state(&engine, &pki, &with);
    assert!(
        err.starts_with("berth: containers:"),
        "{err}\ns_server:\n{}",
        engine.log()
    );
    let err = docker_state(&engine, &pki, &[("ca.pem", "ca.pem")]);
    assert!(
        err.contains("cannot reach the Docker engine") && err.contains("CertificateRequired"),
        "refused without a client certificate\n{err}"
    );
}

/// `mosquitto_pub`/`mosquitto_sub` over TLS as the identity `cn`.
fn as_identity(tool: &str, broker: &TlsBroker, pki: &Pki, cn: &str) -> Command {
    let mut cmd = Command::new(tool);
    cmd.args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["--cafile", &pki.arg("ca.pem")])
        .args(["--cert", &pki.arg(&format!("{cn}.pem"))])
        .args(["--key", &pki.arg(&format!("{cn}.key"))])
        .stdin(Stdio::null());
    cmd
}

/// What `cn` receives on `filter` within `secs`.
fn received_as(broker: &TlsBroker, pki: &Pki, cn: &str, filter: &str, secs: u32) -> String {
    let out = as_identity("mosquitto_sub", broker, pki, cn)
        .args(["-t", filter, "-v", "-W", &secs.to_string()])
        .output()
        .expect("mosquitto_sub runs");
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// Issue 26: with client certificates as the devices' identities (the
/// broker takes the user name from the CN) and the fleet's ACL as
/// `examples/mosquitto/` ships it, a device reads nothing of another's
/// prefix, and berth as that device works within its own.
#[test]
fn with_client_certificates_as_identities_a_device_reaches_only_its_own_prefix() {
    let pki = Pki::new();
    let acl = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mosquitto/acl");
    let broker = TlsBroker::start_with(
        &pki,
        true,
        &format!("use_identity_as_username true\nacl_file {}", acl.display()),
    );
    let theirs = "devices/sim-0002/containersupdate/currentstate";
    let out = as_identity("mosquitto_pub", &broker, &pki, "controller")
        .args(["-t", theirs, "-r", "-q", "1", "-m", "{\"secret\":1}"])
        .output()
        .expect("mosquitto_pub runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        received_as(&broker, &pki, "controller", theirs, 2).contains("secret"),
        "the controller reads it\n{}",
        broker.log()
    );
    assert!(!received_as(&broker, &pki, "sim-0001", "devices/#", 2).contains("secret"));

    chmod(&pki.path("sim-0001.key"), 0o600);
    let state = TempDir::new().unwrap();
    let mut run = agent(
        &state,
        &broker,
        &[
            "--mqtt-ca-file".into(),
            pki.arg("ca.pem"),
            "--mqtt-cert-file".into(),
            pki.arg("sim-0001.pem"),
            "--mqtt-key-file".into(),
            pki.arg("sim-0001.key"),
            "--mqtt-topic-prefix".into(),
            "devices/sim-0001/".into(),
        ],
    );
    run.wait_for("connected to the MQTT broker", WAIT);
    let mine = "devices/sim-0001/containersupdate/currentstate";
    let seen = received_as(&broker, &pki, "controller", mine, 10);
    assert!(
        seen.contains(mine),
        "berth's current state reached the controller: {seen}\nberth log:\n{}",
        run.stderr()
    );
    assert!(
        !broker.log().contains("Denied PUBLISH from"),
        "berth published outside its prefix:\n{}",
        broker.log()
    );
    assert!(run.terminate().success(), "{}", run.stderr());
}
