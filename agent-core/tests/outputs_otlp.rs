//! The otlp output against a receiver that decodes with the upstream
//! `opentelemetry-proto` Python package (tests/support/otlp_receiver.py):
//! names, units, kinds, values, resource and attributes as decoded there;
//! start times of cumulative sums; partial success; retryable and
//! permanent statuses with Retry-After; and delivery through an outage and
//! an agent crash with nothing lost.
#[path = "support/backends.rs"]
mod backends;
mod common;
#[path = "support/otlp.rs"]
mod otlp;

use actix::prelude::*;
use agent_core::plugins::outputs::otlp::OtlpOutput;
use agent_core::{
    Accumulator, AgentConfig, Input, Metric, MetricKind, Output, PipelineSupervisor, Plan,
    PluginResult, Registry, Shutdown, Status,
};
use backends::free_port;
use otlp::{attrs, metrics_of, read_requests, Receiver};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

const T0: i64 = 1_700_000_000_000_000_000;
const S: i64 = 1_000_000_000;

/// An otlp output built from a real etc/ (so `info` is main.yaml's).
fn output(etc_main: &str, otlp_yaml: &str) -> (tempfile::TempDir, OtlpOutput) {
    let (d, etc) = common::etc(&[("main.yaml", etc_main), ("output/otlp.yaml", otlp_yaml)]);
    let cfg = AgentConfig::load(&etc).unwrap();
    let out = OtlpOutput::new(&cfg.section("output", "otlp")).unwrap();
    (d, out)
}

const MAIN: &str = "open: []\ninfo: {host_name: web1, node_ip: 127.0.0.1, region: eu-1}\n";

fn info_tags(m: Metric) -> Metric {
    m.with_tag("node_ip", "127.0.0.1")
        .with_tag("host_name", "web1")
        .with_tag("region", "eu-1")
}

fn network(t: i64, bytes_recv: u64) -> Metric {
    info_tags(Metric::new("network", t))
        .with_tag("nic", "eth0")
        .with_field("bytes_recv", bytes_recv)
        .with_field("bps_in", 8.5)
        .with_field("mac", "aa:bb:cc:dd:ee:ff")
        .with_field("isup", 1u64)
}

/// The metric named `name` of the only request's only resource.
fn metric<'a>(ms: &'a [(Value, Value)], name: &str) -> &'a Value {
    let found: Vec<&Value> = ms
        .iter()
        .map(|(_, m)| m)
        .filter(|m| m["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "one metric {name}: {ms:?}");
    found[0]
}

fn names(ms: &[(Value, Value)]) -> Vec<String> {
    let mut n: Vec<String> = ms
        .iter()
        .map(|(_, m)| m["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

#[actix_rt::test]
async fn receiver_decodes_names_kinds_values_resource_and_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(0, &dir.path().join("rx.jsonl"), "[]");
    let (_d, mut out) = output(
        MAIN,
        &format!("endpoint: {}\nheaders: {{X-Tenant: ops}}\n", rx.endpoint()),
    );
    out.connect().await.unwrap();
    let cpu = info_tags(Metric::new("cpu", T0))
        .with_field("percent", 12.5)
        .with_field("percent_percpu_0", 5.5)
        .with_field("percent_percpu_1", 7.0);
    let custom = info_tags(Metric::new("custom", T0))
        .with_tag("k", "v 1 ü")
        .with_field("n", -3i64)
        .with_field("s", "text is not sent")
        .with_field("ok", true)
        .with_field("big", u64::MAX);
    let mut alarm = info_tags(Metric::new("cpu", T0)).with_field("code", "x");
    alarm.kind = MetricKind::Alarm;
    out.write(&[network(T0, 1000), cpu, custom, alarm])
        .await
        .unwrap();
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r["headers"]["content-encoding"], "gzip", "gzip by default");
    assert_eq!(r["headers"]["x-tenant"], "ops");
    let req = &r["request"];
    assert_eq!(req["resource_metrics"].as_array().unwrap().len(), 1);
    let rm = &req["resource_metrics"][0];
    let mut res = attrs(&rm["resource"]["attributes"]);
    res.sort();
    assert_eq!(
        res,
        vec![
            (
                "host.ip".into(),
                r#"{"array_value":{"values":[{"string_value":"127.0.0.1"}]}}"#.into()
            ),
            ("host.name".into(), "web1".into()),
            ("region".into(), "eu-1".into()),
            ("service.name".into(), "agent".into()),
            ("service.version".into(), env!("CARGO_PKG_VERSION").into()),
        ]
    );
    assert_eq!(rm["scope_metrics"][0]["scope"]["name"], "agent");
    let ms = metrics_of(req);
    assert_eq!(
        names(&ms),
        [
            "cpu_percent",
            "cpu_percpu_percent",
            "custom_big",
            "custom_n",
            "custom_ok",
            "network_bps_in",
            "network_bytes_recv",
            "network_isup",
        ],
        "strings, text fields and alarms are not sent"
    );
    // A schema counter: a monotonic cumulative sum with its unit and help.
    let m = metric(&ms, "network_bytes_recv");
    assert_eq!(m["unit"], "By");
    assert_eq!(m["description"], "Bytes received since boot.");
    let sum = &m["sum"];
    assert_eq!(sum["is_monotonic"], true);
    assert_eq!(
        sum["aggregation_temporality"],
        "AGGREGATION_TEMPORALITY_CUMULATIVE"
    );
    let p = &sum["data_points"][0];
    assert_eq!(p["as_int"], "1000");
    assert_eq!(p["time_unix_nano"], T0.to_string());
    assert_eq!(p["start_time_unix_nano"], T0.to_string());
    assert_eq!(attrs(&p["attributes"]), [("nic".into(), "eth0".into())]);
    // A schema gauge.
    let m = metric(&ms, "network_bps_in");
    assert_eq!(m["unit"], "bit/s");
    assert_eq!(m["gauge"]["data_points"][0]["as_double"], 8.5);
    assert!(m["gauge"]["data_points"][0]
        .get("start_time_unix_nano")
        .is_none());
    // A group: one series per CPU, the index an attribute.
    let m = metric(&ms, "cpu_percpu_percent");
    let pts = m["gauge"]["data_points"].as_array().unwrap();
    let got: Vec<(Vec<(String, String)>, f64)> = pts
        .iter()
        .map(|p| (attrs(&p["attributes"]), p["as_double"].as_f64().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            (vec![("cpu".into(), "0".into())], 5.5),
            (vec![("cpu".into(), "1".into())], 7.0)
        ]
    );
    // No schema: gauges, the tags as attributes, exact integers.
    let m = metric(&ms, "custom_n");
    let p = &m["gauge"]["data_points"][0];
    assert_eq!(p["as_int"], "-3");
    assert_eq!(attrs(&p["attributes"]), [("k".into(), "v 1 ü".into())]);
    assert_eq!(
        metric(&ms, "custom_ok")["gauge"]["data_points"][0]["as_int"],
        "1"
    );
    assert_eq!(
        metric(&ms, "custom_big")["gauge"]["data_points"][0]["as_double"],
        u64::MAX as f64
    );
}

#[actix_rt::test]
async fn sums_keep_their_start_time_per_series_and_move_it_on_reset() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(0, &dir.path().join("rx.jsonl"), "[]");
    let (_d, mut out) = output(
        MAIN,
        &format!("endpoint: {}\ncompression: none\n", rx.endpoint()),
    );
    out.connect().await.unwrap();
    let eth1 = |t, v| network(t, v).with_tag("nic", "eth1");
    out.write(&[network(T0, 1000)]).await.unwrap();
    out.write(&[network(T0 + 10 * S, 2000), eth1(T0 + 10 * S, 5)])
        .await
        .unwrap();
    // eth0 restarted counting (a driver reload): a new start time.
    out.write(&[network(T0 + 20 * S, 300), eth1(T0 + 20 * S, 9)])
        .await
        .unwrap();
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 3);
    assert!(reqs[0]["headers"].get("content-encoding").is_none());
    let mut seen = Vec::new();
    for r in &reqs {
        let ms = metrics_of(&r["request"]);
        for p in metric(&ms, "network_bytes_recv")["sum"]["data_points"]
            .as_array()
            .unwrap()
        {
            seen.push((
                attrs(&p["attributes"])[0].1.clone(),
                p["as_int"].as_str().unwrap().to_string(),
                p["start_time_unix_nano"]
                    .as_str()
                    .unwrap()
                    .parse::<i64>()
                    .unwrap(),
                p["time_unix_nano"]
                    .as_str()
                    .unwrap()
                    .parse::<i64>()
                    .unwrap(),
            ));
        }
    }
    let s = |n: &str, v: &str, start: i64, t: i64| (n.to_string(), v.to_string(), start, t);
    assert_eq!(
        seen,
        vec![
            s("eth0", "1000", T0, T0),
            s("eth0", "2000", T0, T0 + 10 * S),
            s("eth1", "5", T0 + 10 * S, T0 + 10 * S),
            s("eth0", "300", T0 + 10 * S, T0 + 20 * S),
            s("eth1", "9", T0 + 10 * S, T0 + 20 * S),
        ]
    );
}

#[actix_rt::test]
async fn partial_success_is_counted_and_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(
        0,
        &dir.path().join("rx.jsonl"),
        r#"[{"status": 200, "rejected": 2, "message": "2 points out of range"}]"#,
    );
    let (_d, mut out) = output(MAIN, &format!("endpoint: {}\n", rx.endpoint()));
    out.connect().await.unwrap();
    out.write(&[network(T0, 1)]).await.unwrap();
    out.write(&[network(T0 + S, 2)]).await.unwrap();
    let c = out.counters();
    assert_eq!(
        (c.accepted_requests, c.accepted_points, c.rejected_points),
        (2, 6, 2)
    );
    assert_eq!(rx.requests().len(), 2, "the partial success was not resent");
}

#[actix_rt::test]
async fn retryable_statuses_are_retried_after_retry_after_others_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(
        0,
        &dir.path().join("rx.jsonl"),
        r#"[{"status": 503, "retry_after": "3"}, {"status": 429}, {"status": 502},
            {"status": 400, "message": "bad data"}, {"status": 404}, {"status": 500}]"#,
    );
    let (_d, mut out) = output(MAIN, &format!("endpoint: {}\n", rx.endpoint()));
    out.connect().await.unwrap();
    let batch = [network(T0, 1)];
    let e = out.write(&batch).await.unwrap_err().to_string();
    assert!(e.contains("HTTP 503") && e.contains("Retry-After 3"), "{e}");
    let asked = Instant::now();
    // Retried by the core: before the receiver's Retry-After, nothing is sent.
    let e = out.write(&batch).await.unwrap_err().to_string();
    if asked.elapsed() < Duration::from_secs(3) {
        assert!(e.contains("asked to wait"), "{e}");
        assert_eq!(rx.requests().len(), 1);
    }
    while asked.elapsed() < Duration::from_millis(3100) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e = out.write(&batch).await.unwrap_err().to_string();
    assert!(e.contains("HTTP 429"), "{e}");
    let e = out.write(&batch).await.unwrap_err().to_string();
    assert!(e.contains("HTTP 502"), "{e}");
    // Not retryable per OTLP/HTTP: dropped (write succeeds), counted.
    for _ in 0..3 {
        out.write(&batch).await.unwrap();
    }
    let c = out.counters();
    assert_eq!(
        (c.dropped_batches, c.dropped_points, c.accepted_requests),
        (3, 9, 0)
    );
    out.write(&batch).await.unwrap();
    assert_eq!(out.counters().accepted_requests, 1);
    let statuses: Vec<i64> = rx
        .requests()
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [503, 429, 502, 400, 404, 500, 200]);
}

/// One metric per gather: `<name> seq=<n>`.
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

/// The `fault_seq` values of every accepted request in `files`.
fn delivered(files: &[PathBuf]) -> Vec<u64> {
    let mut seqs = Vec::new();
    for f in files {
        for r in read_requests(f) {
            if r["status"] != 200 {
                continue;
            }
            for (res, m) in metrics_of(&r["request"]) {
                assert!(attrs(&res).contains(&("host.name".into(), "t".into())));
                if m["name"] != "fault_seq" {
                    continue;
                }
                for p in m["gauge"]["data_points"].as_array().unwrap() {
                    seqs.push(p["as_int"].as_str().unwrap().parse().unwrap());
                }
            }
        }
    }
    seqs
}

fn assert_each_once(mut seqs: Vec<u64>, n: u64, what: &str) {
    seqs.sort_unstable();
    let stored = seqs.len();
    let dups = seqs.windows(2).filter(|w| w[0] == w[1]).count();
    seqs.dedup();
    println!(
        "{what}: gathered {n}, received {stored} points, duplicates {dups}, missing {}",
        n - seqs.len() as u64
    );
    assert_eq!(dups, 0, "{what}: duplicates");
    assert_eq!(
        seqs,
        (0..n).collect::<Vec<_>>(),
        "{what}: every metric once"
    );
}

#[actix_rt::test]
async fn receiver_down_then_up_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let files = [dir.path().join("rx1.jsonl"), dir.path().join("rx2.jsonl")];
    let mut rx = Receiver::start(port, &files[0], "[]");
    let next = Arc::new(AtomicU64::new(0));
    let r = seq_registry(next.clone());
    let (_d, etc) = common::etc(&[(
        "main.yaml",
        &format!(
            "open: [fault]\ninterval: 0.05\ndelay_sec: 0\ninfo: {{host_name: t}}\ncommon_output: [otlp]\n\
             output:\n  otlp: {{endpoint: '{}', batch_size: 20, flush_interval: 0.1, retry_max_sec: 0.5, timeout: 2}}\n",
            rx.endpoint()
        ),
    )]);
    let cfg = AgentConfig::load(&etc).unwrap();
    let plan = Plan::new(&cfg, &r).unwrap();
    let sup = PipelineSupervisor::new(cfg, plan, Arc::new(r), logger()).start();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rx.stop();
    let at_stop = next.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let status = sup.send(Status).await.unwrap();
    let st = &status.find("output", "otlp").unwrap().stats;
    println!(
        "while down: gathered {} (stopped at {at_stop}), output buffered {} errors {}",
        next.load(Ordering::SeqCst),
        st.buffered,
        st.errors
    );
    assert!(st.errors > 0, "writes failed while the receiver was down");
    assert!(st.buffered > 0);
    let _rx2 = Receiver::start(port, &files[1], "[]");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = sup
        .send(Shutdown {
            deadline: Duration::from_secs(15),
        })
        .await
        .unwrap();
    assert_eq!(report.undelivered, 0);
    let n = next.load(Ordering::SeqCst);
    assert!(
        !read_requests(&files[1]).is_empty(),
        "delivered after the restart"
    );
    assert_each_once(delivered(&files), n, "receiver restart");
}

/// One agent life of the `fault` input into the otlp output
/// ([`backends::agent_life`]).
fn agent_life(
    etc: PathBuf,
    next: Arc<AtomicU64>,
    gathers: usize,
    crash: bool,
) -> std::thread::JoinHandle<(u64, usize)> {
    backends::agent_life(
        etc,
        seq_registry(next),
        gathers,
        gathers as u64,
        "otlp",
        crash,
    )
}

#[actix_rt::test]
async fn agent_crash_while_receiver_down_loses_nothing_with_disk_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let buf = dir.path().join("buffer");
    let (_d, etc) = common::etc(&[(
        "main.yaml",
        &format!(
            "open: [fault]\ninterval: 3600\ndelay_sec: 0\ninfo: {{host_name: t}}\ncommon_output: [otlp]\n\
             output:\n  otlp: {{endpoint: 'http://127.0.0.1:{port}/v1/metrics', batch_size: 25, flush_interval: 0.1, retry_max_sec: 0.3, timeout: 2,\n    disk_buffer: {{path: '{}', max_bytes: 10 MB}}}}\n",
            buf.display()
        ),
    )]);
    let next = Arc::new(AtomicU64::new(0));
    // Life 1: receiver down, 300 metrics gathered, then the agent "crashes".
    let life1 = agent_life(etc.clone(), next.clone(), 300, true);
    let (taken, _) = tokio::task::spawn_blocking(move || life1.join().unwrap())
        .await
        .unwrap();
    assert_eq!(taken, 300);
    // Life 2: receiver up; the disk log is replayed first, then 100 more.
    let file = dir.path().join("rx.jsonl");
    let _rx = Receiver::start(port, &file, "[]");
    let life2 = agent_life(etc, next.clone(), 100, false);
    let (_, undelivered) = tokio::task::spawn_blocking(move || life2.join().unwrap())
        .await
        .unwrap();
    assert_eq!(undelivered, 0);
    let n = next.load(Ordering::SeqCst);
    assert_eq!(n, 400);
    assert_each_once(delivered(&[file]), n, "crash + restart with disk buffer");
}
