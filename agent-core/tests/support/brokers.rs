//! Brokers from Debian packages (nats-server, mosquitto, mosquitto-clients)
//! started by the tests on free 127.0.0.1 ports, and small clients that
//! read back what they hold (raw NATS protocol over a socket, mosquitto_sub).
//! Use with `backends.rs` (the `Backend` process wrapper).
#![allow(dead_code)]
use super::backends::{free_port, get, require, Backend};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `nats-server` on `port` (monitor on `monitor`, the Backend's port), with
/// JetStream storing in `dir/js` when `js`.
pub async fn nats_server(dir: &Path, port: u16, monitor: u16, js: bool, extra: &[&str]) -> Backend {
    let bin = require("nats-server", "nats-server");
    let mut args = vec![
        "-a".to_string(),
        "127.0.0.1".to_string(),
        "-p".to_string(),
        port.to_string(),
        "-m".to_string(),
        monitor.to_string(),
    ];
    if js {
        args.push("-js".into());
        args.push("-sd".into());
        args.push(dir.join("js").display().to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut b = Backend::spawn("nats-server", bin, &args, monitor, dir);
    b.wait_ready("/healthz", 200, Duration::from_secs(30)).await;
    b
}

/// The message count of `stream`, from the monitor's `/jsz?streams=true`.
pub async fn jsz_messages(nats: &Backend, stream: &str) -> Option<u64> {
    let (status, body) = get(&nats.url("/jsz?streams=true")).await.ok()?;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["account_details"]
        .as_array()?
        .iter()
        .filter_map(|a| a["stream_detail"].as_array())
        .flatten()
        .find(|s| s["name"] == stream)
        .and_then(|s| s["state"]["messages"].as_u64())
}

/// A raw NATS connection for the tests (blocking, 10 s timeouts): CONNECT
/// and a PING/PONG.
pub struct RawNats {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl RawNats {
    pub fn connect(port: u16) -> RawNats {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to nats-server");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let w = s.try_clone().unwrap();
        let mut c = RawNats {
            r: BufReader::new(s),
            w,
        };
        let info = c.line();
        assert!(info.starts_with("INFO "), "{info}");
        c.send(b"CONNECT {\"verbose\":false,\"headers\":true,\"no_responders\":true}\r\nPING\r\n");
        c.until_pong();
        c
    }

    pub fn send(&mut self, b: &[u8]) {
        self.w.write_all(b).unwrap();
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).expect("read from nats-server");
        assert!(!l.is_empty(), "nats-server closed the connection");
        l.trim_end().to_string()
    }

    pub fn until_pong(&mut self) {
        loop {
            let l = self.line();
            if l == "PONG" {
                return;
            }
            assert!(!l.starts_with("-ERR"), "{l}");
        }
    }

    /// The next MSG/HMSG: (subject, payload); answers PINGs.
    pub fn next_msg(&mut self) -> (String, Vec<u8>) {
        loop {
            let l = self.line();
            if l == "PING" {
                self.send(b"PONG\r\n");
                continue;
            }
            let parts: Vec<&str> = l.split_ascii_whitespace().collect();
            let (hdr, total) = match parts.first().copied() {
                Some("MSG") => (0, parts.last().unwrap().parse::<usize>().unwrap()),
                Some("HMSG") => (
                    parts[parts.len() - 2].parse::<usize>().unwrap(),
                    parts[parts.len() - 1].parse::<usize>().unwrap(),
                ),
                _ => continue,
            };
            let mut body = vec![0u8; total + 2];
            self.r.read_exact(&mut body).unwrap();
            body.truncate(total);
            return (parts[1].to_string(), body[hdr..].to_vec());
        }
    }

    /// A request/reply (JetStream API calls).
    pub fn request(&mut self, subject: &str, payload: &str) -> serde_json::Value {
        let inbox = format!("_INBOX.test{}", free_port());
        self.send(
            format!(
                "SUB {inbox} 99\r\nPUB {subject} {inbox} {}\r\n{payload}\r\n",
                payload.len()
            )
            .as_bytes(),
        );
        let (_, body) = self.next_msg();
        self.send(b"UNSUB 99\r\n");
        serde_json::from_slice(&body).unwrap()
    }
}

/// Each subject of `stream` with its message count (STREAM.INFO with a
/// subjects filter).
pub fn stream_subjects(port: u16, stream: &str) -> std::collections::BTreeMap<String, u64> {
    let mut c = RawNats::connect(port);
    let v = c.request(
        &format!("$JS.API.STREAM.INFO.{stream}"),
        "{\"subjects_filter\":\">\"}",
    );
    v["state"]["subjects"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

/// `mosquitto` on 127.0.0.1:`port`, verbose log in `dir/mosquitto.log`;
/// with `persist`, sessions and queued messages are saved in `dir` at a
/// graceful stop and restored at start.
pub async fn mosquitto(dir: &Path, port: u16, persist: bool, extra_conf: &str) -> Backend {
    let bin = require("mosquitto", "mosquitto");
    std::fs::create_dir_all(dir).unwrap();
    let conf = dir.join("mosquitto.conf");
    let mut text = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest stderr\nlog_type all\n{extra_conf}\n"
    );
    if persist {
        // As root, mosquitto drops to user `mosquitto`, which cannot write
        // the test's private temp dir (`user` does nothing for other users).
        text.push_str(&format!(
            "user root\npersistence true\npersistence_location {}/\n",
            dir.display()
        ));
    }
    std::fs::write(&conf, text).unwrap();
    let args = vec!["-c".to_string(), conf.display().to_string()];
    let b = Backend::spawn("mosquitto", bin, &args, port, dir);
    wait_tcp(port, Duration::from_secs(20)).await;
    b
}

pub async fn wait_tcp(port: u16, limit: Duration) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < limit,
            "nothing listens on {port} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `dir/<name>.log` contains `needle`.
pub async fn wait_log(dir: &Path, name: &str, needle: &str, limit: Duration) {
    let log = dir.join(format!("{name}.log"));
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "`{needle}` not in {} within {limit:?}:\n{text}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `mosquitto_sub -t '#' -q 1 -v` with a persistent session (`-c -i`), so
/// it is subscribed again with its queued messages after a broker restart;
/// its output lines (`topic payload`) are collected.
pub struct MosquittoSub {
    child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl MosquittoSub {
    pub async fn start(broker_dir: &Path, port: u16, id: &str) -> MosquittoSub {
        let bin: PathBuf = require("mosquitto_sub", "mosquitto-clients");
        let mut child = Command::new(bin)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                "#",
                "-q",
                "1",
                "-v",
            ])
            .args(["-c", "-i", id])
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
        wait_log(
            broker_dir,
            "mosquitto",
            &format!("Received SUBSCRIBE from {id}"),
            Duration::from_secs(20),
        )
        .await;
        MosquittoSub { child, lines }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until at least `n` lines arrived (at most `limit`).
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<String> {
        let started = Instant::now();
        loop {
            let l = self.lines();
            if l.len() >= n || started.elapsed() > limit {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for MosquittoSub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
