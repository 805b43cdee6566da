use super::*;
use crate::metric::MetricKind;
use crate::plugins::common::exec::testutil::{proc_state, read_pid, wait_dead};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

fn output(yaml: &str) -> ExecdOutput {
    ExecdOutput::new("o", serde_yaml_ng::from_str(yaml).unwrap()).unwrap()
}

/// Waits (bounded) until `path` has `n` lines.
fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(String::from).collect();
        if lines.len() >= n || Instant::now() > end {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn batch() -> Vec<Metric> {
    let mut alarm = Metric::new("cpu", 2_000_000_000)
        .with_tag("host_name", "h 1")
        .with_field("info", "CPU 总使用率过高(%): 99>=90");
    alarm.kind = MetricKind::Alarm;
    vec![
        Metric::new("cpu", 1_000_000_000)
            .with_tag("host_name", "h 1")
            .with_field("percent", 12.5)
            .with_field("count", 4i64),
        alarm,
    ]
}

#[actix_rt::test]
async fn influx_lines_reach_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut o = output(&format!("command: [sh, -c, 'cat > {}']", out.display()));
    o.connect().await.unwrap();
    o.write(&batch()).await.unwrap();
    let lines = wait_lines(&out, 2);
    assert_eq!(
        lines,
        vec![
            "cpu,host_name=h\\ 1 percent=12.5,count=4i 1000000000",
            "cpu_alarm,host_name=h\\ 1 info=\"CPU 总使用率过高(%): 99>=90\" 2000000000",
        ]
    );
    o.close().await.unwrap();
}

#[actix_rt::test]
async fn json_and_pyagent_lines() {
    let dir = tempfile::tempdir().unwrap();
    for (format, check) in [("json", "fields"), ("pyagent", "percent")] {
        let out = dir.path().join(format);
        let mut o = output(&format!(
            "command: [sh, -c, 'cat > {}']\ndata_format: {format}",
            out.display()
        ));
        o.write(&batch()).await.unwrap();
        let lines = wait_lines(&out, 2);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert!(first.get(check).is_some(), "{first}");
        assert_eq!(second["kind"], "ALARM");
        assert_eq!(first["timestamp"], 1);
        if format == "pyagent" {
            assert_eq!(first["percent"], 12.5);
            assert_eq!(first["host_name"], "h 1");
        } else {
            assert_eq!(first["fields"]["count"], 4);
        }
        o.close().await.unwrap();
    }
}

#[actix_rt::test]
async fn a_dead_program_fails_the_write_and_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // The first run dies at once; later runs (the flag file exists) work.
    let flag = dir.path().join("flag");
    let mut o = output(&format!(
        "command: \"if [ -e {f} ]; then cat >> {o}; else touch {f}; exit 1; fi\"\nshell: true\nrestart_delay: 2",
        f = flag.display(),
        o = out.display()
    ));
    let stats = o.stats();
    o.connect().await.unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while o.child.as_ref().unwrap().is_running() {
        assert!(Instant::now() < end, "the first run never exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Down (restart pending): the write fails, the core keeps the batch.
    let err = o.write(&batch()[..1]).await.unwrap_err().to_string();
    assert!(err.contains("exited: exit status: 1"), "{err}");
    loop {
        match o.write(&batch()[..1]).await {
            Ok(()) => break,
            Err(e) => {
                assert!(Instant::now() < end, "never recovered: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(stats.spawns.load(Relaxed) >= 2);
    assert_eq!(wait_lines(&out, 1).len(), 1);
    o.close().await.unwrap();
}

#[actix_rt::test]
async fn close_kills_a_program_that_ignores_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let mut o = output(&format!(
        "command: \"trap '' TERM; echo $$ > {}; while read l; do :; done; sleep 300\"\nshell: true\nstop_timeout: 0.5",
        pidfile.display()
    ));
    o.write(&batch()).await.unwrap();
    let pid = read_pid(&pidfile, Duration::from_secs(20));
    let stats = o.stats();
    let t = Instant::now();
    o.close().await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(500));
    assert_eq!(stats.kills.load(Relaxed), 1);
    assert!(
        wait_dead(pid, false, Duration::from_secs(10)),
        "{:?}",
        proc_state(pid)
    );
}

#[actix_rt::test]
async fn missing_program_fails_connect() {
    let mut o = output("command: [/nonexistent/sink]");
    let err = o.connect().await.unwrap_err().to_string();
    assert!(err.contains("cannot start `/nonexistent/sink`"), "{err}");
}
