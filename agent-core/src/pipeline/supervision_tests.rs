//! Real supervision: a panic in an actor's own handler code (not its
//! plugin) kills the actor; the supervisor restarts it within a second,
//! re-wires its senders, and no metric it had accepted is lost.
use super::supervisor::PanicActor;
use super::{PipelineSupervisor, Shutdown, Status, StatusReport};
use crate::config::{AgentConfig, Plan};
use crate::metric::Metric;
use crate::plugin::{Accumulator, Aggregator, Input, Output, PluginResult, Processor};
use crate::registry::Registry;
use crate::reload::{ConfigReloader, Reload, ReloaderHandle};
use actix::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Emits one metric per gather with a sequence number; counts what it emitted.
struct Seq {
    next: Arc<AtomicU64>,
}

impl Input for Seq {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        let n = self.next.fetch_add(1, SeqCst);
        let mut m = acc.metric();
        m.push_field("seq", n);
        acc.add(m);
        Ok(())
    }
}

/// Marks every metric it sees.
struct Mark;

impl Processor for Mark {
    fn apply(&mut self, batch: &mut Vec<Metric>) -> PluginResult {
        for m in batch.iter_mut() {
            m.set_tag("marked", "yes");
        }
        Ok(())
    }
}

/// Counts the metrics of a period and emits the count as `tally`.
#[derive(Default)]
struct Tally(u64);

impl Aggregator for Tally {
    fn add(&mut self, _: &Metric) {
        self.0 += 1;
    }
    fn push(&mut self, acc: &mut Accumulator) {
        let mut m = Metric::new("tally", crate::metric::now_ns());
        m.push_field("count", self.0);
        acc.add(m);
    }
    fn reset(&mut self) {
        self.0 = 0;
    }
}

#[derive(Clone, Default)]
struct Recorded {
    metrics: Arc<Mutex<Vec<Metric>>>,
    /// A write is running (for the output test).
    writing: Arc<AtomicBool>,
}

impl Recorded {
    fn all(&self) -> Vec<Metric> {
        self.metrics.lock().unwrap().clone()
    }
    fn named(&self, name: &str) -> Vec<Metric> {
        self.all().into_iter().filter(|m| m.name == name).collect()
    }
    fn seqs(&self, name: &str) -> Vec<u64> {
        self.named(name)
            .iter()
            .filter_map(|m| m.field("seq").and_then(|f| f.as_f64()).map(|v| v as u64))
            .collect()
    }
}

/// Records every batch, after `delay` (the write is in flight meanwhile).
struct Record {
    into: Recorded,
    delay: Duration,
}

impl Output for Record {
    async fn write(&mut self, batch: &[Metric]) -> PluginResult {
        self.into.writing.store(true, SeqCst);
        tokio::time::sleep(self.delay).await;
        self.into.metrics.lock().unwrap().extend_from_slice(batch);
        self.into.writing.store(false, SeqCst);
        Ok(())
    }
}

struct Harness {
    registry: Registry,
    recorded: Recorded,
    emitted: Arc<AtomicU64>,
    steady_emitted: Arc<AtomicU64>,
}

/// Inputs `seq` and `steady`, processor `mark`, aggregator `tally`,
/// outputs `record` (immediate) and `slow` (each write takes 300 ms).
fn harness() -> Harness {
    let mut r = Registry::default();
    let emitted = Arc::new(AtomicU64::new(0));
    let steady_emitted = Arc::new(AtomicU64::new(0));
    let e = emitted.clone();
    r.add_input("seq", "", "", move |_| Ok(Seq { next: e.clone() }));
    let e = steady_emitted.clone();
    r.add_input("steady", "", "", move |_| Ok(Seq { next: e.clone() }));
    r.add_processor("mark", "", "", |_| Ok(Mark));
    r.add_aggregator("tally", "", "", |_| Ok(Tally::default()));
    let recorded = Recorded::default();
    let into = recorded.clone();
    r.add_output("record", "", "", move |_| {
        Ok(Record {
            into: into.clone(),
            delay: Duration::ZERO,
        })
    });
    let into = recorded.clone();
    r.add_output("slow", "", "", move |_| {
        Ok(Record {
            into: into.clone(),
            delay: Duration::from_millis(300),
        })
    });
    Harness {
        registry: r,
        recorded,
        emitted,
        steady_emitted,
    }
}

fn write_etc(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let etc = dir.path().join("etc");
    for (rel, text) in files {
        let p = etc.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
    }
    (dir, etc)
}

/// Injected panics print nothing: printing a backtrace (RUST_BACKTRACE)
/// of a debug build takes about half a second on the event loop thread,
/// which would show up as a gap that is not the supervisor's doing.
fn silence_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = crate::pipeline::panic_message(info.payload());
            if !text.starts_with("injected panic") {
                default(info);
            }
        }));
    });
}

fn quiet() -> slog::Logger {
    silence_injected_panics();
    slog::Logger::root(slog::Discard, slog::o!())
}

fn start(registry: Registry, etc: &Path) -> Addr<PipelineSupervisor> {
    let cfg = AgentConfig::load(etc).expect("config loads");
    let plan = Plan::new(&cfg, &registry).expect("config plans");
    PipelineSupervisor::new(cfg, plan, Arc::new(registry), quiet()).start()
}

async fn status(sup: &Addr<PipelineSupervisor>) -> StatusReport {
    sup.send(Status).await.expect("supervisor answers")
}

/// Polls until the actor is alive again with one actor restart; returns
/// how long that took.
async fn back_after(sup: &Addr<PipelineSupervisor>, kind: &str, name: &str) -> Duration {
    let start = Instant::now();
    loop {
        let report = status(sup).await;
        let actor = report.find(kind, name).expect("actor listed");
        if actor.alive && actor.stats.actor_restarts == 1 {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{kind} {name} not back: {actor:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for the actor to be seen dead, panics it, returns the time to
/// be back.
async fn panic_and_wait(
    sup: &Addr<PipelineSupervisor>,
    kind: &'static str,
    name: &str,
) -> Duration {
    let sent = sup
        .send(PanicActor {
            kind,
            name: name.to_string(),
            then_queue: Vec::new(),
        })
        .await
        .expect("supervisor answers");
    assert!(sent, "no {kind} named {name}");
    back_after(sup, kind, name).await
}

async fn shutdown(sup: &Addr<PipelineSupervisor>) {
    let report = sup
        .send(Shutdown {
            deadline: Duration::from_secs(10),
        })
        .await
        .expect("supervisor answers");
    assert_eq!(report.undelivered, 0);
}

/// Every sequence number from 0 to `emitted` arrived exactly once.
fn assert_all_once(mut seqs: Vec<u64>, emitted: u64, what: &str) {
    seqs.sort_unstable();
    let expected: Vec<u64> = (0..emitted).collect();
    assert_eq!(seqs, expected, "{what}: delivered vs emitted");
}

/// The longest gap between consecutive `steady` metrics, which gathers
/// every 0.1 s.
fn longest_gap(metrics: &[Metric]) -> Duration {
    let mut times: Vec<i64> = metrics.iter().map(|m| m.timestamp_ns).collect();
    times.sort_unstable();
    let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    Duration::from_nanos(gap.max(0) as u64)
}

const MAIN: &str = "open: [seq, steady]\ninterval: 0.1\ndelay_sec: 0\ncommon_output: [record]\n\
                    output:\n  record: {flush_interval: 0.05}\n";

async fn actor_kind_restarts(kind: &'static str, name: &str, files: &[(&str, &str)]) {
    let h = harness();
    let (_d, etc) = write_etc(files);
    let sup = start(h.registry, &etc);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let took = panic_and_wait(&sup, kind, name).await;
    eprintln!("{kind} actor back after {took:?}");
    assert!(took < Duration::from_secs(1), "{kind} back after {took:?}");
    // Keep running a while on the new incarnation.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let report = status(&sup).await;
    assert!(report.actors().all(|a| a.alive), "{report:?}");
    shutdown(&sup).await;

    let seq_metrics = h.recorded.seqs("seq");
    assert_all_once(seq_metrics, h.emitted.load(SeqCst), kind);
    assert_all_once(
        h.recorded.seqs("steady"),
        h.steady_emitted.load(SeqCst),
        "steady",
    );
    // The other pipeline missed no gather: no gap of two intervals.
    let gap = longest_gap(&h.recorded.named("steady"));
    assert!(gap < Duration::from_millis(350), "steady gap {gap:?}");
}

#[actix_rt::test]
async fn input_actor_panic_is_restarted_and_loses_nothing() {
    actor_kind_restarts("input", "seq", &[("main.yaml", MAIN)]).await;
}

#[actix_rt::test]
async fn processor_actor_panic_is_restarted_and_loses_nothing() {
    let h_files = [
        ("main.yaml", MAIN),
        ("processor/seq.yaml", "use_plugin_mark: {}\n"),
    ];
    actor_kind_restarts("processor", "mark", &h_files).await;
}

#[actix_rt::test]
async fn aggregator_actor_panic_is_restarted_and_loses_nothing() {
    let h = harness();
    let (_d, etc) = write_etc(&[
        ("main.yaml", MAIN),
        ("aggs/seq.yaml", "use_plugin_tally: {period: 0.2}\n"),
    ]);
    let recorded = h.recorded.clone();
    let (emitted, steady) = (h.emitted.clone(), h.steady_emitted.clone());
    let sup = start(h.registry, &etc);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let took = panic_and_wait(&sup, "aggregator", "tally").await;
    eprintln!("aggregator actor back after {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "aggregator back after {took:?}"
    );
    let tallies_at_restart = recorded.named("tally").len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The new incarnation aggregates: new periods are pushed.
    assert!(recorded.named("tally").len() > tallies_at_restart);
    shutdown(&sup).await;
    // Raw metrics pass through the aggregator: none lost. (The counts of
    // the period that was running when the actor died are lost.)
    assert_all_once(recorded.seqs("seq"), emitted.load(SeqCst), "aggregator");
    assert_all_once(recorded.seqs("steady"), steady.load(SeqCst), "steady");
    let gap = longest_gap(&recorded.named("steady"));
    assert!(gap < Duration::from_millis(350), "steady gap {gap:?}");
}

#[actix_rt::test]
async fn output_actor_panic_keeps_buffered_and_in_flight_metrics() {
    output_panic("{flush_interval: 0.05, batch_size: 1000}").await;
}

#[actix_rt::test]
async fn output_actor_panic_keeps_disk_buffered_and_in_flight_metrics() {
    output_panic("{flush_interval: 0.05, batch_size: 1000, disk_buffer: {path: buf}}").await;
}

async fn output_panic(settings: &str) {
    let h = harness();
    let main = format!(
        "open: [seq]\ninterval: 0.05\ndelay_sec: 0\ncommon_output: [slow]\n\
         output:\n  slow: {settings}\n"
    );
    let (_d, etc) = write_etc(&[("main.yaml", main.as_str())]);
    let recorded = h.recorded.clone();
    let emitted = h.emitted.clone();
    let sup = start(h.registry, &etc);
    // Wait for a write in flight while more metrics wait in the buffer.
    let start_wait = Instant::now();
    loop {
        let report = status(&sup).await;
        let buffered = report
            .find("output", "slow")
            .map_or(0, |a| a.stats.buffered);
        if recorded.writing.load(SeqCst) && buffered >= 3 {
            break;
        }
        assert!(
            start_wait.elapsed() < Duration::from_secs(10),
            "no write in flight"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delivered_before = recorded.all().len();
    let took = panic_and_wait(&sup, "output", "slow").await;
    eprintln!("output actor back after {took:?}");
    assert!(took < Duration::from_secs(1), "output back after {took:?}");
    // The write that was cut short never recorded its batch.
    assert_eq!(recorded.all().len(), delivered_before);
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown(&sup).await;
    assert_all_once(recorded.seqs("seq"), emitted.load(SeqCst), "output");
}

/// `batches` batches of 3 `queued` metrics, numbered from 0.
fn numbered_batches(batches: u64) -> Vec<Vec<Metric>> {
    (0..batches)
        .map(|b| {
            (0..3)
                .map(|i| {
                    let mut m = Metric::new("queued", crate::metric::now_ns());
                    m.push_field("seq", b * 3 + i);
                    m
                })
                .collect()
        })
        .collect()
}

/// Batches waiting for an actor when it panics (queued right behind the
/// panic, before it can run) are handed to its next incarnation: each
/// arrives exactly once, in order.
async fn queued_behind_panic(kind: &'static str, name: &str) -> Vec<Metric> {
    let h = harness();
    let (_d, etc) = write_etc(&[
        ("main.yaml", MAIN),
        ("processor/seq.yaml", "use_plugin_mark: {}\n"),
    ]);
    let recorded = h.recorded.clone();
    let (emitted, steady) = (h.emitted.clone(), h.steady_emitted.clone());
    let sup = start(h.registry, &etc);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = sup
        .send(PanicActor {
            kind,
            name: name.to_string(),
            then_queue: numbered_batches(20),
        })
        .await
        .expect("supervisor answers");
    assert!(sent, "no {kind} named {name}");
    let took = back_after(&sup, kind, name).await;
    assert!(took < Duration::from_secs(1), "{kind} back after {took:?}");
    let start = Instant::now();
    while recorded.named("queued").len() < 60 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown(&sup).await;
    assert_eq!(
        recorded.seqs("queued"),
        (0..60).collect::<Vec<u64>>(),
        "{kind}: queued metrics, in the order sent"
    );
    assert_all_once(recorded.seqs("seq"), emitted.load(SeqCst), kind);
    assert_all_once(recorded.seqs("steady"), steady.load(SeqCst), "steady");
    recorded.named("queued")
}

#[actix_rt::test]
async fn batches_queued_behind_a_stage_panic_reach_the_next_incarnation() {
    let queued = queued_behind_panic("processor", "mark").await;
    // Processed by the new incarnation, not passed around it.
    assert!(queued.iter().all(|m| m.tag("marked") == Some("yes")));
}

#[actix_rt::test]
async fn batches_queued_behind_an_output_panic_reach_the_next_incarnation() {
    queued_behind_panic("output", "record").await;
}

fn arm_load_panic(etc: &Path) {
    *crate::reload::PANIC_IN_NEXT_LOAD.lock().unwrap() = Some(etc.to_path_buf());
}

async fn wait_reload_state(
    handle: &ReloaderHandle,
    what: &str,
    ok: impl Fn(&crate::reload::ReloadState) -> bool,
) {
    let start = Instant::now();
    loop {
        let state = handle.state().lock().unwrap().clone();
        if ok(&state) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_rt::test]
async fn reloader_survives_a_panic_in_loading_and_in_its_own_handler() {
    let h = harness();
    let one = "open: [seq]\ninterval: 0.1\ndelay_sec: 0\ncommon_output: [record]\n";
    let (_d, etc) = write_etc(&[("main.yaml", one)]);
    let registry = Arc::new(h.registry);
    let cfg = AgentConfig::load(&etc).expect("loads");
    let plan = Plan::new(&cfg, &registry).expect("plans");
    let sup = PipelineSupervisor::new(cfg.clone(), plan, registry.clone(), quiet()).start();
    let handle = ConfigReloader::new(&cfg, registry, sup.clone(), quiet()).start_supervised();

    // 1. Evaluating the new files panics: rejected, the running one kept.
    std::fs::write(etc.join("main.yaml"), one.replace("[seq]", "[seq, steady]")).unwrap();
    arm_load_panic(&etc);
    handle.reload("test");
    wait_reload_state(&handle, "panic rejected", |s| {
        s.last_result.contains("panicked")
    })
    .await;
    assert!(status(&sup).await.find("input", "steady").is_none());

    // 2. A later good edit still applies.
    let two = one.replace("[seq]", "[steady, seq]");
    std::fs::write(etc.join("main.yaml"), &two).unwrap();
    handle.reload("test");
    wait_reload_state(&handle, "good edit applied", |s| s.generation == 2).await;
    assert!(status(&sup).await.find("input", "steady").is_some());

    // 3. The reloader actor itself panics: restarted within a second.
    handle.addr().do_send(crate::reload::PanicNow);
    let start = Instant::now();
    wait_reload_state(&handle, "reloader restarted", |s| s.reloader_restarts == 1).await;
    while !handle.addr().connected() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    eprintln!("reloader back after {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "reloader back after {took:?}"
    );

    // 4. ... and the next edit (SIGHUP-equivalent Reload) applies.
    std::fs::write(etc.join("main.yaml"), one).unwrap();
    handle.addr().do_send(Reload { reason: "test" });
    wait_reload_state(&handle, "edit after restart", |s| s.generation == 3).await;
    assert!(status(&sup).await.find("input", "steady").is_none());
    shutdown(&sup).await;
}

/// Adds `count` numbered metrics, then holds the gather until `release`.
struct Burst {
    count: u64,
    release: Arc<AtomicBool>,
    gathers: Arc<AtomicU64>,
}

impl Input for Burst {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        if self.gathers.fetch_add(1, SeqCst) > 0 {
            return Ok(());
        }
        for n in 0..self.count {
            let mut m = acc.metric();
            m.push_field("seq", n);
            acc.add(m);
        }
        for _ in 0..1000 {
            if self.release.load(SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

#[actix_rt::test]
async fn a_long_gather_hands_its_metrics_on_in_chunks_and_in_order() {
    use crate::plugin::STREAM_CHUNK;
    let mut h = harness();
    let release = Arc::new(AtomicBool::new(false));
    let gathers = Arc::new(AtomicU64::new(0));
    let count = 2 * STREAM_CHUNK as u64 + 500;
    let (r, g) = (release.clone(), gathers.clone());
    h.registry.add_input("burst", "", "", move |_| {
        Ok(Burst {
            count,
            release: r.clone(),
            gathers: g.clone(),
        })
    });
    let (_d, etc) = write_etc(&[(
        "main.yaml",
        "open: [burst]\ninterval: 60\ndelay_sec: 0\ncommon_output: [record]\n\
         common_processor: [m]\nprocessor: {m: {use_plugin_mark: {}}}\n\
         output:\n  record: {flush_interval: 0.05}\n",
    )]);
    let sup = start(h.registry, &etc);
    // The gather still runs: two whole chunks are delivered already.
    let mut delivered = 0;
    for _ in 0..500 {
        delivered = h.recorded.seqs("burst").len();
        if delivered >= 2 * STREAM_CHUNK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        delivered,
        2 * STREAM_CHUNK,
        "delivered while the gather runs"
    );
    assert!(!release.load(SeqCst));
    release.store(true, SeqCst);
    for _ in 0..500 {
        if h.recorded.seqs("burst").len() as u64 == count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown(&sup).await;
    let metrics = h.recorded.named("burst");
    let seqs = h.recorded.seqs("burst");
    assert_eq!(seqs, (0..count).collect::<Vec<_>>(), "all, once, in order");
    assert!(metrics.iter().all(|m| m.tag("marked") == Some("yes")));
}
