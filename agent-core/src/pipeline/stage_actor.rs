//! Runs one processor or aggregator of a pipeline.
//!
//! A processor error is about the data, so it is logged (at most once a
//! minute) and the batch goes on; a panic drops the plugin, and until it is
//! rebuilt (after a backoff delay) batches pass through unprocessed rather
//! than being lost.
//!
//! A processor that declares it blocks ([`Processor::blocks`], e.g. execd)
//! is called on a worker thread of the stage ([`crate::blocking::Worker`]),
//! one batch at a time; batches arriving meanwhile wait in a bounded queue,
//! so order is kept and the event loop never waits on the processor.
use super::{panic_message, Backoff, Batch, Drain, PluginStats, RateLimit, Reconfigure, Sink};
use crate::blocking::{Worker, WorkerError};
use crate::config::{AggregatorSettings, ConfigError, PluginConfig, StageKind};
use crate::metric::{Metric, Str};
use crate::plugin::{Accumulator, Aggregator, PluginError, Processor};
use crate::registry::{build_error, AggregatorEntry, ProcessorEntry};
use actix::prelude::*;
use slog::{error, info, warn, Logger};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub(crate) enum StageEntry {
    Processor(ProcessorEntry),
    Aggregator(AggregatorEntry),
}

enum Plugin {
    Processor(Box<dyn Processor>),
    /// A processor whose `apply` blocks: it runs on the stage's worker.
    Blocking(OffLoop),
    Aggregator(Box<dyn Aggregator>),
}

/// A blocking processor held by the stage. Dropping one may wait (an execd
/// child is given a grace period to stop), so it is dropped on a
/// short-lived thread of its own, never on the event loop.
struct OffLoop(Option<Box<dyn Processor>>);

impl OffLoop {
    fn take(&mut self) -> Option<Box<dyn Processor>> {
        self.0.take()
    }
}

impl Drop for OffLoop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            // Should the thread not start, the processor is dropped here.
            let _ = std::thread::Builder::new()
                .name("processor-drop".into())
                .spawn(move || drop(p));
        }
    }
}

/// Batches waiting while one is being processed off the loop: beyond this
/// many, the oldest passes on unprocessed (counted as an error), so a stuck
/// processor cannot make memory grow.
const MAX_QUEUED_BATCHES: usize = 64;

/// The queue in front of the stage's plugin and the worker thread of a
/// blocking processor.
#[derive(Default)]
struct StageQueue {
    batches: VecDeque<Vec<Metric>>,
    /// A batch is on the worker thread.
    in_flight: bool,
    worker: Option<Worker<()>>,
    /// The last off-loop call failed (timed out, errored, panicked).
    last_failed: bool,
    idle_waiters: Vec<oneshot::Sender<()>>,
    overflow_log: RateLimit,
}

impl StageQueue {
    fn is_idle(&self) -> bool {
        !self.in_flight && self.batches.is_empty()
    }
}

/// What an off-loop `apply` gives back: the processor (none after a panic),
/// the batch, and the outcome (`Err` holds a panic message).
type OffLoopDone = (
    Option<Box<dyn Processor>>,
    Vec<Metric>,
    Result<Result<(), PluginError>, String>,
);

pub(crate) struct StageActor {
    entry: StageEntry,
    config: PluginConfig,
    input: Str,
    info: Arc<[(Str, Str)]>,
    plugin: Option<Plugin>,
    settings: AggregatorSettings,
    next: Sink,
    stats: Arc<PluginStats>,
    log: Logger,
    backoff: Backoff,
    retry_at: Option<Instant>,
    error_log: RateLimit,
    queue: StageQueue,
}

impl StageActor {
    pub(crate) fn new(
        entry: StageEntry,
        config: PluginConfig,
        info: Arc<[(Str, Str)]>,
        next: Sink,
        stats: Arc<PluginStats>,
        log: Logger,
    ) -> Self {
        StageActor {
            input: config.input.clone(),
            entry,
            config,
            info,
            plugin: None,
            settings: AggregatorSettings::default(),
            next,
            stats,
            log,
            backoff: Backoff::default(),
            retry_at: None,
            error_log: RateLimit::default(),
            queue: StageQueue::default(),
        }
    }

    pub(crate) fn kind(&self) -> StageKind {
        match self.entry {
            StageEntry::Processor(_) => StageKind::Processor,
            StageEntry::Aggregator(_) => StageKind::Aggregator,
        }
    }

    fn build(&self, config: &PluginConfig) -> Result<Plugin, PluginError> {
        let config = &config.clone().with_log(self.log.clone());
        let built = catch_unwind(AssertUnwindSafe(|| match &self.entry {
            StageEntry::Processor(e) => (e.factory)(config).map(|p| {
                if p.blocks() {
                    Plugin::Blocking(OffLoop(Some(p)))
                } else {
                    Plugin::Processor(p)
                }
            }),
            StageEntry::Aggregator(e) => (e.factory)(config).map(Plugin::Aggregator),
        }));
        built.unwrap_or_else(|p| {
            Err(PluginError::msg(format!(
                "panicked while building: {}",
                panic_message(&*p)
            )))
        })
    }

    fn ensure_plugin(&mut self) {
        if self.plugin.is_some() {
            return;
        }
        if matches!(self.retry_at, Some(t) if Instant::now() < t) {
            return;
        }
        let config = self.config.clone();
        match self.build(&config) {
            Ok(p) => {
                if self.retry_at.take().is_some() {
                    PluginStats::add(&self.stats.restarts, 1);
                    info!(self.log, "stage restarted");
                }
                self.plugin = Some(p);
            }
            Err(e) => self.failed(format!("build failed: {e}")),
        }
    }

    fn failed(&mut self, msg: String) {
        PluginStats::add(&self.stats.errors, 1);
        self.stats.set_error(msg.clone());
        self.plugin = None;
        let delay = self.backoff.next_delay();
        self.retry_at = Some(Instant::now() + delay);
        error!(self.log, "stage failed; metrics pass through unprocessed until it is rebuilt";
            "error" => %msg, "backoff_ms" => delay.as_millis() as u64);
    }

    /// Runs a batch through a plugin that does not block (the caller,
    /// [`StageActor::pump`], sends blocking processors' batches off the loop).
    fn process(&mut self, mut batch: Vec<Metric>) -> Vec<Metric> {
        PluginStats::add(&self.stats.metrics_in, batch.len() as u64);
        let outcome = match self.plugin.as_mut() {
            None | Some(Plugin::Blocking(_)) => return batch,
            Some(Plugin::Processor(p)) => catch_unwind(AssertUnwindSafe(|| p.apply(&mut batch))),
            Some(Plugin::Aggregator(a)) => {
                let added = catch_unwind(AssertUnwindSafe(|| {
                    for m in &batch {
                        a.add(m);
                    }
                    Ok(())
                }));
                if added.is_ok() && self.settings.drop_original {
                    batch.clear();
                }
                added
            }
        };
        self.record_outcome(outcome.map_err(|p| panic_message(&*p)));
        batch
    }

    /// Counts and logs the outcome of one call; a panic (`Err`, its
    /// message) drops the plugin until it is rebuilt.
    fn record_outcome(&mut self, outcome: Result<Result<(), PluginError>, String>) {
        match outcome {
            Ok(Ok(())) => {
                PluginStats::add(&self.stats.calls, 1);
                self.backoff.reset();
            }
            Ok(Err(e)) => {
                PluginStats::add(&self.stats.errors, 1);
                self.stats.set_error(e.to_string());
                if let Some(held) = self.error_log.check(Duration::from_secs(60)) {
                    warn!(self.log, "stage error; metrics passed on"; "error" => %e, "suppressed" => held);
                }
            }
            Err(p) => {
                PluginStats::add(&self.stats.panics, 1);
                self.failed(format!("panicked: {p}"));
            }
        }
    }

    fn forward(&mut self, out: Vec<Metric>) {
        PluginStats::add(&self.stats.metrics_out, out.len() as u64);
        self.next.send(out);
    }

    /// Takes a batch into the queue. When the queue is full (a blocking
    /// processor is far behind), the oldest waiting batch passes on
    /// unprocessed.
    fn enqueue(&mut self, batch: Vec<Metric>) {
        self.queue.batches.push_back(batch);
        if self.queue.batches.len() > MAX_QUEUED_BATCHES {
            if let Some(oldest) = self.queue.batches.pop_front() {
                PluginStats::add(&self.stats.metrics_in, oldest.len() as u64);
                PluginStats::add(&self.stats.errors, 1);
                let msg = format!(
                    "{MAX_QUEUED_BATCHES} batches wait for the processor: the oldest passed on unprocessed"
                );
                if let Some(held) = self.queue.overflow_log.check(Duration::from_secs(60)) {
                    warn!(self.log, "stage behind"; "error" => %msg, "suppressed" => held);
                }
                self.stats.set_error(msg);
                self.forward(oldest);
            }
        }
    }

    /// Runs queued batches in order: on the loop while the plugin does not
    /// block, else one at a time on the stage's worker thread.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while !self.queue.in_flight {
            let Some(batch) = self.queue.batches.pop_front() else {
                break;
            };
            self.ensure_plugin();
            match self.plugin.take() {
                Some(Plugin::Blocking(mut p)) => match p.take() {
                    Some(p) => self.start_off_loop(p, batch, ctx),
                    None => self.forward(batch),
                },
                other => {
                    self.plugin = other;
                    let out = self.process(batch);
                    self.forward(out);
                }
            }
        }
        if self.queue.is_idle() {
            for w in self.queue.idle_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    /// Sends one batch and the processor to the worker thread; the answer
    /// comes back to [`StageActor::off_loop_done`].
    fn start_off_loop(
        &mut self,
        processor: Box<dyn Processor>,
        batch: Vec<Metric>,
        ctx: &mut Context<Self>,
    ) {
        PluginStats::add(&self.stats.metrics_in, batch.len() as u64);
        let worker = match self.queue.worker.take() {
            Some(w) => w,
            None => match Worker::spawn(&format!("proc-{}", self.config.instance), 1, ()) {
                Ok(w) => w,
                Err(e) => {
                    self.plugin = Some(Plugin::Blocking(OffLoop(Some(processor))));
                    self.failed(e.to_string());
                    self.forward(batch);
                    return;
                }
            },
        };
        let call = move |_: &mut ()| -> OffLoopDone {
            let (mut processor, mut batch) = (processor, batch);
            let outcome = catch_unwind(AssertUnwindSafe(|| processor.apply(&mut batch)));
            match outcome {
                Ok(r) => (Some(processor), batch, Ok(r)),
                // Dropped here, on the worker: a broken processor may take
                // time to stop.
                Err(p) => (None, batch, Err(panic_message(&*p))),
            }
        };
        let submitted = worker.submit(call);
        self.queue.worker = Some(worker);
        match submitted {
            Ok(reply) => {
                self.queue.in_flight = true;
                ctx.spawn(
                    reply
                        .wait_forever()
                        .into_actor(self)
                        .map(|done, act, ctx| act.off_loop_done(done, ctx)),
                );
            }
            Err(e) => {
                // The worker is gone with the batch (it cannot be busy: one
                // call at a time); a new one is started for the next batch.
                self.queue.worker = None;
                PluginStats::add(&self.stats.dropped, 1);
                self.failed(e.to_string());
            }
        }
    }

    fn off_loop_done(&mut self, done: Result<OffLoopDone, WorkerError>, ctx: &mut Context<Self>) {
        self.queue.in_flight = false;
        match done {
            Ok((processor, batch, outcome)) => {
                self.queue.last_failed = !matches!(outcome, Ok(Ok(())));
                // A reconfigure meanwhile installed another processor: the
                // one that comes back is dropped (off the loop), and its
                // panic does not fail the new one.
                let back = processor.map(|p| Plugin::Blocking(OffLoop(Some(p))));
                match (self.plugin.is_some(), outcome) {
                    (true, Err(panic)) => {
                        PluginStats::add(&self.stats.panics, 1);
                        self.stats.set_error(format!("panicked: {panic}"));
                    }
                    (replaced, outcome) => {
                        if !replaced {
                            self.plugin = back;
                        }
                        self.record_outcome(outcome);
                    }
                }
                self.forward(batch);
            }
            Err(e) => {
                self.queue.last_failed = true;
                self.queue.worker = None;
                PluginStats::add(&self.stats.dropped, 1);
                self.failed(e.to_string());
            }
        }
        self.pump(ctx);
    }

    /// Shutdown or reconfigure drain while a blocking processor is failing:
    /// queued batches would each wait out its timeout, so they pass on
    /// unprocessed now; only the batch in flight is waited for.
    fn pass_queue_unprocessed(&mut self) {
        let n = self.queue.batches.len();
        if n == 0 {
            return;
        }
        warn!(self.log, "drain: the processor is failing; queued batches passed on unprocessed";
            "batches" => n);
        while let Some(b) = self.queue.batches.pop_front() {
            PluginStats::add(&self.stats.metrics_in, b.len() as u64);
            self.forward(b);
        }
    }

    /// Aggregators: emit the period's summaries and start a new period.
    fn push_aggregates(&mut self) {
        let Some(Plugin::Aggregator(a)) = self.plugin.as_mut() else {
            return;
        };
        let mut acc = Accumulator::new(self.input.clone(), self.info.clone());
        let pushed = catch_unwind(AssertUnwindSafe(|| {
            a.push(&mut acc);
            a.reset();
        }));
        match pushed {
            Ok(()) => {
                let out = acc.take();
                PluginStats::add(&self.stats.metrics_out, out.len() as u64);
                self.next.send(out);
            }
            Err(p) => {
                PluginStats::add(&self.stats.panics, 1);
                self.failed(format!("push panicked: {}", panic_message(&*p)));
            }
        }
    }
}

impl Actor for StageActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let StageEntry::Aggregator(_) = self.entry {
            match self.config.parse::<AggregatorSettings>() {
                Ok(s) => self.settings = s,
                Err(e) => {
                    error!(self.log, "bad aggregator settings, using defaults"; "error" => %e)
                }
            }
            let period = self
                .settings
                .period
                .as_duration()
                .max(Duration::from_millis(1));
            ctx.run_interval(period, |act, _| act.push_aggregates());
        }
        self.ensure_plugin();
    }
}

impl Handler<Batch> for StageActor {
    type Result = ();

    fn handle(&mut self, msg: Batch, ctx: &mut Context<Self>) {
        self.enqueue(msg.0);
        self.pump(ctx);
    }
}

impl Handler<Drain> for StageActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        self.push_aggregates();
        let next = self.next.clone();
        if self.queue.is_idle() {
            return Box::pin(next.drain().into_actor(self));
        }
        // Batches still with a blocking processor go downstream first.
        if self.queue.last_failed {
            self.pass_queue_unprocessed();
        }
        let (tx, rx) = oneshot::channel();
        self.queue.idle_waiters.push(tx);
        Box::pin(
            async move {
                let _ = rx.await;
                next.drain().await
            }
            .into_actor(self),
        )
    }
}

impl Handler<Reconfigure> for StageActor {
    type Result = Result<(), ConfigError>;

    fn handle(&mut self, msg: Reconfigure, _: &mut Context<Self>) -> Self::Result {
        let plugin = self.build(&msg.0).map_err(|e| build_error(&msg.0, e))?;
        // Aggregates of the old config are emitted, not lost.
        self.push_aggregates();
        self.plugin = Some(plugin);
        self.config = msg.0;
        self.retry_at = None;
        self.backoff.reset();
        Ok(())
    }
}
