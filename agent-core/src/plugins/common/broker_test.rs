//! Unit-test helpers of the broker outputs: real brokers (Debian's
//! nats-server, mosquitto, mosquitto_sub) started on free loopback ports and
//! killed on drop, and a test CA with server and client certificates.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    l.local_addr().unwrap().port()
}

pub fn require(bin: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(bin);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{bin}` not found: this test needs the Debian package `{package}` (listed in .ci/apt-packages.txt)");
}

/// A child process, killed and reaped on drop; stdout/stderr in `log`.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(bin: &Path, args: &[String], log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Proc { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (at most 20 s) until something accepts connections on `port`.
pub fn wait_tcp(port: u16, p: &Proc) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing listens on {port}:\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}

pub fn nats_server(dir: &Path, port: u16, args: &[&str]) -> Proc {
    let bin = require("nats-server", "nats-server");
    let mut a = vec![
        "-a".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
    ];
    a.extend(args.iter().map(|s| s.to_string()));
    let p = Proc::spawn(&bin, &a, dir.join(format!("nats-{port}.log")));
    wait_tcp(port, &p);
    p
}

/// mosquitto with `conf` lines added to a listener on `port`.
pub fn mosquitto(dir: &Path, port: u16, conf: &str) -> Proc {
    let bin = require("mosquitto", "mosquitto");
    let file = dir.join(format!("mosquitto-{port}.conf"));
    // As root mosquitto would drop to user `mosquitto`, which cannot read
    // the test's private temp dir; `user` does nothing for other users.
    std::fs::write(
        &file,
        format!("user root\nlistener {port} 127.0.0.1\nallow_anonymous true\nlog_dest stderr\nlog_type all\n{conf}\n"),
    )
    .unwrap();
    let p = Proc::spawn(
        &bin,
        &["-c".into(), file.display().to_string()],
        dir.join(format!("mosquitto-{port}.log")),
    );
    wait_tcp(port, &p);
    p
}

/// `mosquitto_sub -t '#' -v` at `qos`; collects the `topic payload` lines.
pub struct Sub {
    _proc: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Sub {
    pub fn start(broker: &Proc, port: u16, qos: u8, extra: &[&str]) -> Sub {
        let bin = require("mosquitto_sub", "mosquitto-clients");
        let id = format!("reader{port}");
        let mut child = Command::new(bin)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                "#",
                "-v",
                "-i",
                &id,
            ])
            .args(["-q", &qos.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto_sub");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                sink.lock().unwrap().push(l);
            }
        });
        let started = Instant::now();
        while !broker
            .log_text()
            .contains(&format!("Received SUBSCRIBE from {id}"))
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "mosquitto_sub did not subscribe:\n{}",
                broker.log_text()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
        Sub {
            _proc: child,
            lines,
        }
    }

    /// Waits until `n` lines arrived (at most 10 s); all lines so far.
    pub async fn wait_for(&self, n: usize) -> Vec<String> {
        let started = Instant::now();
        loop {
            let l = self.lines.lock().unwrap().clone();
            if l.len() >= n || started.elapsed() > Duration::from_secs(10) {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self._proc.kill();
        let _ = self._proc.wait();
    }
}

/// PEM files of a test CA, a server certificate for `localhost` and
/// 127.0.0.1, and a client certificate, all signed by the CA.
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub fn certs(dir: &Path) -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "agent broker test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut server = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    server
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let server_key = KeyPair::generate().unwrap();
    let server = server.signed_by(&server_key, &ca, &ca_key).unwrap();
    let mut client = CertificateParams::new(vec!["agent-client".to_string()]).unwrap();
    client
        .distinguished_name
        .push(DnType::CommonName, "agent-client");
    let client_key = KeyPair::generate().unwrap();
    let client = client.signed_by(&client_key, &ca, &ca_key).unwrap();
    let w = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Certs {
        ca: w("ca.pem", ca.pem()),
        server_cert: w("server.pem", server.pem()),
        server_key: w("server.key", server_key.serialize_pem()),
        client_cert: w("client.pem", client.pem()),
        client_key: w("client.key", client_key.serialize_pem()),
    }
}
