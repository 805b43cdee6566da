//! Delivery guarantees of the output actors, with test outputs: a hanging
//! output does not delay the others, failed writes are retried in order
//! exactly once, the buffer limit drops the oldest with a count, and the
//! disk buffer replays what an earlier run left (skipping a corrupt record).
mod common;

use actix::prelude::*;
use agent_core::{
    Accumulator, AgentConfig, FieldValue, GatherOnce, Input, Metric, Output, PipelineSupervisor,
    Plan, PluginError, PluginResult, Registry, Shutdown, Status,
};
use common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

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

fn seq_of(m: &Metric) -> u64 {
    match m.field("seq") {
        Some(FieldValue::Uint(v)) => *v,
        other => panic!("seq {other:?}"),
    }
}

/// Never finishes a write.
struct Hang;

impl Output for Hang {
    async fn write(&mut self, _: &[Metric]) -> PluginResult {
        futures::future::pending::<()>().await;
        Ok(())
    }
}

/// Fails while `fail` is set, then records like `collect`.
struct Flaky {
    fail: Arc<std::sync::atomic::AtomicBool>,
    got: Arc<Mutex<Vec<Metric>>>,
    attempts: Arc<AtomicU64>,
}

impl Output for Flaky {
    async fn write(&mut self, batch: &[Metric]) -> PluginResult {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(PluginError::msg("backend down"));
        }
        self.got.lock().unwrap().extend_from_slice(batch);
        Ok(())
    }
}

#[actix_rt::test]
async fn hanging_output_does_not_delay_other_outputs_or_inputs() {
    let mut r = Registry::new();
    let collected = add_collect(&mut r);
    r.add_output("hang", "", "", |_| Ok(Hang));
    let next = Arc::new(AtomicU64::new(0));
    let n2 = next.clone();
    r.add_input("steady", "", "", move |_| Ok(Seq { next: n2.clone() }));
    let (_d, etc) = etc(&[(
        "main.yaml",
        "open: [steady]\ninterval: 0.05\ndelay_sec: 0\ncommon_output: [hang, collect]\n\
         output:\n  hang: {flush_interval: 0.05, batch_size: 1}\n  collect: {flush_interval: 0.05}\n",
    )]);
    let cfg = AgentConfig::load(&etc).unwrap();
    let plan = Plan::new(&cfg, &r).unwrap();
    let sup = PipelineSupervisor::new(cfg, plan, Arc::new(r), logger()).start();
    // Every metric must reach `collect` within two flush intervals and a margin.
    let started = Instant::now();
    let mut worst_lag = Duration::ZERO;
    while started.elapsed() < Duration::from_millis(1500) {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let gathered = next.load(Ordering::SeqCst);
        let got = collected.metrics().len() as u64;
        if gathered > got + 10 {
            worst_lag = worst_lag.max(Duration::from_millis(50 * (gathered - got)));
            println!("collect behind by {} metrics", gathered - got);
        }
    }
    let status = sup.send(Status).await.unwrap();
    let report = sup
        .send(Shutdown {
            deadline: Duration::from_millis(500),
        })
        .await
        .unwrap();
    let gathered = next.load(Ordering::SeqCst);
    let seqs: Vec<u64> = collected.metrics().iter().map(seq_of).collect();
    println!(
        "gathered {gathered}, collect got {}, hang buffered {}, undelivered at shutdown {}",
        seqs.len(),
        status.find("output", "hang").unwrap().stats.buffered,
        report.undelivered
    );
    // 1.5 s at 50 ms from t=0: 31 gathers; the input kept its cadence.
    assert!((26..=33).contains(&gathered), "input cadence: {gathered}");
    assert_eq!(
        seqs,
        (0..gathered).collect::<Vec<_>>(),
        "collect got everything, in order"
    );
    assert_eq!(
        worst_lag,
        Duration::ZERO,
        "collect never fell more than 4 metrics behind"
    );
    // The hanging output holds its metrics: reported, not silently lost.
    assert!(report.undelivered as u64 >= gathered - 1, "{report:?}");
}

#[actix_rt::test]
async fn failed_writes_are_retried_in_order_exactly_once() {
    let mut r = Registry::new();
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let got = Arc::new(Mutex::new(Vec::new()));
    let attempts = Arc::new(AtomicU64::new(0));
    let (f2, g2, a2) = (fail.clone(), got.clone(), attempts.clone());
    r.add_output("flaky", "", "", move |_| {
        Ok(Flaky {
            fail: f2.clone(),
            got: g2.clone(),
            attempts: a2.clone(),
        })
    });
    let next = Arc::new(AtomicU64::new(0));
    let n2 = next.clone();
    r.add_input("steady", "", "", move |_| Ok(Seq { next: n2.clone() }));
    let (_d, etc) = etc(&[(
        "main.yaml",
        "open: [steady]\ninterval: 0.02\ndelay_sec: 0\ncommon_output: [flaky]\n\
         output:\n  flaky: {flush_interval: 0.05, batch_size: 7, retry_max_sec: 0.4}\n",
    )]);
    let cfg = AgentConfig::load(&etc).unwrap();
    let plan = Plan::new(&cfg, &r).unwrap();
    let sup = PipelineSupervisor::new(cfg, plan, Arc::new(r), logger()).start();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let failed_attempts = attempts.load(Ordering::SeqCst);
    fail.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let report = sup
        .send(Shutdown {
            deadline: Duration::from_secs(5),
        })
        .await
        .unwrap();
    let gathered = next.load(Ordering::SeqCst);
    let seqs: Vec<u64> = got.lock().unwrap().iter().map(seq_of).collect();
    println!(
        "failed attempts {failed_attempts}, gathered {gathered}, delivered {}",
        seqs.len()
    );
    assert_eq!(report.undelivered, 0);
    assert_eq!(seqs, (0..gathered).collect::<Vec<_>>());
    // Backoff 0.5 s capped at 0.4 s: a handful of attempts in 1.5 s, not one per flush (30).
    assert!((2..=8).contains(&failed_attempts), "{failed_attempts}");
}

#[actix_rt::test]
async fn full_buffer_drops_oldest_and_counts_them() {
    let mut r = Registry::new();
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let got = Arc::new(Mutex::new(Vec::new()));
    let (f2, g2) = (fail.clone(), got.clone());
    r.add_output("flaky", "", "", move |_| {
        Ok(Flaky {
            fail: f2.clone(),
            got: g2.clone(),
            attempts: Arc::new(AtomicU64::new(0)),
        })
    });
    let next = Arc::new(AtomicU64::new(0));
    let n2 = next.clone();
    r.add_input("steady", "", "", move |_| Ok(Seq { next: n2.clone() }));
    let (_d, etc) = etc(&[(
        "main.yaml",
        "open: [steady]\ninterval: 3600\ndelay_sec: 0\ncommon_output: [flaky]\n\
         output:\n  flaky: {flush_interval: 0.05, batch_size: 5, buffer_limit: 20, retry_max_sec: 0.1}\n",
    )]);
    let cfg = AgentConfig::load(&etc).unwrap();
    let plan = Plan::new(&cfg, &r).unwrap();
    let sup = PipelineSupervisor::new(cfg, plan, Arc::new(r), logger())
        .unscheduled()
        .start();
    for _ in 0..50 {
        sup.send(GatherOnce).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = sup.send(Status).await.unwrap();
    let stats = &status.find("output", "flaky").unwrap().stats;
    fail.store(false, Ordering::SeqCst);
    let report = sup
        .send(Shutdown {
            deadline: Duration::from_secs(5),
        })
        .await
        .unwrap();
    let seqs: Vec<u64> = got.lock().unwrap().iter().map(seq_of).collect();
    println!(
        "dropped {}, buffered {}, delivered {}",
        stats.dropped,
        stats.buffered,
        seqs.len()
    );
    assert_eq!(stats.dropped, 30);
    assert_eq!(stats.buffered, 20);
    assert_eq!(report.undelivered, 0);
    assert_eq!(
        seqs,
        (30..50).collect::<Vec<_>>(),
        "the newest 20 survive, in order"
    );
}

#[actix_rt::test]
async fn disk_buffer_replays_previous_run_first_and_skips_corrupt_record() {
    let dir = tempfile::tempdir().unwrap();
    let buf = dir.path().join("buf");
    let main = format!(
        "open: [steady]\ninterval: 3600\ndelay_sec: 0\ncommon_output: [flaky]\n\
         output:\n  flaky: {{flush_interval: 0.05, batch_size: 10, retry_max_sec: 0.1, disk_buffer: {{path: '{}', max_bytes: 1 MB}}}}\n",
        buf.display()
    );
    let (_d, etc) = etc(&[("main.yaml", &main)]);
    let next = Arc::new(AtomicU64::new(0));
    let run = |fail: bool, gathers: usize, deadline: Duration| {
        let mut r = Registry::new();
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(fail));
        let got = Arc::new(Mutex::new(Vec::new()));
        let (f2, g2) = (fail.clone(), got.clone());
        r.add_output("flaky", "", "", move |_| {
            Ok(Flaky {
                fail: f2.clone(),
                got: g2.clone(),
                attempts: Arc::new(AtomicU64::new(0)),
            })
        });
        let n2 = next.clone();
        r.add_input("steady", "", "", move |_| Ok(Seq { next: n2.clone() }));
        let cfg = AgentConfig::load(&etc).unwrap();
        let plan = Plan::new(&cfg, &r).unwrap();
        let sup = PipelineSupervisor::new(cfg, plan, Arc::new(r), logger())
            .unscheduled()
            .start();
        async move {
            for _ in 0..gathers {
                sup.send(GatherOnce).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let status = sup.send(Status).await.unwrap();
            let report = sup.send(Shutdown { deadline }).await.unwrap();
            let seqs: Vec<u64> = got.lock().unwrap().iter().map(seq_of).collect();
            (seqs, report.undelivered, status)
        }
    };
    // Run 1: the backend refuses everything; 30 metrics stay on disk.
    let (seqs, undelivered, _) = run(true, 30, Duration::from_millis(300)).await;
    assert!(seqs.is_empty());
    assert_eq!(undelivered, 30);
    // Corrupt one record in the middle of the log.
    let seg = std::fs::read_dir(&buf)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let mut data = std::fs::read(&seg).unwrap();
    let mut pos = 0usize;
    for _ in 0..12 {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 8 + len;
    }
    data[pos + 12] ^= 0xff;
    std::fs::write(&seg, &data).unwrap();
    // Run 2: the backend works; the old log first, then 5 new metrics.
    let (seqs, undelivered, _) = run(false, 5, Duration::from_secs(5)).await;
    println!(
        "replayed and delivered {} metrics; 1 corrupt record skipped",
        seqs.len()
    );
    assert_eq!(undelivered, 0);
    let expected: Vec<u64> = (0..35).filter(|&i| i != 12).collect();
    assert_eq!(
        seqs, expected,
        "replayed in order, the corrupt record skipped"
    );
}

/// A pull output answers scrapes from the start, not from its first flush:
/// the output actor connects (here: binds the listener) when it starts.
#[actix_rt::test]
async fn prometheus_endpoint_listens_before_the_first_flush() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_d, etc) = etc(&[(
        "main.yaml",
        &format!(
            "open: [demo]\ninterval: 3600\ndelay_sec: 0\ncommon_output: [prometheus_client]\n\
             output:\n  prometheus_client: {{listen: '127.0.0.1:{port}', flush_interval: 3600}}\n"
        ),
    )]);
    let sup = start(Registry::with_builtins(), &etc);
    // The first flush is an hour away; the endpoint must answer within seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let got = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                .ok()?;
            let mut text = String::new();
            s.read_to_string(&mut text).ok()?;
            Some(text)
        })
        .await
        .unwrap();
        match got {
            Some(text) => break text,
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            None => panic!("the /metrics endpoint did not answer within 10 s of the start"),
        }
    };
    assert!(answer.starts_with("HTTP/1."), "{answer}");
    assert!(answer.contains(" 200 "), "{answer}");
    let _ = sup
        .send(Shutdown {
            deadline: Duration::from_secs(5),
        })
        .await;
}
