//! The mqtt and nats outputs through the whole pipeline against real
//! brokers from Debian packages (nats-server with JetStream, mosquitto,
//! mosquitto_sub), started on free loopback ports: every metric read back
//! from the broker, the broker stopped mid-stream and restarted, and the
//! agent crashing while the broker is down with a disk buffer.
#[path = "support/backends.rs"]
mod backends;
#[path = "support/brokers.rs"]
mod brokers;
mod common;

use actix::prelude::*;
use agent_core::{
    Accumulator, AgentConfig, Input, Metric, PipelineSupervisor, Plan, PluginResult, Registry,
    Shutdown, Status,
};
use backends::*;
use brokers::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

/// One metric per gather: `fault seq=<n>` at the gather time.
struct Seq {
    next: Arc<AtomicU64>,
}

impl Input for Seq {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        let i = self.next.fetch_add(1, Ordering::SeqCst);
        acc.add(
            Metric::new(acc.name().clone(), acc.timestamp_ns())
                .with_tag("host_name", "web 1")
                .with_field("seq", i),
        );
        Ok(())
    }
}

fn seq_registry(next: Arc<AtomicU64>) -> Registry {
    let mut r = Registry::with_builtins();
    r.add_input("fault", "", "", move |_| Ok(Seq { next: next.clone() }));
    r
}

/// Asserts `counts` (seq -> times stored) holds 0..n exactly once each.
fn assert_each_once(counts: &BTreeMap<u64, u64>, n: u64, what: &str) {
    let dups: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    let missing: Vec<u64> = (0..n).filter(|s| !counts.contains_key(s)).collect();
    println!(
        "{what}: gathered {n}, stored {} distinct, duplicates {dups:?}, missing {missing:?}",
        counts.len()
    );
    assert!(dups.is_empty(), "{what}: duplicates {dups:?}");
    assert!(missing.is_empty(), "{what}: missing {missing:?}");
    assert_eq!(counts.len() as u64, n, "{what}: nothing else stored");
}

/// seq -> count from a JetStream stream whose subjects end in the seq.
fn stream_seqs(port: u16, stream: &str) -> BTreeMap<u64, u64> {
    stream_subjects(port, stream)
        .into_iter()
        .map(|(s, c)| (s.rsplit('.').next().unwrap().parse().unwrap(), c))
        .collect()
}

async fn wait_stream(nats: &Backend, stream: &str, n: u64) -> u64 {
    let started = Instant::now();
    loop {
        let got = jsz_messages(nats, stream).await.unwrap_or(0);
        if got >= n || started.elapsed() > Duration::from_secs(15) {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn js_output(port: u16, extra: &str) -> String {
    format!(
        "output:\n  nats: {{servers: ['nats://127.0.0.1:{port}'], subject: 'agent.{{name}}.{{tag:seq}}', \
         jetstream: {{stream: AGENT}}, batch_size: 20, flush_interval: 0.1, retry_max_sec: 0.5, timeout: 2, connect_timeout: 1{extra}}}\n"
    )
}

#[actix_rt::test]
async fn nats_jetstream_holds_every_metric_once_across_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (port, mon) = (free_port(), free_port());
    let mut nats = nats_server(dir.path(), port, mon, true, &[]).await;
    let next = Arc::new(AtomicU64::new(0));
    let r = seq_registry(next.clone());
    let (_d, etc) = common::etc(&[(
        "main.yaml",
        &format!(
            "open: [fault]\ninterval: 0.05\ndelay_sec: 0\ncommon_output: [nats]\n{}",
            js_output(port, "")
        ),
    )]);
    let cfg = AgentConfig::load(&etc).unwrap();
    let plan = Plan::new(&cfg, &r).unwrap();
    let sup = PipelineSupervisor::new(cfg, plan, Arc::new(r), logger()).start();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = jsz_messages(&nats, "AGENT").await.unwrap_or(0);
    nats.stop().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let status = sup.send(Status).await.unwrap();
    let out = status.find("output", "nats").unwrap();
    println!(
        "before the stop: {before} in the stream; while down: gathered {}, buffered {}, errors {}",
        next.load(Ordering::SeqCst),
        out.stats.buffered,
        out.stats.errors
    );
    assert!(before > 0, "messages reached the stream before the stop");
    assert!(
        out.stats.errors > 0,
        "writes failed while the server was down"
    );
    assert!(out.stats.buffered > 0);
    let nats = nats_server(dir.path(), port, mon, true, &[]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = sup
        .send(Shutdown {
            deadline: Duration::from_secs(15),
        })
        .await
        .unwrap();
    assert_eq!(report.undelivered, 0);
    let n = next.load(Ordering::SeqCst);
    assert_eq!(
        wait_stream(&nats, "AGENT", n).await,
        n,
        "/jsz message count"
    );
    assert_each_once(&stream_seqs(port, "AGENT"), n, "nats server restart");
}

/// One agent life of the `fault` input into `output`
/// ([`backends::agent_life`]).
fn agent_life(
    etc: PathBuf,
    next: Arc<AtomicU64>,
    gathers: usize,
    output: &'static str,
    crash: bool,
) -> std::thread::JoinHandle<(u64, usize)> {
    backends::agent_life(
        etc,
        seq_registry(next),
        gathers,
        gathers as u64,
        output,
        crash,
    )
}

#[actix_rt::test]
async fn nats_agent_crash_while_server_down_replays_the_disk_buffer_once() {
    let dir = tempfile::tempdir().unwrap();
    let (port, mon) = (free_port(), free_port());
    let buf = dir.path().join("buffer");
    let (_d, etc) = common::etc(&[(
        "main.yaml",
        &format!(
            "open: [fault]\ninterval: 3600\ndelay_sec: 0\ncommon_output: [nats]\n{}",
            js_output(
                port,
                &format!(
                    ", disk_buffer: {{path: '{}', max_bytes: 10 MB}}",
                    buf.display()
                )
            )
        ),
    )]);
    let next = Arc::new(AtomicU64::new(0));
    // Life 1: 100 metrics delivered, the server stops, 200 more gathered,
    // then the agent "crashes".
    let mut nats = nats_server(dir.path(), port, mon, true, &[]).await;
    let life = agent_life(etc.clone(), next.clone(), 100, "nats", false);
    let (_, undelivered) = tokio::task::spawn_blocking(move || life.join().unwrap())
        .await
        .unwrap();
    assert_eq!(undelivered, 0);
    assert_eq!(wait_stream(&nats, "AGENT", 100).await, 100);
    nats.stop().await;
    let life = agent_life(etc.clone(), next.clone(), 200, "nats", true);
    let (taken, _) = tokio::task::spawn_blocking(move || life.join().unwrap())
        .await
        .unwrap();
    assert_eq!(taken, 200);
    // Life 2: the server is back; the log is replayed, then 100 new metrics.
    let nats = nats_server(dir.path(), port, mon, true, &[]).await;
    let life = agent_life(etc.clone(), next.clone(), 100, "nats", false);
    let (_, undelivered) = tokio::task::spawn_blocking(move || life.join().unwrap())
        .await
        .unwrap();
    assert_eq!(undelivered, 0);
    let n = next.load(Ordering::SeqCst);
    assert_eq!(n, 400);
    assert_eq!(
        wait_stream(&nats, "AGENT", n).await,
        n,
        "/jsz message count"
    );
    assert_each_once(
        &stream_seqs(port, "AGENT"),
        n,
        "crash + restart with disk buffer",
    );
}

#[actix_rt::test]
async fn nats_core_subscriber_receives_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let (port, mon) = (free_port(), free_port());
    let _nats = nats_server(dir.path(), port, mon, false, &[]).await;
    let mut sub = RawNats::connect(port);
    sub.send(b"SUB agent.> 1\r\nPING\r\n");
    sub.until_pong();
    let next = Arc::new(AtomicU64::new(0));
    let (_d, etc) = common::etc(&[(
        "main.yaml",
        &format!(
            "open: [fault]\ninterval: 3600\ndelay_sec: 0\ncommon_output: [nats]\n\
             output:\n  nats: {{servers: ['127.0.0.1:{port}'], batch_size: 7, flush_interval: 0.05}}\n"
        ),
    )]);
    let life = agent_life(etc, next.clone(), 50, "nats", false);
    let (_, undelivered) = tokio::task::spawn_blocking(move || life.join().unwrap())
        .await
        .unwrap();
    assert_eq!(undelivered, 0);
    let mut seen = BTreeMap::new();
    for _ in 0..50 {
        let (subject, payload) = sub.next_msg();
        // `web 1`: the space cannot be in a subject token.
        assert_eq!(subject, "agent.web_1.fault");
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(v["name"], "fault");
        assert_eq!(v["kind"], "METRIC");
        assert_eq!(v["host_name"], "web 1");
        *seen.entry(v["seq"].as_u64().unwrap()).or_insert(0) += 1;
    }
    assert_each_once(&seen, 50, "core NATS subscriber");
}

fn mqtt_seqs(lines: &[String]) -> BTreeMap<u64, u64> {
    let mut seen = BTreeMap::new();
    for l in lines {
        let (_, payload) = l.split_once(" {").unwrap();
        let v: serde_json::Value = serde_json::from_str(&format!("{{{payload}")).unwrap();
        *seen.entry(v["seq"].as_u64().unwrap()).or_insert(0) += 1;
    }
    seen
}

#[actix_rt::test]
async fn mqtt_messages_read_back_with_mosquitto_sub() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = mosquitto(dir.path(), port, false, "").await;
    let sub = MosquittoSub::start(dir.path(), port, "reader").await;
    let next = Arc::new(AtomicU64::new(0));
    let (_d, etc) = common::etc(&[(
        "main.yaml",
        &format!(
            "open: [fault]\ninterval: 3600\ndelay_sec: 0\ncommon_output: [mqtt]\n\
             output:\n  mqtt: {{servers: ['tcp://127.0.0.1:{port}'], batch_size: 9, flush_interval: 0.05, client_id: agent-test}}\n"
        ),
    )]);
    let life = agent_life(etc, next.clone(), 50, "mqtt", false);
    let (_, undelivered) = tokio::task::spawn_blocking(move || life.join().unwrap())
        .await
        .unwrap();
    assert_eq!(undelivered, 0);
    let lines = sub.wait_for(50, Duration::from_secs(10)).await;
    for l in &lines {
        let (topic, payload) = l.split_once(" {").unwrap();
        assert_eq!(topic, "agent/web 1/fault");
        let v: serde_json::Value = serde_json::from_str(&format!("{{{payload}")).unwrap();
        assert_eq!(v["name"], "fault");
        assert_eq!(v["host_name"], "web 1");
    }
    let seen = mqtt_seqs(&lines);
    assert_each_once(&seen, 50, "mqtt via mosquitto_sub");
}

#[actix_rt::test]
async fn mqtt_broker_stopped_mid_stream_loses_nothing_at_qos_1() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Persistence keeps the reader's session (its subscription and the
    // messages queued for it) across the restart; the agent keeps its own
    // unacknowledged batches.
    let mut broker = mosquitto(dir.path(), port, true, "").await;
    let sub = MosquittoSub::start(dir.path(), port, "reader").await;
    let next = Arc::new(AtomicU64::new(0));
    let r = seq_registry(next.clone());
    let (_d, etc) = common::etc(&[(
        "main.yaml",
        &format!(
            "open: [fault]\ninterval: 0.05\ndelay_sec: 0\ncommon_output: [mqtt]\n\
             output:\n  mqtt: {{servers: ['tcp://127.0.0.1:{port}'], qos: 1, batch_size: 20, flush_interval: 0.1, retry_max_sec: 0.5, timeout: 2, connect_timeout: 1}}\n"
        ),
    )]);
    let cfg = AgentConfig::load(&etc).unwrap();
    let plan = Plan::new(&cfg, &r).unwrap();
    let sup = PipelineSupervisor::new(cfg, plan, Arc::new(r), logger()).start();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = sub.lines().len();
    broker.stop().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let status = sup.send(Status).await.unwrap();
    let out = status.find("output", "mqtt").unwrap();
    println!(
        "before the stop: {before} read; while down: gathered {}, buffered {}, errors {}",
        next.load(Ordering::SeqCst),
        out.stats.buffered,
        out.stats.errors
    );
    assert!(before > 0, "messages read before the stop");
    assert!(
        out.stats.errors > 0,
        "writes failed while the broker was down"
    );
    assert!(out.stats.buffered > 0);
    let _broker = mosquitto(dir.path(), port, true, "").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = sup
        .send(Shutdown {
            deadline: Duration::from_secs(15),
        })
        .await
        .unwrap();
    assert_eq!(report.undelivered, 0);
    let n = next.load(Ordering::SeqCst);
    let started = Instant::now();
    let mut seen = mqtt_seqs(&sub.lines());
    while (seen.len() as u64) < n && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        seen = mqtt_seqs(&sub.lines());
    }
    // QoS 1 is at least once: a batch re-sent after a lost PUBACK may
    // arrive twice. Every metric must be there.
    let missing: Vec<u64> = (0..n).filter(|s| !seen.contains_key(s)).collect();
    let dups = seen.values().filter(|c| **c > 1).count();
    println!("mqtt broker restart: gathered {n}, read {} distinct, {dups} duplicated, missing {missing:?}", seen.len());
    assert!(missing.is_empty(), "missing {missing:?}");
}

#[test]
fn typos_in_broker_outputs_are_warned_with_a_suggestion() {
    let (_d, etc) = common::etc(&[
        ("main.yaml", "open: [demo]\ncommon_output: [mqtt, nats]\n"),
        ("output/mqtt.yaml", "qoss: 1\ntls_crt: /x\n"),
        (
            "output/nats.yaml",
            "subjet: a.b\njetstream: {stream: A, subjcts: ['a.>']}\n",
        ),
    ]);
    let cfg = AgentConfig::load(&etc).unwrap();
    let plan = Plan::new(&cfg, &Registry::with_builtins()).unwrap();
    let w: Vec<String> = plan.warnings.iter().map(|w| w.to_string()).collect();
    for want in [
        "key `output.mqtt.qoss`: unknown key; did you mean `qos`?",
        "key `output.mqtt.tls_crt`: unknown key; did you mean `tls_cert`?",
        "key `output.nats.subjet`: unknown key; did you mean `subject`?",
        "key `output.nats.jetstream.subjcts`: unknown key; did you mean `subjects`?",
    ] {
        assert!(w.iter().any(|x| x.ends_with(want)), "{want} not in {w:#?}");
    }
}
