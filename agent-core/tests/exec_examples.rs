//! The exec/execd examples in examples/ work as documented: their configs
//! load, and the real scripts run through the plugins in a real pipeline.
//!
//! The example configs name their scripts relative to the repository root,
//! as a user runs them; every test here runs from there (this file is its
//! own test binary, so changing the directory affects nothing else).
mod common;

use actix::prelude::*;
use agent_core::{AgentConfig, FieldValue, PipelineSupervisor, Plan, Registry, Shutdown};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::set_current_dir(&root).unwrap();
    root
}

fn example(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap()
}

fn start(etc: &Path, r: Registry) -> Addr<PipelineSupervisor> {
    let cfg = AgentConfig::load(etc).unwrap();
    let plan = Plan::new(&cfg, &r).unwrap();
    PipelineSupervisor::new(
        cfg,
        plan,
        Arc::new(r),
        slog::Logger::root(slog::Discard, slog::o!()),
    )
    .start()
}

/// Waits (bounded) until `n` metrics named `name` were collected.
async fn wait_for(c: &common::Collected, name: &str, n: usize) {
    let end = Instant::now() + Duration::from_secs(30);
    while c.count_named(name) < n && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn example_configs_validate() {
    let root = repo_root();
    let r = Registry::with_builtins();
    for dir in ["examples/etc-exec", "examples/etc-execd"] {
        let cfg = AgentConfig::load(&root.join(dir)).unwrap();
        Plan::new(&cfg, &r).unwrap_or_else(|e| panic!("{dir}: {e}"));
    }
}

#[actix_rt::test]
async fn exec_uptime_script_runs_in_a_pipeline() {
    let mut r = Registry::with_builtins();
    let collected = common::add_collect(&mut r);
    let (_d, etc) = common::etc(&[
        (
            "main.yaml",
            "open: [uptime]\ninterval: 0.2\ndelay_sec: 0\ncommon_output: [collect]\noutput:\n  collect: {flush_interval: 0.1}\n",
        ),
        ("input/uptime.yaml", &example("examples/etc-exec/input/uptime.yaml")),
    ]);
    let sup = start(&etc, r);
    wait_for(&collected, "uptime", 2).await;
    sup.send(Shutdown {
        deadline: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let metrics = collected.metrics();
    assert!(metrics.len() >= 2, "{metrics:?}");
    let proc_uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    for m in &metrics {
        assert_eq!(m.name, "uptime");
        assert_eq!(m.tag("source"), Some("proc"));
        assert!(m.tag("host_name").is_some(), "info tags added");
        let Some(FieldValue::Float(up)) = m.field("uptime_sec") else {
            panic!("{m:?}")
        };
        assert!(*up > 0.0 && *up <= proc_uptime, "{up} vs {proc_uptime}");
        assert!(matches!(m.field("users"), Some(FieldValue::Int(n)) if *n >= 0));
    }
}

#[actix_rt::test]
async fn execd_counter_script_counts_and_stops_with_the_agent() {
    let mut r = Registry::with_builtins();
    let collected = common::add_collect(&mut r);
    let (_d, etc) = common::etc(&[
        (
            "main.yaml",
            "open: [counter]\ninterval: 0.2\ndelay_sec: 0\ncommon_output: [collect]\noutput:\n  collect: {flush_interval: 0.1}\n",
        ),
        (
            "input/counter.yaml",
            &example("examples/etc-execd/input/counter.yaml"),
        ),
    ]);
    let sup = start(&etc, r);
    wait_for(&collected, "counter", 3).await;
    sup.send(Shutdown {
        deadline: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let metrics = collected.metrics();
    assert!(metrics.len() >= 3, "{metrics:?}");
    let counts: Vec<i64> = metrics
        .iter()
        .map(|m| match m.field("count") {
            Some(FieldValue::Int(n)) => *n,
            other => panic!("{other:?} in {m:?}"),
        })
        .collect();
    // One answer per gather, from one program that was never restarted.
    assert_eq!(counts, (1..=counts.len() as i64).collect::<Vec<_>>());
    let Some(FieldValue::Int(pid)) = metrics[0].field("pid") else {
        panic!("{:?}", metrics[0])
    };
    // Shutdown stopped the program: its pid is gone (bounded wait).
    let end = Instant::now() + Duration::from_secs(15);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < end, "execd child {pid} survived shutdown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The execd processor and output in one pipeline: demo → a Python filter
/// that tags every metric → a program appending to a file. Shutdown
/// flushes through the output's program.
#[actix_rt::test]
async fn execd_processor_and_output_in_a_pipeline() {
    repo_root();
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("sink.txt");
    let filter = "import sys\n\
                  for line in sys.stdin:\n    \
                  if not line.startswith('#'):\n        \
                  series, rest = line.split(' ', 1)\n        \
                  line = series + ',via=py ' + rest\n    \
                  sys.stdout.write(line)\n    \
                  sys.stdout.flush()\n";
    let processor =
        format!("use_plugin_execd:\n  command: [python3, -c, {filter:?}]\n  batch_timeout: 20\n");
    let output = format!(
        "plugin: execd\ncommand: [sh, -c, 'cat >> {}']\nflush_interval: 0.1\n",
        sink.display()
    );
    let (_d, etc) = common::etc(&[
        (
            "main.yaml",
            "open: [demo]\ninterval: 0.2\ndelay_sec: 0\ncommon_output: [sink]\n",
        ),
        ("processor/demo.yaml", &processor),
        ("output/sink.yaml", &output),
    ]);
    let sup = start(&etc, Registry::with_builtins());
    let end = Instant::now() + Duration::from_secs(30);
    let lines = loop {
        let text = std::fs::read_to_string(&sink).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(String::from).collect();
        if lines.len() >= 2 || Instant::now() > end {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    sup.send(Shutdown {
        deadline: Duration::from_secs(5),
    })
    .await
    .unwrap();
    assert!(lines.len() >= 2, "{lines:?}");
    for l in &lines {
        assert!(l.starts_with("demo,"), "{l}");
        assert!(l.contains(",via=py "), "{l}");
        assert!(l.contains("x="), "{l}");
    }
}
