//! A processor that blocks ([`Processor::blocks`]) runs off the event loop:
//! another pipeline keeps its cadence meanwhile, batches keep their order,
//! shutdown waits for them, and a panic on the worker thread is caught and
//! the processor rebuilt.
mod common;

use agent_core::{Metric, PluginResult, Processor, Registry, Shutdown, Status};
use common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Sleeps `pause` per batch (a program that answers slowly) and tags each
/// metric `processed=yes`; panics on the batch number `panic_on` (counted
/// across rebuilds).
struct Sleepy {
    pause: Duration,
    batches: Arc<AtomicU64>,
    panic_on: Option<u64>,
}

impl Processor for Sleepy {
    fn apply(&mut self, batch: &mut Vec<Metric>) -> PluginResult {
        let n = self.batches.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.pause);
        if Some(n) == self.panic_on {
            panic!("sleepy panics on batch {n}");
        }
        for m in batch.iter_mut() {
            m.set_tag("processed", "yes");
        }
        Ok(())
    }

    fn blocks(&self) -> bool {
        true
    }
}

fn seqs(metrics: &[Metric], name: &str) -> Vec<u64> {
    metrics
        .iter()
        .filter(|m| m.name == name)
        .map(|m| match m.field("seq") {
            Some(agent_core::FieldValue::Uint(v)) => *v,
            other => panic!("seq {other:?}"),
        })
        .collect()
}

fn registry(panic_on: Option<u64>) -> (Registry, Collected, Arc<AtomicU64>) {
    let mut r = Registry::with_builtins();
    let collected = add_collect(&mut r);
    for name in ["slow", "steady"] {
        let seq = Arc::new(AtomicU64::new(0));
        r.add_input(name, "", "", move |_| Ok(Counter { seq: seq.clone() }));
    }
    let batches = Arc::new(AtomicU64::new(0));
    let b2 = batches.clone();
    r.add_processor("sleepy", "", "", move |_| {
        Ok(Sleepy {
            pause: Duration::from_millis(200),
            batches: b2.clone(),
            panic_on,
        })
    });
    (r, collected, batches)
}

const MAIN: &str = "open: [slow, steady]\ninterval: 0.05\ndelay_sec: 0\n\
    common_output: [collect]\noutput:\n  collect: {flush_interval: 0.02}\n\
    input:\n  slow: {interval: 0.25}\n";

#[actix_rt::test]
async fn a_blocking_processor_does_not_stall_other_pipelines() {
    let (r, collected, batches) = registry(None);
    let (_d, etc) = etc(&[
        ("main.yaml", MAIN),
        ("processor/slow.yaml", "use_plugin_sleepy: {}\n"),
    ]);
    let sup = start(r, &etc);
    tokio::time::sleep(Duration::from_millis(1030)).await;
    let report = sup
        .send(Shutdown {
            deadline: Duration::from_secs(10),
        })
        .await
        .unwrap();
    assert_eq!(report.undelivered, 0);
    // On the loop, 200 ms of sleep per 250 ms would have cost the steady
    // pipeline most of its ticks (missed ticks are skipped); off the loop it
    // gathers about 21 times in the second.
    let steady = collected.count_named("steady");
    assert!(
        (17..=22).contains(&steady),
        "steady gathered {steady} times"
    );
    let metrics = collected.metrics();
    assert_eq!(
        seqs(&metrics, "steady"),
        (0..steady as u64).collect::<Vec<_>>()
    );
    // Every slow batch was processed (shutdown waited for the one on the
    // worker), in gather order.
    let slow = seqs(&metrics, "slow");
    assert!(slow.len() >= 4, "{slow:?}");
    assert_eq!(slow, (0..slow.len() as u64).collect::<Vec<_>>());
    assert!(metrics
        .iter()
        .filter(|m| m.name == "slow")
        .all(|m| m.tag("processed") == Some("yes")));
    assert_eq!(batches.load(Ordering::SeqCst), slow.len() as u64);
}

#[actix_rt::test]
async fn a_panic_on_the_worker_is_caught_and_the_processor_rebuilt() {
    let (r, collected, _) = registry(Some(1));
    let (_d, etc) = etc(&[
        ("main.yaml", MAIN),
        ("processor/slow.yaml", "use_plugin_sleepy: {}\n"),
    ]);
    let sup = start(r, &etc);
    tokio::time::sleep(Duration::from_millis(1530)).await;
    let status = sup.send(Status).await.unwrap();
    let report = sup
        .send(Shutdown {
            deadline: Duration::from_secs(10),
        })
        .await
        .unwrap();
    assert_eq!(report.undelivered, 0);
    let stage = status.find("processor", "sleepy").unwrap();
    assert_eq!(stage.stats.panics, 1, "{:?}", stage.stats);
    assert!(stage.stats.restarts >= 1, "{:?}", stage.stats);
    assert!(stage.alive);
    let metrics = collected.metrics();
    let slow: Vec<&Metric> = metrics.iter().filter(|m| m.name == "slow").collect();
    // Nothing lost, order kept; the batch that panicked (and any taken
    // from the queue during the 100 ms backoff) passed on unprocessed,
    // those after the rebuild are processed again.
    assert_eq!(
        seqs(&metrics, "slow"),
        (0..slow.len() as u64).collect::<Vec<_>>()
    );
    let processed: Vec<bool> = slow
        .iter()
        .map(|m| m.tag("processed") == Some("yes"))
        .collect();
    assert!(slow.len() >= 5, "{processed:?}");
    assert!(processed[0] && !processed[1], "{processed:?}");
    let rebuilt = (2..processed.len()).find(|&i| processed[i]);
    assert!(
        rebuilt.is_some_and(|i| processed[i..].iter().all(|p| *p)),
        "{processed:?}"
    );
}
