//! Runs one output: a bounded buffer in front of the plugin, batches of
//! `batch_size`, a flush every `flush_interval` (plus jitter), one write in
//! flight at a time, retry with backoff on failure (the batch goes back to
//! the front of the buffer, so order is kept), and a final flush with a
//! deadline on shutdown. When the buffer is full the oldest metrics are
//! dropped and counted, never silently.
//!
//! With `disk_buffer` configured, delivered metrics are appended to a
//! segment log on disk ([`super::disk_buffer`]) instead of the memory
//! buffer; batches are read from the log and acknowledged (deleted) only
//! after a successful write, and what an earlier run left is replayed first.
//! The memory buffer then only holds metrics the log could not take (a disk
//! error), so they are still delivered.
use super::disk_buffer::{DiskBuffer, ReadBatch};
use super::{panic_message, Backoff, Deliver, PluginStats, RateLimit, Reconfigure};
use crate::config::{ConfigError, OutputSettings, PluginConfig};
use crate::metric::{now_ns, Metric};
use crate::plugin::{DynOutput, PluginError};
use crate::registry::{build_error, OutputEntry};
use actix::prelude::*;
use futures::FutureExt;
use slog::{error, info, warn, Logger};
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// No single write may take longer than this, whatever the plugin does.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) struct OutputActor {
    entry: OutputEntry,
    config: PluginConfig,
    settings: OutputSettings,
    plugin: Option<Box<dyn DynOutput>>,
    connected: bool,
    buffer: VecDeque<Metric>,
    in_flight: bool,
    closing: bool,
    backoff: Backoff,
    retry_at: Option<Instant>,
    stats: Arc<PluginStats>,
    log: Logger,
    drop_log: RateLimit,
    idle_waiters: Vec<oneshot::Sender<()>>,
    flush_timer: Option<SpawnHandle>,
    disk: Option<DiskBuffer>,
    /// Log positions of the batch in flight when it came from the disk.
    disk_in_flight: Option<ReadBatch>,
    disk_dropped_seen: u64,
}

type WriteResult = Result<
    Result<Result<(), PluginError>, tokio::time::error::Elapsed>,
    Box<dyn std::any::Any + Send>,
>;

impl OutputActor {
    pub(crate) fn new(
        entry: OutputEntry,
        config: PluginConfig,
        settings: OutputSettings,
        stats: Arc<PluginStats>,
        log: Logger,
    ) -> Self {
        let retry_cap = settings
            .retry_max_sec
            .as_duration()
            .max(Duration::from_millis(100));
        OutputActor {
            entry,
            config,
            settings,
            plugin: None,
            connected: false,
            buffer: VecDeque::new(),
            in_flight: false,
            closing: false,
            backoff: Backoff::new(Duration::from_millis(500), retry_cap),
            retry_at: None,
            stats,
            log,
            drop_log: RateLimit::default(),
            idle_waiters: Vec::new(),
            flush_timer: None,
            disk: None,
            disk_in_flight: None,
            disk_dropped_seen: 0,
        }
    }

    fn open_disk_buffer(&mut self) {
        let Some(settings) = self.settings.disk_buffer.clone() else {
            return;
        };
        let max = settings.max_bytes().unwrap_or(256 << 20);
        match DiskBuffer::open(&settings.path, max) {
            Ok(disk) => {
                if disk.pending() > 0 {
                    info!(self.log, "disk buffer: replaying undelivered metrics";
                        "pending" => disk.pending(), "path" => %settings.path.display());
                }
                self.disk = Some(disk);
                self.log_disk_reports();
            }
            Err(e) => {
                PluginStats::add(&self.stats.errors, 1);
                self.stats.set_error(e.to_string());
                error!(self.log, "disk buffer cannot be opened; buffering in memory only"; "error" => %e);
            }
        }
    }

    fn log_disk_reports(&mut self) {
        let Some(disk) = self.disk.as_mut() else {
            return;
        };
        for r in disk.take_reports() {
            error!(self.log, "disk buffer problem"; "detail" => r);
        }
        let newly = disk.dropped() - self.disk_dropped_seen;
        self.disk_dropped_seen = disk.dropped();
        PluginStats::add(&self.stats.dropped, newly);
    }

    /// Metrics waiting: on disk and in memory.
    fn pending(&self) -> usize {
        self.buffer.len() + self.disk.as_ref().map_or(0, |d| d.pending() as usize)
    }

    fn build(&self, config: &PluginConfig) -> Result<Box<dyn DynOutput>, PluginError> {
        let config = config.clone().with_log(self.log.clone());
        match std::panic::catch_unwind(AssertUnwindSafe(|| (self.entry.factory)(&config))) {
            Ok(r) => r,
            Err(p) => Err(PluginError::msg(format!(
                "panicked while building: {}",
                panic_message(&*p)
            ))),
        }
    }

    fn start_flush_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.flush_timer.take() {
            ctx.cancel_future(h);
        }
        let every = self.settings.flush_every();
        let jitter = self.settings.flush_jitter.as_secs_f64();
        let ticks = futures::stream::unfold((), move |()| async move {
            let extra = if jitter > 0.0 {
                // Bounded by the planner (at most an hour): cannot fail.
                Duration::try_from_secs_f64(rand::random::<f64>() * jitter).unwrap_or_default()
            } else {
                Duration::ZERO
            };
            tokio::time::sleep(every + extra).await;
            Some((FlushTick, ()))
        });
        self.flush_timer = Some(ctx.add_stream(ticks));
    }

    fn push_disk(&mut self, metrics: &[Metric]) {
        let result = match self.disk.as_mut() {
            Some(d) => d.append(metrics),
            None => Ok(()),
        };
        match result {
            Ok(()) => PluginStats::add(&self.stats.metrics_in, metrics.len() as u64),
            Err(e) => {
                if let Some(held) = self.drop_log.check(Duration::from_secs(60)) {
                    error!(self.log, "disk buffer append failed; keeping metrics in memory"; "error" => %e,
                        "similar_messages_suppressed" => held);
                }
                self.push(metrics.iter().cloned());
            }
        }
        self.log_disk_reports();
        self.stats.buffered.store(self.pending() as u64, Relaxed);
    }

    fn push(&mut self, metrics: impl IntoIterator<Item = Metric>) {
        let before = self.buffer.len();
        self.buffer.extend(metrics);
        PluginStats::add(&self.stats.metrics_in, (self.buffer.len() - before) as u64);
        let limit = self.settings.buffer_limit;
        if self.buffer.len() > limit {
            let excess = self.buffer.len() - limit;
            self.buffer.drain(..excess);
            PluginStats::add(&self.stats.dropped, excess as u64);
            if let Some(held) = self.drop_log.check(Duration::from_secs(60)) {
                warn!(self.log, "output buffer full: oldest metrics dropped";
                    "dropped" => excess, "buffer_limit" => limit, "similar_messages_suppressed" => held);
            }
        }
        self.stats.buffered.store(self.pending() as u64, Relaxed);
    }

    /// Starts a write of up to `batch_size` metrics when allowed.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight || self.pending() == 0 || self.closing {
            return;
        }
        if matches!(self.retry_at, Some(t) if Instant::now() < t) {
            return;
        }
        if self.plugin.is_none() {
            let config = self.config.clone();
            match self.build(&config) {
                Ok(p) => {
                    PluginStats::add(&self.stats.restarts, 1);
                    info!(self.log, "output restarted");
                    self.plugin = Some(p);
                    self.connected = false;
                }
                Err(e) => {
                    self.write_failed(format!("rebuild failed: {e}"));
                    return;
                }
            }
        }
        let Some(plugin) = self.plugin.take() else {
            return;
        };
        let mut batch: Vec<Metric> = Vec::new();
        if let Some(disk) = self.disk.as_mut() {
            if disk.pending() > 0 {
                let mut read = disk.read_batch(self.settings.batch_size);
                batch = std::mem::take(&mut read.metrics);
                // A batch of only corrupt records is still consumed.
                if batch.is_empty() {
                    disk.ack(&read);
                } else {
                    self.disk_in_flight = Some(read);
                }
            }
        }
        self.log_disk_reports();
        if batch.is_empty() {
            let n = self.settings.batch_size.min(self.buffer.len());
            batch = self.buffer.drain(..n).collect();
        }
        if batch.is_empty() {
            self.plugin = Some(plugin);
            return;
        }
        self.in_flight = true;
        let connected = self.connected;
        let started = Instant::now();
        ctx.spawn(write_batch(plugin, batch, connected).into_actor(self).map(
            move |(plugin, batch, result), act, ctx| {
                act.in_flight = false;
                act.stats
                    .last_duration_us
                    .store(started.elapsed().as_micros() as u64, Relaxed);
                act.after_write(plugin, batch, result);
                if !act.closing && act.pending() >= act.settings.batch_size {
                    act.flush(ctx);
                }
                if !act.in_flight {
                    for w in act.idle_waiters.drain(..) {
                        let _ = w.send(());
                    }
                }
            },
        ));
    }

    fn after_write(&mut self, plugin: Box<dyn DynOutput>, batch: Vec<Metric>, result: WriteResult) {
        let failure = match result {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(e))) => Some(format!("write failed: {e}")),
            Ok(Err(_)) => Some(format!(
                "write timed out after {}s",
                WRITE_TIMEOUT.as_secs()
            )),
            Err(p) => {
                PluginStats::add(&self.stats.panics, 1);
                Some(format!("write panicked: {}", panic_message(&*p)))
            }
        };
        match failure {
            None => {
                PluginStats::add(&self.stats.calls, 1);
                PluginStats::add(&self.stats.metrics_out, batch.len() as u64);
                self.stats.last_ok_ns.store(now_ns(), Relaxed);
                self.connected = true;
                // A reconfigure during the write already installed a new plugin.
                if self.plugin.is_none() {
                    self.plugin = Some(plugin);
                }
                self.backoff.reset();
                self.retry_at = None;
                if let (Some(disk), Some(read)) = (self.disk.as_mut(), self.disk_in_flight.take()) {
                    disk.ack(&read);
                }
            }
            Some(msg) => {
                if let (Some(disk), Some(read)) = (self.disk.as_mut(), self.disk_in_flight.take()) {
                    // Still in the log: read again on the next try.
                    disk.rewind(&read);
                } else {
                    // Back to the front, in order; the buffer limit still holds.
                    for m in batch.into_iter().rev() {
                        self.buffer.push_front(m);
                    }
                }
                let panicked = msg.starts_with("write panicked");
                if !panicked && self.plugin.is_none() {
                    self.plugin = Some(plugin);
                }
                self.connected = false;
                self.write_failed(msg);
                let limit = self.settings.buffer_limit;
                if self.buffer.len() > limit {
                    let excess = self.buffer.len() - limit;
                    self.buffer.drain(..excess);
                    PluginStats::add(&self.stats.dropped, excess as u64);
                }
            }
        }
        self.log_disk_reports();
        self.stats.buffered.store(self.pending() as u64, Relaxed);
    }

    fn write_failed(&mut self, msg: String) {
        PluginStats::add(&self.stats.errors, 1);
        self.stats.set_error(msg.clone());
        let delay = self.backoff.next_delay();
        self.retry_at = Some(Instant::now() + delay);
        error!(self.log, "output write failed; will retry"; "error" => %msg,
            "retry_in_ms" => delay.as_millis() as u64, "buffered" => self.pending());
    }
}

async fn write_batch(
    mut plugin: Box<dyn DynOutput>,
    batch: Vec<Metric>,
    connected: bool,
) -> (Box<dyn DynOutput>, Vec<Metric>, WriteResult) {
    let result = AssertUnwindSafe(tokio::time::timeout(WRITE_TIMEOUT, async {
        if !connected {
            plugin.connect_boxed().await?;
        }
        plugin.write_boxed(&batch).await
    }))
    .catch_unwind()
    .await;
    (plugin, batch, result)
}

impl Actor for OutputActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let config = self.config.clone();
        match self.build(&config) {
            Ok(p) => self.plugin = Some(p),
            Err(e) => self.write_failed(format!("build failed: {e}")),
        }
        self.open_disk_buffer();
        self.start_flush_timer(ctx);
        // Replay what an earlier run left as soon as the actor runs.
        if self.pending() > 0 {
            ctx.run_later(Duration::ZERO, |act, ctx| act.flush(ctx));
        }
    }
}

struct FlushTick;

impl StreamHandler<FlushTick> for OutputActor {
    fn handle(&mut self, _: FlushTick, ctx: &mut Context<Self>) {
        self.flush(ctx);
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<Deliver> for OutputActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        if self.disk.is_some() {
            self.push_disk(&msg.0);
        } else {
            match Arc::try_unwrap(msg.0) {
                Ok(v) => self.push(v),
                Err(shared) => self.push(shared.iter().cloned()),
            }
        }
        if self.pending() >= self.settings.batch_size {
            self.flush(ctx);
        }
    }
}

/// Flush everything within `deadline`, then close. Replies with the number
/// of metrics that could not be delivered.
#[derive(Message)]
#[rtype(result = "usize")]
pub(crate) struct FlushAndClose {
    pub deadline: Instant,
}

impl Handler<FlushAndClose> for OutputActor {
    type Result = ResponseActFuture<Self, usize>;

    fn handle(&mut self, msg: FlushAndClose, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(h) = self.flush_timer.take() {
            ctx.cancel_future(h);
        }
        self.closing = true;
        let (tx, rx) = oneshot::channel();
        if self.in_flight {
            self.idle_waiters.push(tx);
        } else {
            let _ = tx.send(());
        }
        let deadline = msg.deadline;
        let wait = async move {
            let _ = tokio::time::timeout_at(deadline.into(), rx).await;
        };
        Box::pin(wait.into_actor(self).then(move |_, act, _| {
            let plugin = act.plugin.take();
            let buffer = std::mem::take(&mut act.buffer);
            let batch_size = act.settings.batch_size;
            let connected = act.connected;
            let log = act.log.clone();
            let stats = act.stats.clone();
            let mut disk = act.disk.take();
            // A write still in flight past the deadline: its batch stays in the log.
            if let (Some(d), Some(read)) = (disk.as_mut(), act.disk_in_flight.take()) {
                d.rewind(&read);
            }
            final_flush(
                plugin, buffer, disk, batch_size, connected, deadline, log, stats,
            )
            .into_actor(act)
        }))
    }
}

/// Writes the whole buffer (the disk log first, then memory) in batches,
/// retrying failed batches with a short backoff until the deadline. What is
/// left goes to the disk log when there is one. Returns how many metrics were
/// not delivered (those kept on disk included: they are sent on the next start).
#[allow(clippy::too_many_arguments)]
async fn final_flush(
    plugin: Option<Box<dyn DynOutput>>,
    mut buffer: VecDeque<Metric>,
    mut disk: Option<DiskBuffer>,
    batch_size: usize,
    mut connected: bool,
    deadline: Instant,
    log: Logger,
    stats: Arc<PluginStats>,
) -> usize {
    let pending = |buffer: &VecDeque<Metric>, disk: &Option<DiskBuffer>| {
        buffer.len() + disk.as_ref().map_or(0, |d| d.pending() as usize)
    };
    let Some(mut plugin) = plugin else {
        let left = park_on_disk(buffer, disk.as_mut(), &log);
        if left > 0 {
            error!(log, "output has no working plugin at shutdown"; "undelivered" => left);
        }
        return left;
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    while pending(&buffer, &disk) > 0 && Instant::now() < deadline {
        let mut from_disk: Option<ReadBatch> = None;
        let mut batch: Vec<Metric> = Vec::new();
        if let Some(d) = disk.as_mut() {
            if d.pending() > 0 {
                let mut read = d.read_batch(batch_size);
                batch = std::mem::take(&mut read.metrics);
                if batch.is_empty() {
                    d.ack(&read);
                    continue;
                }
                from_disk = Some(read);
            }
        }
        if from_disk.is_none() {
            let n = batch_size.min(buffer.len());
            batch = buffer.drain(..n).collect();
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let result = AssertUnwindSafe(tokio::time::timeout(remaining, async {
            if !connected {
                plugin.connect_boxed().await?;
            }
            plugin.write_boxed(&batch).await
        }))
        .catch_unwind()
        .await;
        match result {
            Ok(Ok(Ok(()))) => {
                connected = true;
                PluginStats::add(&stats.calls, 1);
                PluginStats::add(&stats.metrics_out, batch.len() as u64);
                backoff.reset();
                if let (Some(d), Some(read)) = (disk.as_mut(), from_disk) {
                    d.ack(&read);
                }
            }
            other => {
                if let (Some(d), Some(read)) = (disk.as_mut(), from_disk) {
                    d.rewind(&read);
                } else {
                    for m in batch.into_iter().rev() {
                        buffer.push_front(m);
                    }
                }
                connected = false;
                if other.is_err() {
                    break;
                }
                let wait = backoff
                    .next_delay()
                    .min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(wait).await;
            }
        }
    }
    let left = park_on_disk(buffer, disk.as_mut(), &log);
    stats.buffered.store(left as u64, Relaxed);
    if let Err(e) = AssertUnwindSafe(tokio::time::timeout(
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100)),
        plugin.close_boxed(),
    ))
    .catch_unwind()
    .await
    .unwrap_or_else(|_| Ok(Err(PluginError::msg("close panicked"))))
    .unwrap_or_else(|_| Err(PluginError::msg("close timed out")))
    {
        warn!(log, "output close failed"; "error" => %e);
    }
    if left > 0 {
        match disk.as_ref() {
            Some(d) if d.pending() as usize == left => {
                warn!(log, "metrics not delivered by the shutdown deadline kept in the disk buffer";
                    "kept_on_disk" => left)
            }
            _ => {
                error!(log, "metrics not delivered by the shutdown deadline"; "undelivered" => left)
            }
        }
    }
    left
}

/// Moves what is left in memory to the disk log (when there is one);
/// returns how many metrics are undelivered in total.
fn park_on_disk(buffer: VecDeque<Metric>, disk: Option<&mut DiskBuffer>, log: &Logger) -> usize {
    let Some(d) = disk else {
        return buffer.len();
    };
    if !buffer.is_empty() {
        let rest: Vec<Metric> = buffer.into_iter().collect();
        if let Err(e) = d.append(&rest) {
            error!(log, "metrics could not be kept in the disk buffer"; "error" => %e, "lost" => rest.len());
            return d.pending() as usize + rest.len();
        }
    }
    d.close();
    for r in d.take_reports() {
        error!(log, "disk buffer problem"; "detail" => r);
    }
    d.pending() as usize
}

impl Handler<Reconfigure> for OutputActor {
    type Result = Result<(), ConfigError>;

    fn handle(&mut self, msg: Reconfigure, ctx: &mut Context<Self>) -> Self::Result {
        let settings: OutputSettings = msg.0.parse()?;
        let plugin = self.build(&msg.0).map_err(|e| build_error(&msg.0, e))?;
        // A write in flight returns the old plugin, which is then dropped.
        self.plugin = Some(plugin);
        self.connected = false;
        let timer_changed = settings.flush_every() != self.settings.flush_every()
            || settings.flush_jitter != self.settings.flush_jitter;
        self.settings = settings;
        self.config = msg.0;
        if timer_changed {
            self.start_flush_timer(ctx);
        }
        Ok(())
    }
}
