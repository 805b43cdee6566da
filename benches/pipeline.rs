//! End-to-end throughput through the real actors: a PipelineSupervisor runs
//! a synthetic input that emits `GATHER_BATCH` metrics per gather as fast
//! as its 1 ms interval lets it, then the converter (human_bytes +
//! get_round), an alarm rule (threshold) and an output that discards and
//! counts. One iteration is the time until the output has counted
//! `PER_ITER` metrics (pipeline start-up included, well under 1% of it).
//!
//! A counting global allocator reports allocations per metric (printed
//! once before the criterion runs). Compare 1 and 2 cores with
//! `taskset -c 0` / `taskset -c 0,1` on the bench binary (see
//! benches/footprint/README.md).
use actix::prelude::*;
use agent_core::{
    Accumulator, AgentConfig, Input, Metric, Output, PipelineSupervisor, Plan, PluginResult,
    Registry, Shutdown,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::alloc::{GlobalAlloc, Layout, System as SysAlloc};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Counts every allocation (and reallocation) the process makes.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { SysAlloc.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { SysAlloc.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { SysAlloc.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Metrics per gather of the synthetic input.
const GATHER_BATCH: usize = 10_000;
/// Metrics counted by the output per criterion iteration.
const PER_ITER: u64 = 200_000;

/// Emits `GATHER_BATCH` cpu/mem-like metrics per gather.
struct Synthetic {
    seq: u64,
}

impl Input for Synthetic {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        for _ in 0..GATHER_BATCH {
            self.seq += 1;
            let mut m = acc.metric();
            m.fields.reserve(3);
            // One in a hundred crosses the alarm threshold (90).
            m.push_field("percent", (self.seq % 100) as f64 + 0.25);
            m.push_field("total", 8_348_397_568u64);
            m.push_field("used", 1_234_567u64 + self.seq);
            acc.add(m);
        }
        Ok(())
    }
}

/// Discards every batch; wakes the bench when `target` metrics went by.
struct Counter {
    seen: Arc<AtomicU64>,
    target: Arc<AtomicU64>,
    done: Arc<Notify>,
}

impl Output for Counter {
    async fn write(&mut self, batch: &[Metric]) -> PluginResult {
        let n = self.seen.fetch_add(batch.len() as u64, Relaxed) + batch.len() as u64;
        if n >= self.target.load(Relaxed) {
            self.done.notify_one();
        }
        Ok(())
    }
}

fn write_etc(dir: &Path) {
    let files = [
        (
            "main.yaml",
            "open: [synth]\ninterval: 0.001\ndelay_sec: 0\ncommon_output: [count]\n\
             info: {node_ip: 10.0.0.1, host_name: web1}\n\
             output:\n  count: {batch_size: 10000, buffer_limit: 1000000, flush_interval: 0.001}\n",
        ),
        (
            "processor/synth.yaml",
            "use_plugin_converter:\n  human_bytes: {fields_items: [total, used], name_prefix: human_}\n  \
             get_round: {fields_items: [percent]}\n",
        ),
        ("aggs/synth.yaml", "alarm:\n  comment: bench\n  percent: 90\n"),
    ];
    for (rel, text) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// Runs one pipeline until the output counted `total` metrics; returns the
/// elapsed time and the allocations made meanwhile.
fn run(etc: &Path, total: u64) -> (Duration, u64) {
    let seen = Arc::new(AtomicU64::new(0));
    let target = Arc::new(AtomicU64::new(total));
    let done = Arc::new(Notify::new());
    let mut r = Registry::with_builtins();
    r.add_input("synth", "bench input", "", |_| Ok(Synthetic { seq: 0 }));
    let (s, t, d) = (seen.clone(), target.clone(), done.clone());
    r.add_output("count", "bench sink", "", move |_| {
        Ok(Counter {
            seen: s.clone(),
            target: t.clone(),
            done: d.clone(),
        })
    });
    let cfg = AgentConfig::load(etc).unwrap();
    let plan = Plan::new(&cfg, &r).unwrap();
    let log = slog::Logger::root(slog::Discard, slog::o!());
    actix_rt::System::new().block_on(async move {
        let allocs0 = ALLOCS.load(Relaxed);
        let start = Instant::now();
        let sup = PipelineSupervisor::new(cfg, plan, Arc::new(r), log).start();
        while seen.load(Relaxed) < total {
            let _ = tokio::time::timeout(Duration::from_millis(50), done.notified()).await;
        }
        let elapsed = start.elapsed();
        let allocs = ALLOCS.load(Relaxed) - allocs0;
        let _ = sup
            .send(Shutdown {
                deadline: Duration::from_secs(5),
            })
            .await;
        (elapsed, allocs)
    })
}

fn pipeline(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    write_etc(&etc);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    // Allocations per metric over one long run (start-up included).
    let (elapsed, allocs) = run(&etc, 1_000_000);
    println!(
        "pipeline: {cores} core(s) available; 1,000,000 metrics in {:.3} s = {:.0} metrics/s; \
         {:.2} allocations per metric",
        elapsed.as_secs_f64(),
        1e6 / elapsed.as_secs_f64(),
        allocs as f64 / 1e6
    );
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(PER_ITER));
    g.bench_function(
        format!("synthetic 10k/gather -> converter -> alarm -> discard ({cores} cores)"),
        |b| {
            b.iter_custom(|iters| {
                let (elapsed, _) = run(&etc, PER_ITER * iters);
                elapsed
            })
        },
    );
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
