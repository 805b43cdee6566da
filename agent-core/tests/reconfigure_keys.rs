//! Every reconfigurable key of every plugin kind takes effect on a running
//! pipeline. Each row of the table starts a pipeline with the `before`
//! config, checks over a window that the row's behaviour is NOT seen yet,
//! applies the `after` config with `ApplyConfig` (as a reload does), and
//! polls until the new behaviour is seen.
mod common;

use actix::prelude::*;
use agent_core::pipeline::{ApplyConfig, StatsSnapshot, Status};
use agent_core::{
    Accumulator, AgentConfig, Aggregator, Input, Metric, Output, PipelineSupervisor, Plan,
    PluginError, PluginResult, Processor, Registry, Shutdown,
};
use common::etc;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the plugins saw, with the time they saw it.
#[derive(Default)]
struct Seen {
    gathers: Mutex<Vec<Instant>>,
    /// Metrics an output write delivered.
    delivered: Mutex<Vec<(Instant, Metric)>>,
    /// Size of each successful write.
    batches: Mutex<Vec<(Instant, usize)>>,
    /// Every write attempt, failed ones included.
    attempts: Mutex<Vec<Instant>>,
}

struct SeqInput {
    label: String,
    seq: Arc<AtomicU64>,
    seen: Arc<Seen>,
}

#[derive(serde::Deserialize)]
struct SeqConfig {
    #[serde(default)]
    label: String,
}

impl Input for SeqInput {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        self.seen.gathers.lock().unwrap().push(Instant::now());
        let mut m = acc.metric();
        m.push_field("seq", self.seq.fetch_add(1, SeqCst));
        m.push_field("label", self.label.as_str());
        acc.add(m);
        Ok(())
    }
}

/// Tags every metric with `t=<value>`.
struct Tagger(String);

#[derive(serde::Deserialize)]
struct TaggerConfig {
    value: String,
}

impl Processor for Tagger {
    fn apply(&mut self, batch: &mut Vec<Metric>) -> PluginResult {
        for m in batch.iter_mut() {
            m.set_tag("t", self.0.as_str());
        }
        Ok(())
    }
}

/// Emits `tally` with the number of metrics of the period.
#[derive(Default)]
struct Tally(u64);

impl Aggregator for Tally {
    fn add(&mut self, _: &Metric) {
        self.0 += 1;
    }
    fn push(&mut self, acc: &mut Accumulator) {
        let mut m = Metric::new("tally", agent_core::metric::now_ns());
        m.push_field("count", self.0);
        acc.add(m);
    }
    fn reset(&mut self) {
        self.0 = 0;
    }
}

/// Records what it delivers; fails every write when `fail: true`.
struct Rec {
    fail: bool,
    seen: Arc<Seen>,
}

#[derive(serde::Deserialize)]
struct RecConfig {
    #[serde(default)]
    fail: bool,
}

impl Output for Rec {
    async fn write(&mut self, batch: &[Metric]) -> PluginResult {
        let now = Instant::now();
        self.seen.attempts.lock().unwrap().push(now);
        if self.fail {
            return Err(PluginError::msg("backend down"));
        }
        self.seen.batches.lock().unwrap().push((now, batch.len()));
        let mut d = self.seen.delivered.lock().unwrap();
        d.extend(batch.iter().cloned().map(|m| (now, m)));
        Ok(())
    }
}

fn registry(seen: &Arc<Seen>) -> Registry {
    let mut r = Registry::default();
    let seq = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    r.add_input("seq", "", "", move |cfg| {
        let c: SeqConfig = cfg.parse()?;
        Ok(SeqInput {
            label: c.label,
            seq: seq.clone(),
            seen: s.clone(),
        })
    });
    r.add_processor("tagger", "", "", |cfg| {
        let c: TaggerConfig = cfg.parse()?;
        Ok(Tagger(c.value))
    });
    r.add_aggregator("tally", "", "", |_| Ok(Tally::default()));
    let s = seen.clone();
    r.add_output("rec", "", "", move |cfg| {
        let c: RecConfig = cfg.parse()?;
        Ok(Rec {
            fail: c.fail,
            seen: s.clone(),
        })
    });
    r
}

/// One configuration of the `seq` → [tagger] → [tally] → `rec` pipeline.
#[derive(Clone, Copy)]
struct Setup {
    interval: &'static str,
    input: &'static str,
    processor: Option<&'static str>,
    aggs: Option<&'static str>,
    output: &'static str,
}

const BASE: Setup = Setup {
    interval: "0.05",
    input: "label: a",
    processor: None,
    aggs: None,
    output: "{flush_interval: 0.05}",
};

fn write_setup(etc: &Path, s: &Setup) {
    let main = format!(
        "open: [seq]\ninterval: {}\ndelay_sec: 0\nreload_sec: 3600\ncommon_output: [rec]\n\
         output:\n  rec: {}\n",
        s.interval, s.output
    );
    std::fs::create_dir_all(etc).unwrap();
    std::fs::write(etc.join("main.yaml"), main).unwrap();
    std::fs::create_dir_all(etc.join("input")).unwrap();
    std::fs::write(etc.join("input/seq.yaml"), format!("{}\n", s.input)).unwrap();
    for (dir, text) in [("processor", s.processor), ("aggs", s.aggs)] {
        let path = etc.join(dir).join("seq.yaml");
        match text {
            Some(t) => {
                std::fs::create_dir_all(etc.join(dir)).unwrap();
                std::fs::write(&path, format!("{t}\n")).unwrap();
            }
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// What was seen since a moment, for a row's check.
struct Obs {
    gathers: usize,
    delivered: Vec<Metric>,
    batches: Vec<usize>,
    write_gaps: Vec<Duration>,
    attempts: usize,
    output: StatsSnapshot,
    /// The folder that holds `etc/` (disk buffer paths are relative to it).
    root: PathBuf,
    /// Every metric ever delivered, and every gather ever made.
    all_delivered: Vec<Metric>,
    all_gathers: usize,
}

impl Obs {
    fn named(&self, name: &str) -> usize {
        self.delivered.iter().filter(|m| m.name == name).count()
    }
    fn segments(&self, dir: &str) -> usize {
        std::fs::read_dir(self.root.join(dir))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                    .count()
            })
            .unwrap_or(0)
    }
}

async fn observe(seen: &Seen, sup: &Addr<PipelineSupervisor>, root: &Path, since: Instant) -> Obs {
    let status = sup.send(Status).await.unwrap();
    let output = status.find("output", "rec").unwrap().stats.clone();
    let gathers = seen.gathers.lock().unwrap().clone();
    let delivered = seen.delivered.lock().unwrap().clone();
    let batches = seen.batches.lock().unwrap().clone();
    let writes: Vec<Instant> = batches
        .iter()
        .map(|b| b.0)
        .filter(|t| *t >= since)
        .collect();
    Obs {
        gathers: gathers.iter().filter(|t| **t >= since).count(),
        delivered: delivered
            .iter()
            .filter(|(t, _)| *t >= since)
            .map(|(_, m)| m.clone())
            .collect(),
        batches: batches
            .iter()
            .filter(|(t, _)| *t >= since)
            .map(|b| b.1)
            .collect(),
        write_gaps: writes.windows(2).map(|w| w[1] - w[0]).collect(),
        attempts: seen
            .attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|t| **t >= since)
            .count(),
        output,
        root: root.to_path_buf(),
        all_delivered: delivered.into_iter().map(|(_, m)| m).collect(),
        all_gathers: gathers.len(),
    }
}

struct Row {
    /// `kind key: change`.
    name: &'static str,
    before: Setup,
    after: Setup,
    /// Time the `before` config runs before the window.
    warmup_ms: u64,
    /// The new behaviour, seen in what happened since the change.
    check: fn(&Obs) -> bool,
}

fn seq_of(m: &Metric) -> Option<u64> {
    m.field("seq").and_then(|f| f.as_f64()).map(|v| v as u64)
}

fn mean(gaps: &[Duration]) -> Duration {
    gaps.iter().sum::<Duration>() / gaps.len().max(1) as u32
}

const ROWS: &[Row] = &[
    Row {
        name: "input interval: 0.5 -> 0.05",
        before: Setup {
            interval: "0.5",
            ..BASE
        },
        after: BASE,
        warmup_ms: 300,
        check: |o| o.gathers >= 8,
    },
    Row {
        name: "input plugin key label: a -> b",
        before: BASE,
        after: Setup {
            input: "label: b",
            ..BASE
        },
        warmup_ms: 300,
        check: |o| {
            o.delivered
                .iter()
                .any(|m| m.field("label").and_then(|f| f.as_str()) == Some("b"))
        },
    },
    Row {
        name: "processor key value: x -> y",
        before: Setup {
            processor: Some("use_plugin_tagger: {value: x}"),
            ..BASE
        },
        after: Setup {
            processor: Some("use_plugin_tagger: {value: y}"),
            ..BASE
        },
        warmup_ms: 300,
        check: |o| o.delivered.iter().any(|m| m.tag("t") == Some("y")),
    },
    Row {
        name: "aggregator period: 5 -> 0.1",
        before: Setup {
            aggs: Some("use_plugin_tally: {period: 5}"),
            ..BASE
        },
        after: Setup {
            aggs: Some("use_plugin_tally: {period: 0.1}"),
            ..BASE
        },
        warmup_ms: 300,
        check: |o| o.named("tally") >= 4,
    },
    Row {
        name: "aggregator drop_original: false -> true",
        before: Setup {
            aggs: Some("use_plugin_tally: {period: 0.1}"),
            ..BASE
        },
        after: Setup {
            aggs: Some("use_plugin_tally: {period: 0.1, drop_original: true}"),
            ..BASE
        },
        warmup_ms: 300,
        // Raw metrics stop (one batch may be on its way at the change).
        check: |o| o.gathers >= 8 && o.named("seq") <= 2 && o.named("tally") >= 3,
    },
    Row {
        name: "aggregator drop_original: true -> false",
        before: Setup {
            aggs: Some("use_plugin_tally: {period: 0.1, drop_original: true}"),
            ..BASE
        },
        after: Setup {
            aggs: Some("use_plugin_tally: {period: 0.1}"),
            ..BASE
        },
        warmup_ms: 300,
        check: |o| o.named("seq") >= 5,
    },
    Row {
        name: "output batch_size: 10 -> 3",
        before: Setup {
            output: "{flush_interval: 30, batch_size: 10}",
            ..BASE
        },
        after: Setup {
            output: "{flush_interval: 30, batch_size: 3}",
            ..BASE
        },
        warmup_ms: 300,
        check: |o| o.batches.len() >= 3 && o.batches.iter().all(|n| *n <= 3),
    },
    Row {
        name: "output buffer_limit: 1000 -> 5",
        before: Setup {
            output: "{flush_interval: 0.05, batch_size: 2, buffer_limit: 1000, fail: true}",
            ..BASE
        },
        after: Setup {
            output: "{flush_interval: 0.05, batch_size: 2, buffer_limit: 5, fail: true}",
            ..BASE
        },
        warmup_ms: 300,
        check: |o| o.output.buffered <= 5 && o.output.dropped > 0,
    },
    Row {
        name: "output flush_interval: 30 -> 0.05",
        before: Setup {
            output: "{flush_interval: 30, batch_size: 1000}",
            ..BASE
        },
        after: Setup {
            output: "{flush_interval: 0.05, batch_size: 1000}",
            ..BASE
        },
        warmup_ms: 300,
        check: |o| o.batches.len() >= 3,
    },
    Row {
        name: "output flush_jitter: 0 -> 1",
        before: BASE,
        after: Setup {
            output: "{flush_interval: 0.05, flush_jitter: 1}",
            ..BASE
        },
        warmup_ms: 300,
        // Uniform extra delay of up to 1 s: mean gap about 0.55 s.
        check: |o| o.write_gaps.len() >= 4 && mean(&o.write_gaps) >= Duration::from_millis(250),
    },
    Row {
        name: "output retry_max_sec: 30 -> 0.2",
        before: Setup {
            output: "{flush_interval: 0.05, retry_max_sec: 30, fail: true}",
            ..BASE
        },
        after: Setup {
            output: "{flush_interval: 0.05, retry_max_sec: 0.2, fail: true}",
            ..BASE
        },
        // Retries at 0, 0.5, 1.5 s, then 3.5 s: the window sees at most one.
        warmup_ms: 1600,
        check: |o| o.attempts >= 4,
    },
    Row {
        name: "output disk_buffer: none -> bufA",
        before: Setup {
            output: "{flush_interval: 0.05, fail: true}",
            ..BASE
        },
        after: Setup {
            output: "{flush_interval: 0.05, fail: true, disk_buffer: {path: bufA}}",
            ..BASE
        },
        warmup_ms: 300,
        check: |o| o.segments("bufA") > 0,
    },
    Row {
        name: "output disk_buffer: bufA -> bufB",
        before: Setup {
            output: "{flush_interval: 0.05, fail: true, disk_buffer: {path: bufA}}",
            ..BASE
        },
        after: Setup {
            output: "{flush_interval: 0.05, fail: true, disk_buffer: {path: bufB}}",
            ..BASE
        },
        warmup_ms: 300,
        check: |o| o.segments("bufB") > 0 && o.segments("bufA") == 0,
    },
    Row {
        name: "output disk_buffer: bufB -> none, backend back: every metric survives",
        before: Setup {
            output: "{flush_interval: 0.05, fail: true, disk_buffer: {path: bufB}}",
            ..BASE
        },
        after: BASE,
        warmup_ms: 300,
        check: |o| {
            let mut seqs: Vec<u64> = o.all_delivered.iter().filter_map(seq_of).collect();
            seqs.sort_unstable();
            let contiguous = seqs.iter().enumerate().all(|(i, s)| i as u64 == *s);
            contiguous && seqs.len() + 2 >= o.all_gathers && o.segments("bufB") == 0
        },
    },
];

async fn run_row(row: &Row) {
    let seen = Arc::new(Seen::default());
    let (dir, etc) = etc(&[]);
    write_setup(&etc, &row.before);
    let r = registry(&seen);
    let cfg = AgentConfig::load(&etc).unwrap();
    let plan = Plan::new(&cfg, &r).unwrap();
    let registry = Arc::new(r);
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let sup = PipelineSupervisor::new(cfg, plan, registry.clone(), log).start();
    tokio::time::sleep(Duration::from_millis(row.warmup_ms)).await;

    // Before the change the new behaviour is not there.
    let window = Instant::now();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = observe(&seen, &sup, dir.path(), window).await;
    assert!(
        !(row.check)(&before),
        "{}: seen before the change",
        row.name
    );

    write_setup(&etc, &row.after);
    let cfg = AgentConfig::load(&etc).unwrap();
    let plan = Plan::new(&cfg, &registry).unwrap();
    let changed = Instant::now();
    let report = sup.send(ApplyConfig { config: cfg, plan }).await.unwrap();
    assert!(report.failed.is_empty(), "{}: {report:?}", row.name);
    assert!(!report.is_noop(), "{}: nothing changed", row.name);
    loop {
        let after = observe(&seen, &sup, dir.path(), changed).await;
        if (row.check)(&after) {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(10),
            "{}: not in effect; output {:?}, {} gathers, batches {:?}",
            row.name,
            after.output,
            after.gathers,
            after.batches
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = sup
        .send(Shutdown {
            deadline: Duration::from_secs(5),
        })
        .await;
}

#[actix_rt::test]
async fn every_reconfigurable_key_takes_effect_on_a_running_pipeline() {
    for row in ROWS {
        run_row(row).await;
    }
}
