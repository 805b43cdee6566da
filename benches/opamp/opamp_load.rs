//! Load run of the OpAMP client: N simulated agents polling the loopback
//! test server (tests/opamp/server.py, upstream opamp_pb2, HTTPS).
//!
//! `opamp_load [clients] [seconds] [poll_s]` (defaults 1000, 30, 10).
//! Each simulated agent sends what the agent sends: a full first message
//! (description, health of the shipped etc/'s actors, effective config of
//! the shipped etc/), then heartbeats (UID, sequence number, capabilities,
//! health) every `poll_s` ±10 %, through the agent's own `opamp::client::post`.
//! Starts are spread over the first poll interval, as a fleet's are.
//! Prints message sizes, requests/s, latency percentiles, errors, and the
//! server's and this process's CPU seconds. Loopback only.
use actix::prelude::*;
use agent_core::opamp::health::HealthTracker;
use agent_core::opamp::{self, proto, OpampSettings};
use agent_core::{AgentConfig, PipelineSupervisor, Plan, Registry, Status};
use prost::Message as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let clients: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let seconds: f64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(30.0);
    let poll: f64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(10.0);
    let root = std::env::temp_dir().join(format!("opamp-load-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("temp dir");
    write_certs(&root);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/opamp/server.py");
    let mut server = std::process::Command::new("python3")
        .arg(script)
        .args(["--port", "0", "--cert"])
        .arg(root.join("cert.pem"))
        .arg("--key")
        .arg(root.join("key.pem"))
        .arg("--dir")
        .arg(&root)
        .spawn()
        .expect("python3 tests/opamp/server.py");
    let port: u16 = loop {
        if let Ok(p) = std::fs::read_to_string(root.join("port")) {
            break p.trim().parse().expect("port");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let etc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc");
    let settings = OpampSettings {
        endpoint: format!("https://127.0.0.1:{port}/v1/opamp"),
        ca_file: Some(root.join("ca.pem")),
        headers: vec![("Authorization".into(), "Bearer load-test".into())],
        poll: Duration::from_secs_f64(poll),
        insecure: false,
        retry_max: Duration::from_secs(30),
        timeout: Duration::from_secs(30),
        uid_file: root.join("uid"),
        state_file: root.join("state"),
        host_name: "load-host".into(),
    };

    let system = actix_rt::System::new();
    let (full, beat) = system.block_on(messages(&etc));
    let components = beat
        .health
        .as_ref()
        .map_or(0, |h| h.component_health_map.len());
    let effective = full
        .effective_config
        .as_ref()
        .map_or(0, |e| e.encoded_len());
    println!(
        "message sizes: first (full state) {} bytes (effective config {effective}), heartbeat {} bytes \
         ({components} health components) (protobuf, uncompressed)",
        full.encoded_len(),
        beat.encoded_len()
    );
    let stats = Arc::new(Stats::default());
    let lat = Arc::new(Mutex::new(Vec::<u32>::new()));
    let cpu_server_0 = cpu_of(server.id());
    let cpu_self_0 = cpu_of(std::process::id());
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(seconds);
    system.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..clients {
            let (s, stats, lat) = (settings.clone(), stats.clone(), lat.clone());
            let (mut full, mut beat) = (full.clone(), beat.clone());
            let uid = uuid::Uuid::now_v7().as_bytes().to_vec();
            full.instance_uid = uid.clone();
            beat.instance_uid = uid;
            let start = Duration::from_secs_f64(poll * i as f64 / clients as f64);
            tasks.push(actix_rt::spawn(async move {
                tokio::time::sleep(start).await;
                let mut seq = 0u64;
                while Instant::now() < end {
                    let mut msg = if seq == 0 { full.clone() } else { beat.clone() };
                    msg.sequence_num = seq;
                    seq += 1;
                    let body = msg.encode_to_vec();
                    let n = body.len() as u64;
                    let t = Instant::now();
                    match opamp::client::post(&s, body).await {
                        Ok(answer) => {
                            stats.ok.fetch_add(1, Relaxed);
                            stats.sent.fetch_add(n, Relaxed);
                            stats
                                .received
                                .fetch_add(answer.encoded_len() as u64, Relaxed);
                            let us = t.elapsed().as_micros().min(u32::MAX as u128) as u32;
                            lat.lock().unwrap_or_else(|e| e.into_inner()).push(us);
                        }
                        Err(_) => {
                            stats.errors.fetch_add(1, Relaxed);
                        }
                    }
                    let wait = s.poll.mul_f64(rand::random_range(0.9..1.1));
                    tokio::time::sleep(wait).await;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let wall = t0.elapsed().as_secs_f64();
    let cpu_server = cpu_of(server.id()) - cpu_server_0;
    let cpu_self = cpu_of(std::process::id()) - cpu_self_0;
    let _ = server.kill();
    let _ = server.wait();
    let mut l = lat.lock().unwrap_or_else(|e| e.into_inner()).clone();
    l.sort_unstable();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let ok = stats.ok.load(Relaxed);
    println!(
        "{clients} clients, poll {poll} s, {wall:.1} s: {ok} requests ({:.1}/s), {} errors",
        ok as f64 / wall,
        stats.errors.load(Relaxed)
    );
    println!(
        "request bytes {} ({:.0} B/s), answer bytes {} (decoded)",
        stats.sent.load(Relaxed),
        stats.sent.load(Relaxed) as f64 / wall,
        stats.received.load(Relaxed)
    );
    println!(
        "latency ms: p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "CPU seconds: server {cpu_server:.2} ({:.1} % of a core), clients {cpu_self:.2}",
        100.0 * cpu_server / wall
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[derive(Default)]
struct Stats {
    ok: AtomicU64,
    errors: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

/// The first message and a heartbeat of an agent on the shipped etc/.
async fn messages(etc: &Path) -> (proto::AgentToServer, proto::AgentToServer) {
    let registry = Arc::new(Registry::with_builtins());
    let config = AgentConfig::load(etc).expect("shipped etc/ loads");
    let plan = Plan::new(&config, &registry).expect("shipped etc/ plans");
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let sup = PipelineSupervisor::new(config, plan, registry, log)
        .unscheduled()
        .start();
    let report = sup.send(Status).await.expect("status");
    let now = u64::try_from(agent_core::metric::now_ns()).unwrap_or(0);
    let health = HealthTracker::default().report(&report, now, now, "ok");
    let uid = [7u8; 16];
    let beat = proto::AgentToServer {
        instance_uid: uid.to_vec(),
        capabilities: opamp::CAPABILITIES,
        health: Some(health),
        ..Default::default()
    };
    let mut full = beat.clone();
    full.agent_description = Some(opamp::description("load-host.example.com", &uid));
    full.effective_config = Some(proto::EffectiveConfig {
        config_map: Some(opamp::effective::config_map(etc)),
    });
    (full, beat)
}

/// User + system CPU seconds of a process.
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 (utime, stime), counted after the `)`.
    (ticks(11) + ticks(12)) / 100.0
}

fn write_certs(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "opamp load CA");
    let ca_key = KeyPair::generate().expect("key");
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("leaf")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf cert");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    std::fs::write(dir.join("cert.pem"), leaf.pem()).expect("write");
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).expect("write");
    dir.to_path_buf()
}
