//! The kafka output (cargo feature `kafka`) against librdkafka's mock
//! cluster: real Kafka protocol brokers on 127.0.0.1 ports, run inside the
//! test process. Messages are consumed back with `kcat` (Debian), a client
//! that is not this project's, and counted; a broker taken down mid-stream
//! and brought back loses nothing.
#![cfg(feature = "kafka")]
#[path = "support/backends.rs"]
mod backends;
mod common;

use actix::prelude::*;
use agent_core::{
    Accumulator, AgentConfig, GatherOnce, Input, PipelineSupervisor, Plan, PluginResult, Registry,
    Shutdown, Status,
};
use rdkafka::mocking::MockCluster;
use serde_json::Value;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

/// One metric per gather: `<name> seq=<n>`, with the `info` tags.
struct Seq {
    next: Arc<AtomicU64>,
}

impl Input for Seq {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        let i = self.next.fetch_add(1, Ordering::SeqCst);
        acc.add(acc.metric().with_field("seq", i));
        Ok(())
    }
}

fn seq_registry(next: Arc<AtomicU64>) -> Registry {
    let mut r = Registry::with_builtins();
    r.add_input("fault", "", "", move |_| Ok(Seq { next: next.clone() }));
    r
}

/// Every message of `topic` as (partition, key, payload), read with kcat
/// until the end of every partition.
fn consume(bootstrap: &str, topic: &str) -> Vec<(i64, String, String)> {
    let kcat = backends::require("kcat", "kcat");
    let out = Command::new(kcat)
        .args([
            "-C",
            "-b",
            bootstrap,
            "-t",
            topic,
            "-e",
            "-q",
            "-f",
            "%p\t%k\t%s\n",
        ])
        .output()
        .expect("kcat runs");
    assert!(
        out.status.success(),
        "kcat: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut it = l.splitn(3, '\t');
            let p = it.next().unwrap().parse().unwrap();
            (
                p,
                it.next().unwrap().to_string(),
                it.next().unwrap().to_string(),
            )
        })
        .collect()
}

fn assert_each_once(mut seqs: Vec<u64>, n: u64, what: &str) {
    seqs.sort_unstable();
    let got = seqs.len();
    let dups = seqs.windows(2).filter(|w| w[0] == w[1]).count();
    seqs.dedup();
    println!(
        "{what}: gathered {n}, consumed {got}, duplicates {dups}, missing {}",
        n - seqs.len() as u64
    );
    assert_eq!(dups, 0, "{what}: duplicates");
    assert_eq!(
        seqs,
        (0..n).collect::<Vec<_>>(),
        "{what}: every metric once"
    );
}

fn seqs_of(msgs: &[(i64, String, String)]) -> Vec<u64> {
    msgs.iter()
        .map(|(_, _, payload)| {
            let v: Value = serde_json::from_str(payload).expect("JSON message");
            v["seq"].as_u64().expect("seq")
        })
        .collect()
}

#[actix_rt::test]
async fn mock_cluster_gets_every_metric_keyed_by_host() {
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic("agent.t.fault", 4, 3).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let next = Arc::new(AtomicU64::new(0));
    let r = seq_registry(next.clone());
    let (_d, etc) = common::etc(&[(
        "main.yaml",
        &format!(
            "open: [fault]\ninterval: 3600\ndelay_sec: 0\ninfo: {{host_name: t}}\ncommon_output: [kafka]\n\
             output:\n  kafka: {{brokers: ['{}'], topic: 'agent.{{host_name}}.{{name}}', compression: gzip, batch_size: 50, flush_interval: 0.1}}\n",
            bootstrap.split(',').next().unwrap()
        ),
    )]);
    let cfg = AgentConfig::load(&etc).unwrap();
    let plan = Plan::new(&cfg, &r).unwrap();
    let sup = PipelineSupervisor::new(cfg, plan, Arc::new(r), logger())
        .unscheduled()
        .start();
    for _ in 0..300 {
        sup.send(GatherOnce).await.unwrap();
    }
    let report = sup
        .send(Shutdown {
            deadline: Duration::from_secs(20),
        })
        .await
        .unwrap();
    assert_eq!(report.undelivered, 0);
    let msgs = consume(&bootstrap, "agent.t.fault");
    assert_each_once(seqs_of(&msgs), 300, "mock cluster");
    // Keyed by host_name: one host, one partition.
    assert!(msgs.iter().all(|(_, k, _)| k == "t"));
    let first = msgs[0].0;
    assert!(msgs.iter().all(|(p, _, _)| *p == first), "one partition");
    let v: Value = serde_json::from_str(&msgs[0].2).unwrap();
    assert_eq!(v["name"], "fault");
    assert_eq!(v["kind"], "METRIC");
    assert_eq!(v["host_name"], "t");
}

#[actix_rt::test]
async fn broker_down_mid_stream_then_up_loses_nothing() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("agent", 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let next = Arc::new(AtomicU64::new(0));
    let r = seq_registry(next.clone());
    let (_d, etc) = common::etc(&[(
        "main.yaml",
        &format!(
            "open: [fault]\ninterval: 0.05\ndelay_sec: 0\ninfo: {{host_name: t}}\ncommon_output: [kafka]\n\
             output:\n  kafka: {{brokers: ['{bootstrap}'], batch_size: 20, flush_interval: 0.1, retry_max_sec: 0.5, timeout: 30}}\n"
        ),
    )]);
    let cfg = AgentConfig::load(&etc).unwrap();
    let plan = Plan::new(&cfg, &r).unwrap();
    let sup = PipelineSupervisor::new(cfg, plan, Arc::new(r), logger()).start();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.broker_down(1).unwrap();
    let at_down = next.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let status = sup.send(Status).await.unwrap();
    let st = &status.find("output", "kafka").unwrap().stats;
    println!(
        "while down: gathered {} (down at {at_down}), buffered {}, errors {}",
        next.load(Ordering::SeqCst),
        st.buffered,
        st.errors
    );
    // The write in flight waits for the broker, the rest queue behind it.
    assert!(st.buffered > 0, "metrics wait while the broker is down");
    cluster.broker_up(1).unwrap();
    let started = Instant::now();
    loop {
        let s = sup.send(Status).await.unwrap();
        let st = &s.find("output", "kafka").unwrap().stats;
        if st.buffered == 0 || started.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = sup
        .send(Shutdown {
            deadline: Duration::from_secs(20),
        })
        .await
        .unwrap();
    assert_eq!(report.undelivered, 0);
    let n = next.load(Ordering::SeqCst);
    assert_each_once(seqs_of(&consume(&bootstrap, "agent")), n, "broker restart");
}
