//! The OpAMP client end to end: the real `agent` binary against a loopback
//! OpAMP server in Python (tests/opamp/server.py) that decodes with the
//! upstream `opamp_pb2` of the PyPI package opentelemetry-opamp-client,
//! over HTTPS with a CA this test generates.
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for something the agent should do within a few polls;
/// reaching it fails the test with what was seen (it is not a speed check).
const PATIENCE: Duration = Duration::from_secs(20);

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_agent"))
}

/// A CA and a server certificate for 127.0.0.1 and localhost, as PEM files
/// in `dir`: ca.pem, cert.pem, key.pem.
fn write_certs(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "agent opamp test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
}

/// The Python OpAMP server, its state folder and port.
struct Server {
    dir: PathBuf,
    child: Option<Child>,
    port: u16,
}

impl Server {
    fn start(dir: &Path, port: u16) -> Server {
        let _ = std::fs::remove_file(dir.join("port"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/opamp/server.py");
        let child = Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string()])
            .arg("--cert")
            .arg(dir.join("cert.pem"))
            .arg("--key")
            .arg(dir.join("key.pem"))
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 runs (pip install opentelemetry-opamp-client protobuf)");
        let deadline = Instant::now() + PATIENCE;
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(dir.join("port")) {
                break p.trim().parse().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "the OpAMP test server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Server {
            dir: dir.to_path_buf(),
            child: Some(child),
            port,
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("log.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for a message, from the `from`th on, that `f` accepts.
    fn wait_for(&self, from: usize, what: &str, f: impl Fn(&Value) -> bool) -> (usize, Value) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = self.log();
            if let Some((i, m)) = log.iter().enumerate().skip(from).find(|(_, m)| f(m)) {
                return (i, m.clone());
            }
            assert!(
                Instant::now() < deadline,
                "no message with {what}; last seen: {:?}",
                log.last()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn offer(&self, hash: &str, files: &[(&str, &str)]) {
        let files: serde_json::Map<String, Value> = files
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let body = serde_json::json!({"hash": hash, "files": files});
        let tmp = self.dir.join("offer.tmp");
        std::fs::write(&tmp, body.to_string()).unwrap();
        std::fs::rename(tmp, self.dir.join("offer.json")).unwrap();
    }

    fn set_mode(&self, mode: Option<&str>) {
        match mode {
            Some(m) => std::fs::write(self.dir.join("mode"), m).unwrap(),
            None => {
                let _ = std::fs::remove_file(self.dir.join("mode"));
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Agent(Child);

impl Agent {
    fn start(etc: &Path) -> Agent {
        Agent(
            agent()
                .arg("run")
                .arg("-c")
                .arg(etc)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    fn stop(&mut self) {
        // SIGTERM: the agent shuts down cleanly and frees its socket.
        // SAFETY: signalling the child this test started.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const MAIN: &str =
    "reload_sec: 300\ndelay_sec: 0\ninterval: 0.2\nopen: [demo]\ncommon_output: [file]\n";

/// etc/ with main.yaml (demo into a file output) and the OpAMP settings in
/// etc/main/main.yaml, the local layer offers cannot write.
fn etc_for(root: &Path, port: u16) -> PathBuf {
    let etc = root.join("etc");
    std::fs::create_dir_all(etc.join("main")).unwrap();
    std::fs::create_dir_all(etc.join("output")).unwrap();
    std::fs::write(etc.join("main.yaml"), MAIN).unwrap();
    // The file output's relative paths start at the working directory.
    let data = root.join("data/metrics.jsonl");
    std::fs::write(
        etc.join("output/file.yaml"),
        format!(
            "path: {}\nformat: json\nflush_interval: 0.2\n",
            data.display()
        ),
    )
    .unwrap();
    std::fs::write(root.join("opamp-headers.yaml"), "X-Tenant: tenant-7\n").unwrap();
    std::fs::write(
        etc.join("main/main.yaml"),
        format!(
            "opamp:\n  endpoint: https://127.0.0.1:{port}/v1/opamp\n  ca_file: ca.pem\n  \
             headers: {{Authorization: 'Bearer s3cret-token'}}\n  headers_file: opamp-headers.yaml\n  \
             poll_sec: 0.3\n  retry_max_sec: 1\n"
        ),
    )
    .unwrap();
    etc
}

fn status_of(m: &Value) -> Option<(&str, &str, &str)> {
    let s = m.get("remote_status")?;
    Some((
        s["hash"].as_str()?,
        s["status"].as_str()?,
        s["error"].as_str()?,
    ))
}

fn metrics_named(root: &Path, name: &str) -> usize {
    let needle = format!("\"name\":\"{name}\"");
    std::fs::read_to_string(root.join("data/metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn opamp_first_report_offers_outage_and_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("agent");
    let srv_dir = tmp.path().join("server");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&srv_dir).unwrap();
    write_certs(&srv_dir);
    std::fs::copy(srv_dir.join("ca.pem"), root.join("ca.pem")).unwrap();
    let mut server = Server::start(&srv_dir, 0);
    let etc = etc_for(&root, server.port);
    let mut agent = Agent::start(&etc);

    // First report: description, capabilities, health, effective config.
    let (_, first) = server.wait_for(0, "a description", |m| m.get("identifying").is_some());
    assert_eq!(first["seq"], 0, "{first}");
    assert_eq!(first["content_type"], "application/x-protobuf");
    assert_eq!(first["authorization"], "Bearer s3cret-token");
    assert_eq!(first["tenant"], "tenant-7", "headers_file is sent");
    assert_eq!(first["uid"].as_str().unwrap().len(), 32, "16-byte UID");
    let id = &first["identifying"];
    assert_eq!(id["service.name"], "agent");
    assert_eq!(id["service.version"], env!("CARGO_PKG_VERSION"));
    let host = &first["non_identifying"];
    assert_eq!(host["os.type"], "linux");
    assert!(!host["host.name"].as_str().unwrap().is_empty(), "{host}");
    assert!(!host["host.arch"].as_str().unwrap().is_empty(), "{host}");
    // ReportsStatus, AcceptsRemoteConfig, ReportsEffectiveConfig,
    // ReportsHealth, ReportsRemoteConfig, ReportsHeartbeat.
    let caps = first["capabilities"].as_u64().unwrap();
    for bit in [0x1, 0x2, 0x4, 0x800, 0x1000, 0x2000] {
        assert!(caps & bit != 0, "capability {bit:#x} missing in {caps:#x}");
    }
    let health = &first["health"];
    assert_eq!(health["healthy"], true, "{health}");
    assert!(health["start_time_unix_nano"].as_u64().unwrap() > 0);
    assert!(health["components"].get("input/demo").is_some(), "{health}");
    let effective = &first["effective"];
    assert!(effective["main.yaml"].as_str().unwrap().contains("demo"));
    let local = effective["main/main.yaml"].as_str().unwrap();
    assert!(
        !local.contains("s3cret-token"),
        "header value masked: {local}"
    );
    assert!(local.contains("***"), "{local}");
    let uid = first["uid"].as_str().unwrap().to_string();
    let uid_file = std::fs::read_to_string(root.join("run/opamp-uid")).unwrap();
    assert_eq!(
        uid_file.trim().replace('-', ""),
        uid,
        "run/opamp-uid holds the UID"
    );

    // A good offer: a second input. APPLYING, then APPLIED with its hash.
    let from = server.log().len();
    let good_hash = "a1a1a1a1";
    server.offer(
        good_hash,
        &[
            (
                "main.yaml",
                &MAIN.replace("open: [demo]", "open: [demo, demo2]"),
            ),
            ("input/demo2.yaml", "plugin: demo\ninterval: 0.2\n"),
        ],
    );
    let (i, _) = server.wait_for(from, "APPLYING", |m| {
        status_of(m).is_some_and(|(h, s, _)| h == good_hash && s.ends_with("APPLYING"))
    });
    let (_, applied) = server.wait_for(i, "APPLIED", |m| {
        status_of(m).is_some_and(|(h, s, _)| h == good_hash && s.ends_with("APPLIED"))
    });
    let eff = &applied["effective"];
    assert_eq!(
        eff["input/demo2.yaml"], "plugin: demo\ninterval: 0.2\n",
        "{applied}"
    );
    assert!(
        eff["main.yaml"].as_str().unwrap().contains("demo2"),
        "{applied}"
    );
    let written = etc.join("input/demo2.yaml");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&written).unwrap().permissions().mode() & 0o777,
        0o600
    );
    wait_until("demo2 metrics in the file output", || {
        metrics_named(&root, "demo2") > 0
    });

    // A bad offer: an unknown input plugin. FAILED naming it; nothing
    // written; the good configuration keeps running.
    let from = server.log().len();
    let bad_hash = "b2b2b2b2";
    server.offer(
        bad_hash,
        &[
            (
                "main.yaml",
                &MAIN.replace("open: [demo]", "open: [demo, nosuch]"),
            ),
            ("input/nosuch.yaml", "interval: 1\n"),
        ],
    );
    let (_, failed) = server.wait_for(from, "FAILED for the bad offer", |m| {
        status_of(m).is_some_and(|(h, s, _)| h == bad_hash && s.ends_with("FAILED"))
    });
    let (_, _, err) = status_of(&failed).unwrap();
    assert!(err.contains("nosuch"), "{err}");
    assert!(
        err.contains("main.yaml") && err.contains("open"),
        "file and key: {err}"
    );
    assert!(!etc.join("input/nosuch.yaml").exists(), "nothing written");
    assert!(std::fs::read_to_string(etc.join("main.yaml"))
        .unwrap()
        .contains("demo2"));
    let before = metrics_named(&root, "demo2");
    wait_until("demo2 still flowing after the refused offer", || {
        metrics_named(&root, "demo2") > before
    });

    // `../x.yaml` fails the whole offer.
    let from = server.log().len();
    let escape_hash = "c3c3c3c3";
    server.offer(
        escape_hash,
        &[("main.yaml", MAIN), ("../x.yaml", "open: [demo]\n")],
    );
    let (_, refused) = server.wait_for(from, "FAILED for ../x.yaml", |m| {
        status_of(m).is_some_and(|(h, s, _)| h == escape_hash && s.ends_with("FAILED"))
    });
    let (_, _, err) = status_of(&refused).unwrap();
    assert!(err.contains("../x.yaml") && err.contains("`..`"), "{err}");
    assert!(!root.join("x.yaml").exists());
    assert!(std::fs::read_to_string(etc.join("main.yaml"))
        .unwrap()
        .contains("demo2"));

    // An offer that would change the opamp: settings is refused too.
    let from = server.log().len();
    let good_main = MAIN.replace("open: [demo]", "open: [demo, demo2]");
    server.offer(
        "d4d4d4d4",
        &[
            ("main.yaml", &good_main),
            ("input/demo2.yaml", "plugin: demo\ninterval: 0.2\n"),
            (
                "host.yaml",
                "opamp: {endpoint: 'https://elsewhere.example/v1/opamp'}\n",
            ),
        ],
    );
    let (_, cut_off) = server.wait_for(from, "FAILED for the opamp change", |m| {
        status_of(m).is_some_and(|(h, s, _)| h == "d4d4d4d4" && s.ends_with("FAILED"))
    });
    assert!(
        status_of(&cut_off).unwrap().2.contains("opamp"),
        "{cut_off}"
    );
    assert!(!etc.join("host.yaml").exists());

    // The server answers 503 with Retry-After, then goes away for 30 s,
    // then comes back on the same port: the agent keeps retrying (backoff
    // capped at 1 s here) and reports its whole state again.
    server.set_mode(Some("503 1"));
    let from = server.log().len();
    server.wait_for(from + 1, "a retry after the 503", |_| true);
    server.set_mode(None);
    let port = server.port;
    server.stop();
    std::thread::sleep(Duration::from_secs(30));
    let from = server.log().len();
    let server = Server::start(&srv_dir, port);
    let (_, back) = server.wait_for(from, "the full state after the outage", |m| {
        m.get("identifying").is_some()
    });
    assert_eq!(back["uid"], uid.as_str());
    assert_eq!(
        status_of(&back).map(|(h, s, _)| (h.to_string(), s.to_string())),
        Some(("d4d4d4d4".into(), "RemoteConfigStatuses_FAILED".into())),
        "{back}"
    );
    assert!(back.get("effective").is_some(), "{back}");

    // Restart: the same UID, the last offer not applied again. SIGTERM
    // says goodbye first (AgentDisconnect).
    let from = server.log().len();
    agent.stop();
    let (_, bye) = server.wait_for(from, "AgentDisconnect at shutdown", |m| {
        m["disconnect"] == true
    });
    assert_eq!(bye["uid"], uid.as_str());
    let from = server.log().len();
    let _agent = Agent::start(&etc);
    let (i, again) = server.wait_for(from, "a report after the restart", |m| {
        m.get("identifying").is_some() && m["seq"] == 0
    });
    assert_eq!(again["uid"], uid.as_str(), "UID survives a restart");
    server.wait_for(i + 3, "a few more polls", |_| true);
    let statuses: Vec<String> = server.log()[from..]
        .iter()
        .filter_map(|m| status_of(m).map(|(h, s, _)| format!("{h} {s}")))
        .collect();
    assert!(
        statuses
            .iter()
            .all(|s| s == "d4d4d4d4 RemoteConfigStatuses_FAILED"),
        "the same hash is not applied again: {statuses:?}"
    );
}

#[test]
fn opamp_plain_http_is_refused_unless_insecure() {
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("main.yaml"),
        "open: [demo]\nopamp: {endpoint: 'http://127.0.0.1:9/v1/opamp'}\n",
    )
    .unwrap();
    let out = agent()
        .arg("validate")
        .arg("-c")
        .arg(&etc)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("main.yaml: key `opamp.endpoint`: must be an https:// URL"),
        "{err}"
    );
    std::fs::write(
        etc.join("main.yaml"),
        "open: [demo]\nopamp: {endpoint: 'http://127.0.0.1:9/v1/opamp', insecure: true}\n",
    )
    .unwrap();
    let out = agent()
        .arg("validate")
        .arg("-c")
        .arg(&etc)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A missing ca_file is named with its key.
    std::fs::write(
        etc.join("main.yaml"),
        "open: [demo]\nopamp: {endpoint: 'https://127.0.0.1:9/v1/opamp', ca_file: nope.pem}\n",
    )
    .unwrap();
    let out = agent()
        .arg("validate")
        .arg("-c")
        .arg(&etc)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("key `opamp.ca_file`") && err.contains("nope.pem"),
        "{err}"
    );
}

#[test]
fn opamp_health_turns_unhealthy_on_drops_and_retry_hints_are_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("agent");
    let srv_dir = tmp.path().join("server");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&srv_dir).unwrap();
    write_certs(&srv_dir);
    std::fs::copy(srv_dir.join("ca.pem"), root.join("ca.pem")).unwrap();
    let server = Server::start(&srv_dir, 0);
    let etc = etc_for(&root, server.port);
    // Backoff capped at 0.5 s, so a 2 s pause can only be the server's hint.
    let local = std::fs::read_to_string(etc.join("main/main.yaml")).unwrap();
    std::fs::write(
        etc.join("main/main.yaml"),
        local.replace("retry_max_sec: 1", "retry_max_sec: 0.5"),
    )
    .unwrap();
    // An output nobody listens to, with room for one metric: it drops.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    std::fs::write(
        etc.join("main.yaml"),
        "reload_sec: 300\ndelay_sec: 0\ninterval: 0.05\nopen: [demo]\ncommon_output: [http]\n",
    )
    .unwrap();
    std::fs::write(
        etc.join("output/http.yaml"),
        format!(
            "url: http://127.0.0.1:{port}/ingest\npassword: hunter2\nusername: u\nbatch_size: 1\n\
             buffer_limit: 1\nflush_interval: 0.05\nretry_max_sec: 0.1\nconnect_timeout: 1\n"
        ),
    )
    .unwrap();
    let _ = std::fs::remove_file(etc.join("output/file.yaml"));
    let _agent = Agent::start(&etc);
    let (_, sick) = server.wait_for(0, "unhealthy health", |m| m["health"]["healthy"] == false);
    let h = &sick["health"];
    let err = h["last_error"].as_str().unwrap();
    assert!(
        err.contains("output/http") && err.contains("dropped"),
        "{h}"
    );
    assert_eq!(h["components"]["output/http"]["healthy"], false, "{h}");
    assert_eq!(h["components"]["input/demo"]["healthy"], true, "{h}");
    assert!(h["status"].as_str().unwrap().starts_with("degraded"), "{h}");
    let (_, full) = server.wait_for(0, "an effective config", |m| m.get("effective").is_some());
    let http = full["effective"]["output/http.yaml"].as_str().unwrap();
    assert!(
        !http.contains("hunter2") && http.contains("password: '***'"),
        "{http}"
    );

    // A local edit: reloaded, and its effective config reported.
    let from = server.log().len();
    let edited = std::fs::read_to_string(etc.join("output/http.yaml"))
        .unwrap()
        .replace("flush_interval: 0.05", "flush_interval: 0.07");
    std::fs::write(etc.join("output/http.yaml"), edited).unwrap();
    server.wait_for(from, "the effective config after a local reload", |m| {
        m["effective"]["output/http.yaml"]
            .as_str()
            .is_some_and(|t| t.contains("flush_interval: 0.07"))
    });

    for mode in ["503 2", "unavailable 2"] {
        server.set_mode(Some(mode));
        let from = server.log().len();
        let kind = mode.split(' ').next().unwrap();
        let (i, refused) = server.wait_for(from, "a refused poll", |m| m["answer"] == kind);
        server.set_mode(None);
        let (_, next) = server.wait_for(i + 1, "the poll after the hint", |_| true);
        let gap = next["t"].as_f64().unwrap() - refused["t"].as_f64().unwrap();
        assert!(
            gap >= 1.9,
            "{mode}: next poll after {gap:.2} s, not after the 2 s hint"
        );
    }
}
