//! The actor pipeline end to end: gathering on cadence, panics restarted
//! with backoff while another pipeline keeps its cadence, shutdown flushing.
mod common;

use agent_core::{Accumulator, Input, PluginError, PluginResult, Registry, Shutdown, Status};
use common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Panics on every other gather (by a counter that survives rebuilds).
struct Flaky {
    calls: Arc<AtomicU64>,
}

impl Input for Flaky {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n % 2 == 1 {
            panic!("flaky input panics on gather {n}");
        }
        let mut m = acc.metric();
        m.push_field("n", n);
        acc.add(m);
        Ok(())
    }
}

/// Returns an error on every gather.
struct Failing;

impl Input for Failing {
    async fn gather(&mut self, _: &mut Accumulator) -> PluginResult {
        Err(PluginError::msg("backend unreachable"))
    }
}

#[actix_rt::test]
async fn panicking_input_restarts_while_other_pipeline_keeps_cadence() {
    let mut r = Registry::with_builtins();
    let collected = add_collect(&mut r);
    let calls = Arc::new(AtomicU64::new(0));
    let c2 = calls.clone();
    r.add_input("flaky", "", "", move |_| Ok(Flaky { calls: c2.clone() }));
    let seq = Arc::new(AtomicU64::new(0));
    let s2 = seq.clone();
    r.add_input("steady", "", "", move |_| Ok(Counter { seq: s2.clone() }));
    let (_d, etc) = etc(&[(
        "main.yaml",
        "open: [flaky, steady]\ninterval: 0.05\ndelay_sec: 0\ncommon_output: [collect]\noutput:\n  collect: {flush_interval: 0.02}\n",
    )]);
    let sup = start(r, &etc);
    tokio::time::sleep(Duration::from_millis(1030)).await;
    let status = sup.send(Status).await.unwrap();
    let report = sup
        .send(Shutdown {
            deadline: Duration::from_secs(5),
        })
        .await
        .unwrap();
    assert_eq!(report.undelivered, 0);

    // The steady pipeline gathered at 0.05 s for about 1 s: 21 ticks from t=0.
    let steady = collected.count_named("steady");
    // A loaded 2-core CI box may skip a tick or two; a disturbed pipeline
    // would lose many.
    assert!(
        (17..=22).contains(&steady),
        "steady gathered {steady} times"
    );
    let seqs: Vec<u64> = collected
        .metrics()
        .iter()
        .filter(|m| m.name == "steady")
        .map(|m| match m.field("seq") {
            Some(agent_core::FieldValue::Uint(v)) => *v,
            other => panic!("seq {other:?}"),
        })
        .collect();
    assert_eq!(
        seqs,
        (0..steady as u64).collect::<Vec<_>>(),
        "no gap, in order"
    );

    let flaky = status.find("input", "flaky").unwrap();
    assert!(flaky.stats.panics >= 2, "{:?}", flaky.stats);
    assert!(flaky.stats.restarts >= 2, "{:?}", flaky.stats);
    assert!(flaky
        .stats
        .last_error
        .as_deref()
        .unwrap_or("")
        .contains("panics on gather"));
    assert!(flaky.alive);
    // Backoff (100 ms after each panic) makes the flaky input gather less often.
    assert!(
        collected.count_named("flaky") < steady,
        "flaky {} steady {steady}",
        collected.count_named("flaky")
    );
    assert!(collected.count_named("flaky") >= 3);
    assert!(status.find("input", "steady").unwrap().stats.errors == 0);
}

#[actix_rt::test]
async fn erroring_input_backs_off_exponentially() {
    let mut r = Registry::with_builtins();
    let _collected = add_collect(&mut r);
    r.add_input("failing", "", "", |_| Ok(Failing));
    let (_d, etc) = etc(&[(
        "main.yaml",
        "open: [failing]\ninterval: 0.01\ndelay_sec: 0\ncommon_output: [collect]\n",
    )]);
    let sup = start(r, &etc);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let status = sup.send(Status).await.unwrap();
    sup.send(Shutdown {
        deadline: Duration::from_secs(2),
    })
    .await
    .unwrap();
    let s = &status.find("input", "failing").unwrap().stats;
    // Failures at about 0, 0.1, 0.3, 0.7, 1.5 s: five, not the 160 an
    // interval of 10 ms would give without backoff.
    assert!((4..=6).contains(&s.errors), "{s:?}");
    assert_eq!(
        s.last_error.as_deref(),
        Some("gather failed: backend unreachable")
    );
}

#[actix_rt::test]
async fn shutdown_flushes_everything_gathered() {
    let mut r = Registry::with_builtins();
    let collected = add_collect(&mut r);
    let seq = Arc::new(AtomicU64::new(0));
    let s2 = seq.clone();
    r.add_input("steady", "", "", move |_| Ok(Counter { seq: s2.clone() }));
    // A flush interval far beyond the test: only shutdown can deliver.
    let (_d, etc) = etc(&[(
        "main.yaml",
        "open: [steady]\ninterval: 0.02\ndelay_sec: 0\ncommon_output: [collect]\noutput:\n  collect: {flush_interval: 3600}\n",
    )]);
    let sup = start(r, &etc);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(collected.metrics().len(), 0);
    sup.send(Shutdown {
        deadline: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let gathered = seq.load(Ordering::SeqCst);
    assert!(gathered >= 10);
    assert_eq!(collected.metrics().len() as u64, gathered);
}

#[actix_rt::test]
async fn internal_input_reports_every_actor_and_the_process() {
    let mut r = Registry::with_builtins();
    let collected = add_collect(&mut r);
    let seq = Arc::new(AtomicU64::new(0));
    let s2 = seq.clone();
    r.add_input("steady", "", "", move |_| Ok(Counter { seq: s2.clone() }));
    let (_d, etc) = etc(&[(
        "main.yaml",
        "open: [steady, internal]\ninterval: 0.1\ndelay_sec: 0\ncommon_output: [collect]\noutput:\n  collect: {flush_interval: 0.05}\n",
    )]);
    let sup = start(r, &etc);
    tokio::time::sleep(Duration::from_millis(450)).await;
    sup.send(Shutdown {
        deadline: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let internal: Vec<_> = collected
        .metrics()
        .into_iter()
        .filter(|m| m.name == "internal")
        .collect();
    let last_steady = internal
        .iter()
        .rev()
        .find(|m| m.tag("kind") == Some("input") && m.tag("plugin") == Some("steady"))
        .expect("a metric about the steady input");
    let calls = last_steady.field("calls").and_then(|v| v.as_f64()).unwrap();
    assert!(
        calls >= 2.0 && calls <= seq.load(Ordering::SeqCst) as f64,
        "{calls}"
    );
    assert!(internal
        .iter()
        .any(|m| m.tag("kind") == Some("output") && m.tag("plugin") == Some("collect")));
    let process = internal
        .iter()
        .find(|m| m.tag("kind") == Some("process"))
        .unwrap();
    assert!(process.field("rss_bytes").and_then(|v| v.as_f64()).unwrap() > 1e6);
}

/// Reports a partial problem every gather but is not broken.
struct Grumpy {
    made: Arc<AtomicU64>,
}

impl Input for Grumpy {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        self.made.fetch_add(1, Ordering::SeqCst);
        let mut m = acc.metric();
        m.push_field("ok", true);
        acc.add(m);
        acc.add_error("one of three targets is unreachable");
        Ok(())
    }
}

#[actix_rt::test]
async fn reported_errors_are_counted_without_a_restart_or_a_skipped_gather() {
    let mut r = Registry::with_builtins();
    let collected = add_collect(&mut r);
    let made = Arc::new(AtomicU64::new(0));
    let m2 = made.clone();
    r.add_input("grumpy", "", "", move |_| Ok(Grumpy { made: m2.clone() }));
    let (_d, etc) = etc(&[(
        "main.yaml",
        "open: [grumpy]\ninterval: 0.05\ndelay_sec: 0\ncommon_output: [collect]\noutput:\n  collect: {flush_interval: 0.05}\n",
    )]);
    let sup = start(r, &etc);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let status = sup.send(Status).await.unwrap();
    sup.send(Shutdown {
        deadline: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let s = &status.find("input", "grumpy").unwrap().stats;
    assert_eq!(s.restarts, 0, "{s:?}");
    assert_eq!(s.errors, s.calls, "one reported error per gather: {s:?}");
    assert!(s.calls >= 8, "{s:?}");
    assert_eq!(
        s.last_error.as_deref(),
        Some("one of three targets is unreachable")
    );
    // The status is a snapshot: a gather may finish between it and the
    // shutdown, so compare what was delivered with what was made, after the
    // shutdown drained everything.
    assert!(s.metrics_out <= made.load(Ordering::SeqCst), "{s:?}");
    assert_eq!(
        collected.count_named("grumpy") as u64,
        made.load(Ordering::SeqCst)
    );
}

/// An execd program that answers its first request late (a slow start on a
/// loaded host) under main.yaml's short interval: execd's wait is bounded by
/// the interval the core gathers at, so the gather is never abandoned and
/// the program never restarted. Before, `signal_wait` (2 s) outlived the
/// core's 1 s gather timeout and the program was killed at every start.
#[actix_rt::test]
async fn slow_execd_answer_under_main_interval_keeps_its_program() {
    let mut r = Registry::with_builtins();
    let collected = add_collect(&mut r);
    let (_d, etc) = etc(&[
        (
            "main.yaml",
            "open: [slow]\ninterval: 0.2\ndelay_sec: 0\ncommon_output: [collect]\noutput:\n  collect: {flush_interval: 0.05}\n",
        ),
        (
            "input/slow.yaml",
            "plugin: execd\nsignal: STDIN\ncommand: [sh, -c, 'sleep 1.5; n=0; while read x; do n=$((n+1)); echo \"slow n=${n}i\"; done']\n",
        ),
    ]);
    let sup = start(r, &etc);
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while collected.count_named("slow") < 3 && std::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = sup.send(Status).await.unwrap();
    sup.send(Shutdown {
        deadline: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let s = &status.find("input", "slow").unwrap().stats;
    assert_eq!(s.restarts, 0, "{s:?}");
    let ns: Vec<i64> = collected
        .metrics()
        .iter()
        .filter(|m| m.name == "slow")
        .map(|m| match m.field("n") {
            Some(agent_core::FieldValue::Int(n)) => *n,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(ns.len() >= 3, "{ns:?}");
    // One program: its answers count up from 1 without a gap.
    assert_eq!(ns, (1..=ns.len() as i64).collect::<Vec<_>>());
}
