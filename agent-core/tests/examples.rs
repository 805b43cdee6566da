//! The plugin template in examples/ works as documented: registered by its
//! one call, configured from a file, run through a real pipeline.
mod common;
#[allow(dead_code)]
#[path = "../../examples/custom_input.rs"]
mod custom_input;

use agent_core::{FieldValue, Registry, Shutdown, Status};
use std::time::Duration;

#[actix_rt::test]
async fn template_input_runs_in_a_pipeline() {
    let mut r = Registry::with_builtins();
    custom_input::register(&mut r);
    let collected = common::add_collect(&mut r);
    let (_d, etc) = common::etc(&[
        (
            "main.yaml",
            "open: [uptime]\ninterval: 0.1\ndelay_sec: 0\ncommon_output: [collect]\n",
        ),
        ("input/uptime.yaml", "path: /proc/uptime\n"),
    ]);
    let sup = common::start(r, &etc);
    tokio::time::sleep(Duration::from_millis(350)).await;
    sup.send(Shutdown {
        deadline: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let metrics = collected.metrics();
    assert!(metrics.len() >= 3, "{}", metrics.len());
    let proc_uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    for m in &metrics {
        assert_eq!(m.name, "uptime");
        let Some(FieldValue::Float(up)) = m.field("uptime_sec") else {
            panic!("{m:?}")
        };
        assert!(*up > 0.0 && *up <= proc_uptime, "{up} vs {proc_uptime}");
        assert!(m.tag("host_name").is_some());
    }
}

#[actix_rt::test]
async fn template_input_errors_are_counted_not_fatal() {
    let mut r = Registry::with_builtins();
    custom_input::register(&mut r);
    let collected = common::add_collect(&mut r);
    let (d, etc) = common::etc(&[(
        "main.yaml",
        "open: [uptime]\ninterval: 0.05\ndelay_sec: 0\ncommon_output: [collect]\n",
    )]);
    let bad = d.path().join("not-uptime");
    std::fs::write(&bad, "hello\n").unwrap();
    common::write(
        &etc.join("host.yaml"),
        &format!("input:\n  uptime:\n    path: {}\n", bad.display()),
    );
    let sup = common::start(r, &etc);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let status = sup.send(Status).await.unwrap();
    sup.send(Shutdown {
        deadline: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let s = &status.find("input", "uptime").unwrap().stats;
    assert!(s.errors >= 2, "{s:?}");
    assert!(
        s.last_error
            .as_deref()
            .unwrap()
            .contains("expected two numbers"),
        "{s:?}"
    );
    assert!(collected.metrics().is_empty());
}
