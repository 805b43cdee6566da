//! Dimensional data checked by the real clients (Debian's packages, started
//! on loopback ports): the shipped etc/ plus two targets of each probe
//! (one with spaces, a comma, quotes and an equals sign, one in Chinese)
//! go to `prometheus_client`, to the influxdb output pointed at
//! VictoriaMetrics and to the influxdb output pointed at InfluxDB 1.x.
//! - `promtool check metrics` reports nothing for the endpoint's output;
//! - a Prometheus scraping every second has `up == 1` and one series per
//!   probe target;
//! - VictoriaMetrics holds exactly one label set per probe target;
//! - InfluxDB's `SHOW TAG VALUES FROM <probe> WITH KEY = "tag"` returns
//!   every target byte-exact.
#[path = "support/backends.rs"]
mod backends;

use actix::prelude::*;
use agent_core::{AgentConfig, PipelineSupervisor, Plan, Registry, Shutdown};
use backends::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHINESE: &str = "百度80端口(IPv4)";
const AWKWARD: &str = "a \"quoted\" tag, with=spaces";

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A loopback HTTP server answering `200 ok` to every request, on a thread.
fn http_ok_server() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    port
}

/// YAML double-quoted string.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The probe tags the shipped etc/ plus ours give, per probe.
fn expected_tags(shipped: &[&str]) -> BTreeSet<String> {
    shipped
        .iter()
        .copied()
        .chain([CHINESE, AWKWARD])
        .map(str::to_string)
        .collect()
}

/// Polls `f` every 300 ms until it gives `Some`, for at most `limit`.
async fn poll<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) if start.elapsed() > limit => {
                panic!("{what}: not true after {limit:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// The values of label `key` over a Prometheus/VictoriaMetrics JSON answer
/// (`data.result[].metric` or `data[]`), with their count.
fn label_values(v: &Value, key: &str) -> (usize, BTreeSet<String>) {
    let items: Vec<&Value> = match &v["data"] {
        Value::Array(a) => a.iter().collect(),
        d => d["result"]
            .as_array()
            .map(|a| a.iter().map(|r| &r["metric"]).collect())
            .unwrap_or_default(),
    };
    let set = items
        .iter()
        .filter_map(|m| m[key].as_str().map(str::to_string))
        .collect();
    (items.len(), set)
}

#[actix_rt::test]
async fn real_clients_see_one_series_per_probe_target() {
    let promtool = require("promtool", "prometheus");
    let dir = tempfile::tempdir().unwrap();
    let vm_port = free_port();
    let vm = victoria_metrics(&dir.path().join("vm"), vm_port).await;
    let influx = influxd(&dir.path().join("influx")).await;

    // The shipped etc/, with two more targets per probe and the dimensional
    // outputs, set in host.yaml (the per-machine override layer).
    let etc = dir.path().join("etc");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc"), &etc);
    let open_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = free_port();
    let http_port = http_ok_server();
    let prom_port = free_port();
    let host = format!(
        "interval: 1\n\
         open: [cpu, mem, disk, network, process, ping, telnet, curl, demo]\n\
         common_output: [prometheus_client, to_vm, to_influx]\n\
         output:\n\
         \x20 prometheus_client: {{listen: '127.0.0.1:{prom_port}', flush_interval: 0.5}}\n\
         \x20 to_vm: {{plugin: influxdb, url: '{vm}', flush_interval: 0.5}}\n\
         \x20 to_influx: {{plugin: influxdb, url: '{influx}', database: agent, flush_interval: 0.5}}\n\
         input:\n\
         \x20 ping:\n\
         \x20   interval: 3\n\
         \x20   count: 2\n\
         \x20   target:\n\
         \x20     {c}: {{address: 127.0.0.1}}\n\
         \x20     {a}: {{address: 127.0.0.2}}\n\
         \x20 telnet:\n\
         \x20   target:\n\
         \x20     {c}: {{address: '127.0.0.1:{open}'}}\n\
         \x20     {a}: {{address: '127.0.0.1:{closed}'}}\n\
         \x20 curl:\n\
         \x20   timeout: 2\n\
         \x20   target:\n\
         \x20     {c}: {{url: 'http://127.0.0.1:{http_port}/ok'}}\n\
         \x20     {a}: {{url: 'http://127.0.0.1:{closed}/refused', method: post}}\n",
        vm = vm.url(""),
        influx = influx.url(""),
        c = q(CHINESE),
        a = q(AWKWARD),
        open = open_port.local_addr().unwrap().port(),
        closed = closed_port,
    );
    std::fs::write(etc.join("host.yaml"), host).unwrap();
    let registry = Registry::with_builtins();
    let cfg = AgentConfig::load(&etc).unwrap();
    let plan = Plan::new(&cfg, &registry).unwrap();
    let sup = PipelineSupervisor::new(cfg, plan, Arc::new(registry), logger()).start();

    let telnet_tags = expected_tags(&["SSH"]);
    let ping_tags = expected_tags(&["LOCAL", "LOCAL6"]);
    let curl_tags = expected_tags(&[]);

    // 1. The endpoint, once every probe target is there, passes promtool.
    let endpoint = format!("http://127.0.0.1:{prom_port}/metrics");
    let body = poll(
        "endpoint has every probe target",
        Duration::from_secs(60),
        || async {
            let (status, body) = get(&endpoint).await?;
            let complete = status == 200
                && body
                    .lines()
                    .filter(|l| l.starts_with("telnet_yes{"))
                    .count()
                    == telnet_tags.len()
                && body
                    .lines()
                    .filter(|l| l.starts_with("ping_loss_percent{"))
                    .count()
                    == ping_tags.len()
                && body
                    .lines()
                    .filter(|l| l.starts_with("curl_status{"))
                    .count()
                    == curl_tags.len()
                && body.contains("cpu_percpu_percent{")
                && body.contains("mem_total_bytes");
            if complete {
                Ok(body)
            } else {
                Err(format!("{status}\n{body}"))
            }
        },
    )
    .await;
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics: {report}\n--- exposition ---\n{body}"
    );
    for (family, tags) in [
        ("telnet_yes", &telnet_tags),
        ("ping_loss_percent", &ping_tags),
        ("curl_status", &curl_tags),
    ] {
        assert!(
            tags.iter().all(|t| {
                let escaped = t.replace('\\', "\\\\").replace('"', "\\\"");
                body.contains(&format!("tag=\"{escaped}\""))
            }),
            "{family}: {tags:?} in\n{body}"
        );
    }

    // 2. A real Prometheus scraping every second.
    let prom = prometheus(&dir.path().join("prom"), &format!("127.0.0.1:{prom_port}")).await;
    let query = |expr: &str| prom.url(&format!("/api/v1/query?query={}", enc(expr)));
    poll("prometheus: up == 1", Duration::from_secs(60), || async {
        let (_, body) = get(&query("up{job=\"agent\"} == 1")).await?;
        let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        (label_values(&v, "job").0 == 1).then_some(()).ok_or(body)
    })
    .await;
    for (family, tags) in [
        ("telnet_yes", &telnet_tags),
        ("ping_loss_percent", &ping_tags),
        ("curl_status", &curl_tags),
    ] {
        poll(
            &format!("prometheus: one {family} series per target"),
            Duration::from_secs(60),
            || async {
                let (_, body) = get(&query(family)).await?;
                let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
                let (n, set) = label_values(&v, "tag");
                (n == tags.len() && &set == tags).then_some(()).ok_or(body)
            },
        )
        .await;
    }

    // 3. VictoriaMetrics through the influxdb output: one label set each.
    for (series, tags) in [
        ("telnet_yes", &telnet_tags),
        ("ping_loss", &ping_tags),
        ("curl_status", &curl_tags),
    ] {
        poll(
            &format!("victoria-metrics: one {series} label set per target"),
            Duration::from_secs(60),
            || async {
                let (_, body) =
                    get(&vm.url(&format!("/api/v1/series?match[]={}", enc(series)))).await?;
                let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
                let (n, set) = label_values(&v, "tag");
                (n == tags.len() && &set == tags).then_some(()).ok_or(body)
            },
        )
        .await;
    }

    // 4. InfluxDB 1.x: the tag values, byte-exact.
    for (measurement, tags) in [
        ("telnet", &telnet_tags),
        ("ping", &ping_tags),
        ("curl", &curl_tags),
    ] {
        let q = format!("SHOW TAG VALUES FROM \"{measurement}\" WITH KEY = \"tag\"");
        let url = influx.url(&format!("/query?db=agent&q={}", enc(&q)));
        poll(
            &format!("influxdb: tag values of {measurement}"),
            Duration::from_secs(60),
            || async {
                let (_, body) = get(&url).await?;
                let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
                let set: BTreeSet<String> = v["results"][0]["series"][0]["values"]
                    .as_array()
                    .map(|rows| {
                        rows.iter()
                            .filter_map(|r| r[1].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                (&set == tags).then_some(()).ok_or(body)
            },
        )
        .await;
    }

    sup.send(Shutdown {
        deadline: Duration::from_secs(10),
    })
    .await
    .unwrap();
    drop(open_port);
}
