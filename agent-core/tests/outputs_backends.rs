//! Outputs against real backends started from their Debian packages:
//! VictoriaMetrics and InfluxDB 1.x (line protocol with awkward names, read
//! back exactly), Prometheus scraping `prometheus_client`, and fault tests
//! (backend stopped mid-stream; agent crash with a disk buffer).
#[path = "support/backends.rs"]
mod backends;
mod common;

use actix::prelude::*;
use agent_core::{
    Accumulator, AgentConfig, FieldValue, GatherOnce, Input, Metric, PipelineSupervisor, Plan,
    PluginResult, Registry, Shutdown, Status,
};
use backends::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

const AWK_NAME: &str = "load test,m=1";
const AWK_PATH: &str = "C:\\dir \"q\" ü测 a=b";
const AWK_STRING: &str = "say \"hi\", a=b \\ back 测 ü";

/// Emits `per` metrics per gather with awkward names, numbered globally,
/// timestamps 1 ms apart.
struct Awkward {
    next: Arc<AtomicU64>,
    per: u64,
    base_ns: i64,
}

impl Input for Awkward {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        for _ in 0..self.per {
            let i = self.next.fetch_add(1, Ordering::SeqCst);
            let m = Metric::new(AWK_NAME, self.base_ns + i as i64 * 1_000_000)
                .with_tag("host", "web 1,a=b")
                .with_tag("path", AWK_PATH)
                .with_tag("tag key,=x", "v=1 ")
                .with_tag("trail", "dir\\")
                .with_field("seq", i)
                .with_field("f ,=k", i as f64 + 0.25)
                .with_field("neg", -(i as i64))
                .with_field("ok", i.is_multiple_of(2))
                .with_field("s", AWK_STRING);
            acc.add(m);
        }
        Ok(())
    }
}

/// One metric per gather: `<name> seq=<n>` at the gather time.
struct Seq {
    next: Arc<AtomicU64>,
}

impl Input for Seq {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        let i = self.next.fetch_add(1, Ordering::SeqCst);
        acc.add(Metric::new(acc.name().clone(), acc.timestamp_ns()).with_field("seq", i));
        Ok(())
    }
}

fn awkward_registry(next: Arc<AtomicU64>, per: u64) -> Registry {
    let mut r = Registry::with_builtins();
    let base_ns = agent_core::metric::now_ns() - 3_600_000_000_000;
    r.add_input("awkward", "", "", move |_| {
        Ok(Awkward {
            next: next.clone(),
            per,
            base_ns,
        })
    });
    r
}

async fn run_unscheduled(r: Registry, main_yaml: &str, gathers: usize) -> usize {
    let (_d, etc) = common::etc(&[("main.yaml", main_yaml)]);
    let cfg = AgentConfig::load(&etc).unwrap();
    let plan = Plan::new(&cfg, &r).unwrap();
    let sup = PipelineSupervisor::new(cfg, plan, Arc::new(r), logger())
        .unscheduled()
        .start();
    for _ in 0..gathers {
        sup.send(GatherOnce).await.unwrap();
    }
    let report = sup
        .send(Shutdown {
            deadline: Duration::from_secs(20),
        })
        .await
        .unwrap();
    report.undelivered
}

/// Every series VictoriaMetrics has whose name starts with `prefix`:
/// labels and (timestamp, value) pairs.
async fn vm_export(vm: &Backend, prefix: &str) -> Vec<(BTreeMap<String, String>, Vec<(i64, f64)>)> {
    let q = format!("{{__name__=~\"{}.*\"}}", regex_quote(prefix));
    let (status, body) = get(&vm.url(&format!("/api/v1/export?match[]={}", enc(&q))))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let labels = v["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let ts = v["timestamps"].as_array().unwrap();
            let vals = v["values"].as_array().unwrap();
            let points = ts
                .iter()
                .zip(vals)
                .map(|(t, v)| (t.as_i64().unwrap(), v.as_f64().unwrap()))
                .collect();
            (labels, points)
        })
        .collect()
}

fn regex_quote(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "\\.+*?()|[]{}^$".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Polls until the series named `name` holds `n` points (30 s at most).
async fn vm_points(
    vm: &Backend,
    name: &str,
    n: usize,
) -> (BTreeMap<String, String>, Vec<(i64, f64)>) {
    let started = Instant::now();
    loop {
        let found: Vec<_> = vm_export(vm, name)
            .await
            .into_iter()
            .filter(|(l, _)| l["__name__"] == name)
            .collect();
        let count: usize = found.iter().map(|(_, p)| p.len()).sum();
        if count >= n || started.elapsed() > Duration::from_secs(30) {
            assert_eq!(found.len(), 1, "one series named {name:?}: {found:?}");
            let (labels, mut points) = found.into_iter().next().unwrap();
            points.sort_by_key(|p| p.0);
            return (labels, points);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[actix_rt::test]
async fn victoria_metrics_receives_every_metric_with_awkward_names() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let vm = victoria_metrics(&dir.path().join("vm"), port).await;
    let next = Arc::new(AtomicU64::new(0));
    let r = awkward_registry(next.clone(), 250);
    let main = format!(
        "open: [awkward]\ninterval: 3600\ndelay_sec: 0\ninfo: {{node_ip: 127.0.0.1, host_name: t}}\ncommon_output: [influxdb]\n\
         output:\n  influxdb: {{url: '{}', database: agent, batch_size: 300, flush_interval: 0.2, uint_support: true}}\n",
        vm.url("")
    );
    let undelivered = run_unscheduled(r, &main, 4).await;
    assert_eq!(undelivered, 0);
    let n = next.load(Ordering::SeqCst) as usize;
    assert_eq!(n, 1000);
    let (labels, seq) = vm_points(&vm, &format!("{AWK_NAME}_seq"), n).await;
    println!(
        "victoria-metrics: wrote {n}, read back {} points of {AWK_NAME}_seq",
        seq.len()
    );
    assert_eq!(seq.len(), n, "exactly N points");
    let values: Vec<u64> = seq.iter().map(|p| p.1 as u64).collect();
    assert_eq!(values, (0..n as u64).collect::<Vec<_>>());
    assert_eq!(labels["host"], "web 1,a=b");
    assert_eq!(labels["path"], AWK_PATH);
    assert_eq!(labels["tag key,=x"], "v=1 ");
    assert_eq!(labels["trail"], "dir", "trailing backslash removed");
    let (_, f) = vm_points(&vm, &format!("{AWK_NAME}_f ,=k"), n).await;
    assert!(f.iter().enumerate().all(|(i, p)| p.1 == i as f64 + 0.25));
    let (_, neg) = vm_points(&vm, &format!("{AWK_NAME}_neg"), n).await;
    assert!(neg.iter().enumerate().all(|(i, p)| p.1 == -(i as f64)));
    let (_, ok) = vm_points(&vm, &format!("{AWK_NAME}_ok"), n).await;
    assert!(ok
        .iter()
        .enumerate()
        .all(|(i, p)| p.1 == if i % 2 == 0 { 1.0 } else { 0.0 }));
}

#[actix_rt::test]
async fn influxdb_1x_receives_every_metric_with_escaped_strings() {
    let dir = tempfile::tempdir().unwrap();
    let influx = influxd(&dir.path().join("influx")).await;
    let next = Arc::new(AtomicU64::new(0));
    let r = awkward_registry(next.clone(), 200);
    let main = format!(
        "open: [awkward]\ninterval: 3600\ndelay_sec: 0\ninfo: {{node_ip: 127.0.0.1, host_name: t}}\ncommon_output: [influxdb]\n\
         output:\n  influxdb: {{url: '{}', database: 'agent db', batch_size: 150, flush_interval: 0.2}}\n",
        influx.url("")
    );
    let undelivered = run_unscheduled(r, &main, 3).await;
    assert_eq!(undelivered, 0);
    let n = next.load(Ordering::SeqCst) as usize;
    let q = format!("SELECT * FROM \"{}\"", AWK_NAME.replace('"', "\\\""));
    let url = influx.url(&format!(
        "/query?db={}&epoch=ns&q={}",
        enc("agent db"),
        enc(&q)
    ));
    let (status, body) = get(&url).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let series = &v["results"][0]["series"][0];
    assert_eq!(series["name"], AWK_NAME, "{body:.500}");
    let cols: Vec<&str> = series["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let rows = series["values"].as_array().unwrap();
    println!("influxdb: wrote {n}, read back {} rows", rows.len());
    assert_eq!(rows.len(), n, "exactly N rows");
    let col = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .unwrap_or_else(|| panic!("column {name} in {cols:?}"))
    };
    for (i, row) in rows.iter().enumerate() {
        // 1.x has no unsigned type: `seq` was written as an integer.
        assert_eq!(row[col("seq")], i as u64, "{row}");
        assert_eq!(row[col("f ,=k")], i as f64 + 0.25);
        assert_eq!(row[col("neg")], -(i as i64));
        assert_eq!(row[col("ok")], i % 2 == 0);
        assert_eq!(row[col("s")], AWK_STRING);
        assert_eq!(row[col("host")], "web 1,a=b");
        assert_eq!(row[col("path")], AWK_PATH);
        assert_eq!(row[col("tag key,=x")], "v=1 ");
        assert_eq!(row[col("trail")], "dir", "trailing backslash removed");
    }
}

#[actix_rt::test]
async fn prometheus_scrapes_prometheus_client_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut r = Registry::with_builtins();
    struct Prom;
    impl Input for Prom {
        async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
            acc.add(
                Metric::new("promtest", acc.timestamp_ns())
                    .with_tag("nic", "eth0")
                    .with_tag("odd key", "v\"q\\ ü")
                    .with_field("rx", 42u64)
                    .with_field("ratio", 0.5)
                    .with_field("up", true)
                    .with_field("mac", "aa:bb"),
            );
            Ok(())
        }
    }
    r.add_input("prom", "", "", |_| Ok(Prom));
    let (_d, etc) = common::etc(&[(
        "main.yaml",
        &format!(
            "open: [prom]\ninterval: 0.2\ndelay_sec: 0\ncommon_output: [prometheus_client]\n\
             output:\n  prometheus_client: {{listen: '127.0.0.1:{port}', flush_interval: 0.2}}\n"
        ),
    )]);
    let cfg = AgentConfig::load(&etc).unwrap();
    let plan = Plan::new(&cfg, &r).unwrap();
    let sup = PipelineSupervisor::new(cfg, plan, Arc::new(r), logger()).start();
    let prom = prometheus(&dir.path().join("prom"), &format!("127.0.0.1:{port}")).await;
    let started = Instant::now();
    let result = loop {
        let (status, body) = get(&prom.url(&format!(
            "/api/v1/query?query={}",
            enc("{__name__=~\"promtest_.*\"}")
        )))
        .await
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let res = v["data"]["result"].as_array().cloned().unwrap_or_default();
        if res.len() >= 3 {
            break res;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "prometheus has no promtest series after 40 s: {body}\n{}",
            prom.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    sup.send(Shutdown {
        deadline: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let by_name: BTreeMap<String, &Value> = result
        .iter()
        .map(|s| (s["metric"]["__name__"].as_str().unwrap().to_string(), s))
        .collect();
    println!(
        "prometheus: series {:?}",
        by_name.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        by_name.len(),
        3,
        "rx, ratio, up; the string field is dropped"
    );
    assert_eq!(by_name["promtest_rx"]["value"][1], "42");
    assert_eq!(by_name["promtest_ratio"]["value"][1], "0.5");
    assert_eq!(by_name["promtest_up"]["value"][1], "1");
    let labels = &by_name["promtest_rx"]["metric"];
    assert_eq!(labels["nic"], "eth0");
    assert_eq!(labels["odd_key"], "v\"q\\ ü");
    assert_eq!(labels["job"], "agent");
}

fn seq_registry(next: Arc<AtomicU64>) -> Registry {
    let mut r = Registry::with_builtins();
    r.add_input("fault", "", "", move |_| Ok(Seq { next: next.clone() }));
    r
}

fn assert_each_once(points: &[(i64, f64)], n: u64, what: &str) {
    let mut seqs: Vec<u64> = points.iter().map(|p| p.1 as u64).collect();
    seqs.sort_unstable();
    let dups = seqs.windows(2).filter(|w| w[0] == w[1]).count();
    seqs.dedup();
    let missing = n - seqs.len() as u64;
    println!(
        "{what}: gathered {n}, stored {} points, duplicates {dups}, missing {missing}",
        points.len()
    );
    assert_eq!(dups, 0, "{what}: duplicates");
    assert_eq!(
        seqs,
        (0..n).collect::<Vec<_>>(),
        "{what}: every metric once"
    );
}

#[actix_rt::test]
async fn backend_stopped_mid_stream_gets_every_metric_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vm");
    let port = free_port();
    let mut vm = victoria_metrics(&data, port).await;
    let next = Arc::new(AtomicU64::new(0));
    let r = seq_registry(next.clone());
    let (_d, etc) = common::etc(&[(
        "main.yaml",
        &format!(
            "open: [fault]\ninterval: 0.05\ndelay_sec: 0\ncommon_output: [influxdb]\n\
             output:\n  influxdb: {{url: '{}', batch_size: 20, flush_interval: 0.1, retry_max_sec: 0.5, timeout: 2, buffer_limit: 10000}}\n",
            vm.url("")
        ),
    )]);
    let cfg = AgentConfig::load(&etc).unwrap();
    let plan = Plan::new(&cfg, &r).unwrap();
    let sup = PipelineSupervisor::new(cfg, plan, Arc::new(r), logger()).start();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    vm.stop().await;
    let at_stop = next.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let status = sup.send(Status).await.unwrap();
    let out = status.find("output", "influxdb").unwrap();
    println!(
        "while down: gathered {} (stopped at {at_stop}), output buffered {} errors {}",
        next.load(Ordering::SeqCst),
        out.stats.buffered,
        out.stats.errors
    );
    assert!(
        out.stats.errors > 0,
        "writes failed while the backend was down"
    );
    assert!(out.stats.buffered > 0);
    let vm = victoria_metrics(&data, port).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = sup
        .send(Shutdown {
            deadline: Duration::from_secs(15),
        })
        .await
        .unwrap();
    assert_eq!(report.undelivered, 0);
    let n = next.load(Ordering::SeqCst);
    let (_, points) = vm_points(&vm, "fault_seq", n as usize).await;
    assert_each_once(&points, n, "backend restart");
}

/// One agent life of the `fault` input into the influxdb output
/// ([`backends::agent_life`]).
fn agent_life(
    etc: PathBuf,
    next: Arc<AtomicU64>,
    gathers: usize,
    per_gather_expected: u64,
    crash: bool,
) -> std::thread::JoinHandle<(u64, usize)> {
    let expected = gathers as u64 * per_gather_expected;
    backends::agent_life(
        etc,
        seq_registry(next),
        gathers,
        expected,
        "influxdb",
        crash,
    )
}

#[actix_rt::test]
async fn agent_crash_while_backend_down_loses_nothing_with_disk_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let buf = dir.path().join("buffer");
    let (_d, etc) = common::etc(&[(
        "main.yaml",
        &format!(
            "open: [fault]\ninterval: 3600\ndelay_sec: 0\ncommon_output: [influxdb]\n\
             output:\n  influxdb: {{url: 'http://127.0.0.1:{port}', batch_size: 25, flush_interval: 0.1, retry_max_sec: 0.3, timeout: 2,\n    disk_buffer: {{path: '{}', max_bytes: 10 MB}}}}\n",
            buf.display()
        ),
    )]);
    let next = Arc::new(AtomicU64::new(0));
    // Life 1: backend down, 300 metrics gathered, then the agent "crashes".
    let life1 = agent_life(etc.clone(), next.clone(), 300, 1, true);
    let (taken, _) = tokio::task::spawn_blocking(move || life1.join().unwrap())
        .await
        .unwrap();
    let segments = std::fs::read_dir(&buf)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count();
    println!("crash: output had taken {taken} metrics; {segments} segment file(s) left on disk");
    assert_eq!(taken, 300);
    assert!(segments > 0);
    // Life 2: backend back; the log is replayed first, then 100 new metrics.
    let data = dir.path().join("vm");
    let vm = victoria_metrics(&data, port).await;
    let life2 = agent_life(etc.clone(), next.clone(), 100, 1, false);
    let (_, undelivered) = tokio::task::spawn_blocking(move || life2.join().unwrap())
        .await
        .unwrap();
    assert_eq!(undelivered, 0);
    let n = next.load(Ordering::SeqCst);
    assert_eq!(n, 400);
    let (_, points) = vm_points(&vm, "fault_seq", n as usize).await;
    assert_each_once(&points, n, "crash + restart with disk buffer");
    // Everything acknowledged: the log holds no segment with data.
    let left: u64 = std::fs::read_dir(&buf)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(left, 0, "acknowledged segments deleted");
}

#[actix_rt::test]
async fn shutdown_while_backend_down_parks_metrics_on_disk_for_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let buf = dir.path().join("buffer");
    let (_d, etc) = common::etc(&[(
        "main.yaml",
        &format!(
            "open: [fault]\ninterval: 3600\ndelay_sec: 0\ncommon_output: [influxdb]\n\
             output:\n  influxdb: {{url: 'http://127.0.0.1:{port}', batch_size: 25, flush_interval: 0.1, retry_max_sec: 0.3, timeout: 1,\n    disk_buffer: {{path: '{}', max_bytes: 10 MB}}}}\n",
            buf.display()
        ),
    )]);
    let next = Arc::new(AtomicU64::new(0));
    let (r, etc2) = (seq_registry(next.clone()), etc.clone());
    let cfg = AgentConfig::load(&etc2).unwrap();
    let plan = Plan::new(&cfg, &r).unwrap();
    let sup = PipelineSupervisor::new(cfg, plan, Arc::new(r), logger())
        .unscheduled()
        .start();
    for _ in 0..60 {
        sup.send(GatherOnce).await.unwrap();
    }
    let report = sup
        .send(Shutdown {
            deadline: Duration::from_secs(2),
        })
        .await
        .unwrap();
    println!(
        "shutdown with backend down: undelivered (kept on disk) {}",
        report.undelivered
    );
    assert_eq!(report.undelivered, 60);
    let vm = victoria_metrics(&dir.path().join("vm"), port).await;
    let life2 = agent_life(etc, next.clone(), 0, 1, false);
    let (_, undelivered) = tokio::task::spawn_blocking(move || life2.join().unwrap())
        .await
        .unwrap();
    assert_eq!(undelivered, 0);
    let (_, points) = vm_points(&vm, "fault_seq", 60).await;
    assert_each_once(&points, 60, "shutdown parked on disk");
}

#[allow(dead_code)]
fn field_u64(m: &Metric, k: &str) -> u64 {
    match m.field(k) {
        Some(FieldValue::Uint(v)) => *v,
        other => panic!("{k}: {other:?}"),
    }
}
