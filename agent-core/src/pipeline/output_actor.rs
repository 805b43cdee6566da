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
//!
//! Everything accepted and not yet delivered (batches waiting in the
//! output's slot, memory buffer, disk log, the batch in flight) outlives
//! the actor: the slot and [`OutputBuffers`] are owned by the supervisor and
//! handed to each incarnation of the actor: a batch leaves it only when the
//! backend acknowledged the write (begin/commit/rollback), so an actor that
//! dies mid-write loses nothing; its successor sends the batch again.
use super::disk_buffer::ReadBatch;
use super::disk_worker::DiskWorker;
use super::{
    panic_message, Backoff, DeathGuard, OutputSlot, PluginStats, RateLimit, Reconfigure, Wake,
};
use crate::config::{ConfigError, DiskBufferSettings, OutputSettings, PluginConfig};
use crate::metric::{now_ns, Metric};
use crate::plugin::{DynOutput, PluginError};
use crate::registry::{build_error, OutputEntry};
use actix::prelude::*;
use futures::FutureExt;
use slog::{error, info, warn, Logger};
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// No single write may take longer than this, whatever the plugin does.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// The batch being written: it stays owned by the buffers until the write
/// is acknowledged.
struct InFlight {
    batch: Arc<Vec<Metric>>,
    /// Log positions when the batch came from the disk log.
    from_disk: Option<ReadBatch>,
}

/// What an output accepted and has not delivered. Outlives the actor.
#[derive(Default)]
pub(crate) struct OutputBuffers {
    memory: VecDeque<Metric>,
    /// The disk log, on its own thread.
    disk: Option<DiskWorker>,
    /// The settings the open disk log was opened with.
    disk_settings: Option<DiskBufferSettings>,
    in_flight: Option<InFlight>,
    disk_dropped_seen: u64,
}

pub(crate) type SharedBuffers = Arc<Mutex<OutputBuffers>>;

impl OutputBuffers {
    pub(crate) fn shared() -> SharedBuffers {
        Arc::new(Mutex::new(OutputBuffers::default()))
    }

    /// Metrics waiting to be written: in memory, and in the disk log
    /// (which counts its records until they are acknowledged). A batch in
    /// flight from memory is not counted (as `buffered` always showed).
    fn pending(&self) -> usize {
        self.memory.len() + self.disk.as_ref().map_or(0, |d| d.pending() as usize)
    }

    /// Takes up to `max` metrics from memory to write; they stay here (in
    /// flight) until [`commit`](Self::commit) or [`rollback`](Self::rollback).
    fn begin_memory(&mut self, max: usize) -> Option<Arc<Vec<Metric>>> {
        if self.in_flight.is_some() {
            return None;
        }
        let n = max.min(self.memory.len());
        if n == 0 {
            return None;
        }
        let batch = Arc::new(self.memory.drain(..n).collect::<Vec<_>>());
        self.in_flight = Some(InFlight {
            batch: batch.clone(),
            from_disk: None,
        });
        Some(batch)
    }

    /// A read from the disk log arrived: it becomes the batch in flight.
    fn begin_disk(&mut self, mut read: ReadBatch) -> Option<Arc<Vec<Metric>>> {
        let metrics = std::mem::take(&mut read.metrics);
        let disk = self.disk.as_ref()?;
        if self.in_flight.is_some() {
            disk.rewind(read);
            return None;
        }
        if metrics.is_empty() {
            // A batch of only corrupt records is still consumed.
            if !read.counts_empty() {
                disk.ack(read);
            }
            return None;
        }
        let batch = Arc::new(metrics);
        self.in_flight = Some(InFlight {
            batch: batch.clone(),
            from_disk: Some(read),
        });
        Some(batch)
    }

    /// Asks the disk log for a batch when it has metrics.
    fn read_disk(&self, max: usize) -> Option<oneshot::Receiver<ReadBatch>> {
        self.disk
            .as_ref()
            .filter(|d| d.pending() > 0)
            .map(|d| d.read(max))
    }

    /// The backend took the batch in flight.
    fn commit(&mut self) {
        if let Some(InFlight {
            from_disk: Some(read),
            ..
        }) = self.in_flight.take()
        {
            if let Some(disk) = self.disk.as_ref() {
                disk.ack(read);
            }
        }
    }

    /// The batch in flight was not delivered: back to the front, in order.
    fn rollback(&mut self) {
        let Some(f) = self.in_flight.take() else {
            return;
        };
        match (f.from_disk, self.disk.as_ref()) {
            (Some(read), Some(disk)) => disk.rewind(read),
            _ => {
                let batch = Arc::try_unwrap(f.batch).unwrap_or_else(|shared| (*shared).clone());
                for m in batch.into_iter().rev() {
                    self.memory.push_front(m);
                }
            }
        }
    }

    /// Drops the oldest metrics in memory above `limit`; returns how many.
    fn enforce_limit(&mut self, limit: usize) -> usize {
        let excess = self.memory.len().saturating_sub(limit);
        self.memory.drain(..excess);
        excess
    }

    /// Opens, moves or closes the disk log to match `wanted`. Metrics in
    /// memory move into a new log; what an old log holds comes back through
    /// the returned receiver (its thread reads it out), for the new log or
    /// memory. Call only with nothing in flight.
    fn set_disk(
        &mut self,
        wanted: Option<&DiskBufferSettings>,
    ) -> Result<Option<oneshot::Receiver<Vec<Metric>>>, String> {
        if self.disk_settings.as_ref() == wanted && (wanted.is_none() || self.disk.is_some()) {
            return Ok(None);
        }
        self.rollback();
        if let (Some(w), Some(old), Some(disk)) =
            (wanted, self.disk_settings.as_ref(), self.disk.as_ref())
        {
            if w.path == old.path {
                // Same log, new size limit.
                disk.set_max_bytes(w.max_bytes().unwrap_or(256 << 20));
                self.disk_settings = Some(w.clone());
                return Ok(None);
            }
        }
        let new = match wanted {
            // Opening scans the folder: once per start or reconfigure.
            Some(w) => match DiskWorker::open(&w.path, w.max_bytes().unwrap_or(256 << 20)) {
                Ok(d) => Some(d),
                Err(e) => {
                    if self.disk.is_none() {
                        self.disk_settings = None;
                    }
                    // Keep the log we had.
                    return Err(e.to_string());
                }
            },
            None => None,
        };
        let old = std::mem::replace(&mut self.disk, new);
        self.disk_settings = wanted.cloned();
        self.disk_dropped_seen = 0;
        if let Some(to) = self.disk.as_ref() {
            if !self.memory.is_empty() {
                to.append(Arc::new(self.memory.drain(..).collect()));
            }
        }
        // The old thread reads its log out, closes it and ends.
        Ok(old.map(|from| from.empty()))
    }

    /// Metrics read out of an old log after a `disk_buffer` change: into
    /// the log now in use, or to the front of memory.
    fn take_migrated(&mut self, moved: Vec<Metric>) {
        if moved.is_empty() {
            return;
        }
        match self.disk.as_ref() {
            Some(to) => to.append(Arc::new(moved)),
            None => {
                for m in moved.into_iter().rev() {
                    self.memory.push_front(m);
                }
            }
        }
    }
}

pub(crate) struct OutputActor {
    entry: OutputEntry,
    config: PluginConfig,
    settings: OutputSettings,
    plugin: Option<Box<dyn DynOutput>>,
    connected: bool,
    buffers: SharedBuffers,
    /// A write of this incarnation is running.
    writing: bool,
    closing: bool,
    backoff: Backoff,
    retry_at: Option<Instant>,
    stats: Arc<PluginStats>,
    log: Logger,
    drop_log: RateLimit,
    idle_waiters: Vec<oneshot::Sender<()>>,
    flush_timer: Option<SpawnHandle>,
    /// A `disk_buffer` change waiting for the write in flight to end.
    disk_change: Option<Option<DiskBufferSettings>>,
    /// Where delivered batches wait until this actor takes them into its
    /// buffers; shared with the senders and the next incarnation.
    slot: Arc<OutputSlot>,
    pub(crate) guard: DeathGuard,
}

type WriteResult = Result<
    Result<Result<(), PluginError>, tokio::time::error::Elapsed>,
    Box<dyn std::any::Any + Send>,
>;

fn retry_backoff(settings: &OutputSettings) -> Backoff {
    // The planner keeps retry_max_sec within (0, 1 day].
    let cap = settings
        .retry_max_sec
        .as_duration()
        .max(Duration::from_millis(100));
    Backoff::new(Duration::from_millis(500).min(cap), cap)
}

impl OutputActor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        entry: OutputEntry,
        config: PluginConfig,
        settings: OutputSettings,
        buffers: SharedBuffers,
        stats: Arc<PluginStats>,
        log: Logger,
        slot: Arc<OutputSlot>,
        guard: DeathGuard,
    ) -> Self {
        OutputActor {
            entry,
            config,
            backoff: retry_backoff(&settings),
            settings,
            plugin: None,
            connected: false,
            buffers,
            writing: false,
            closing: false,
            retry_at: None,
            stats,
            log,
            drop_log: RateLimit::default(),
            idle_waiters: Vec::new(),
            flush_timer: None,
            disk_change: None,
            slot,
            guard,
        }
    }

    fn bufs(&self) -> MutexGuard<'_, OutputBuffers> {
        // The buffers hold no invariant a panic elsewhere could break.
        self.buffers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn apply_disk_settings(&mut self, ctx: &mut Context<Self>) {
        let wanted = self.settings.disk_buffer.clone();
        let result = self.bufs().set_disk(wanted.as_ref());
        match result {
            Ok(migrating) => {
                let pending = self.bufs().disk.as_ref().map_or(0, |d| d.pending());
                if let (Some(w), true) = (wanted.as_ref(), pending > 0) {
                    info!(self.log, "disk buffer: undelivered metrics to send";
                        "pending" => pending, "path" => %w.path.display());
                }
                if let Some(rx) = migrating {
                    let buffers = self.buffers.clone();
                    ctx.spawn(
                        async move {
                            if let Ok(moved) = rx.await {
                                lock(&buffers).take_migrated(moved);
                            }
                        }
                        .into_actor(self)
                        .map(|(), act, ctx| {
                            act.update_buffered();
                            act.flush(ctx);
                        }),
                    );
                }
            }
            Err(e) => {
                PluginStats::add(&self.stats.errors, 1);
                self.stats.set_error(e.clone());
                error!(self.log, "disk buffer cannot be opened; buffering in memory"; "error" => %e);
            }
        }
        self.log_disk_reports();
    }

    /// Logs what the disk thread reported, counts its drops, and keeps in
    /// memory the metrics it could not write.
    fn log_disk_reports(&mut self) {
        let (reports, newly) = {
            let mut b = self.bufs();
            let b = &mut *b;
            let Some(disk) = b.disk.as_ref() else {
                return;
            };
            let (reports, dropped, refused) = disk.take_news();
            let newly = dropped.saturating_sub(b.disk_dropped_seen);
            b.disk_dropped_seen = dropped;
            for batch in refused {
                b.memory.extend(batch.iter().cloned());
            }
            (reports, newly)
        };
        for r in reports {
            if let Some(held) = self.drop_log.check(Duration::from_secs(60)) {
                error!(self.log, "disk buffer problem"; "detail" => r, "similar_messages_suppressed" => held);
            }
        }
        PluginStats::add(&self.stats.dropped, newly);
    }

    fn pending(&self) -> usize {
        self.bufs().pending()
    }

    fn update_buffered(&self) {
        self.stats.buffered.store(self.pending() as u64, Relaxed);
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

    fn accept(&mut self, metrics: Arc<Vec<Metric>>) {
        let n = metrics.len() as u64;
        let to_memory = {
            let b = self.bufs();
            match b.disk.as_ref() {
                Some(d) => {
                    d.append(metrics);
                    None
                }
                None => Some(metrics),
            }
        };
        match to_memory {
            Some(m) => self.push_memory(m),
            None => PluginStats::add(&self.stats.metrics_in, n),
        }
        self.log_disk_reports();
        self.update_buffered();
    }

    fn push_memory(&mut self, metrics: Arc<Vec<Metric>>) {
        let limit = self.settings.buffer_limit;
        let n = metrics.len();
        let dropped = {
            let mut b = self.bufs();
            match Arc::try_unwrap(metrics) {
                Ok(v) => b.memory.extend(v),
                Err(shared) => b.memory.extend(shared.iter().cloned()),
            }
            b.enforce_limit(limit)
        };
        PluginStats::add(&self.stats.metrics_in, n as u64);
        if dropped > 0 {
            PluginStats::add(&self.stats.dropped, dropped as u64);
            if let Some(held) = self.drop_log.check(Duration::from_secs(60)) {
                warn!(self.log, "output buffer full: oldest metrics dropped";
                    "dropped" => dropped, "buffer_limit" => limit, "similar_messages_suppressed" => held);
            }
        }
    }

    /// Starts a write of up to `batch_size` metrics when allowed.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.closing || self.pending() == 0 {
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
        self.writing = true;
        let max = self.settings.batch_size;
        let read = self.bufs().read_disk(max);
        let buffers = self.buffers.clone();
        let connected = self.connected;
        let write = async move {
            let Some(batch) = take_batch(&buffers, read, max).await else {
                return (plugin, None);
            };
            let started = Instant::now();
            let (plugin, n, result) = write_batch(plugin, batch, connected).await;
            (plugin, Some((n, result, started.elapsed())))
        };
        ctx.spawn(
            write
                .into_actor(self)
                .map(move |(plugin, outcome), act, ctx| {
                    act.writing = false;
                    match outcome {
                        Some((n, result, took)) => {
                            act.stats
                                .last_duration_us
                                .store(took.as_micros() as u64, Relaxed);
                            act.after_write(plugin, n, result);
                        }
                        // Nothing to write after all.
                        None => {
                            if act.plugin.is_none() {
                                act.plugin = Some(plugin);
                            }
                        }
                    }
                    if let Some(change) = act.disk_change.take() {
                        act.settings.disk_buffer = change;
                        act.apply_disk_settings(ctx);
                    }
                    if !act.closing && act.pending() >= act.settings.batch_size {
                        act.flush(ctx);
                    }
                    if !act.writing {
                        for w in act.idle_waiters.drain(..) {
                            let _ = w.send(());
                        }
                    }
                }),
        );
    }

    fn after_write(&mut self, plugin: Box<dyn DynOutput>, n: usize, result: WriteResult) {
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
                self.bufs().commit();
                PluginStats::add(&self.stats.calls, 1);
                PluginStats::add(&self.stats.metrics_out, n as u64);
                self.stats.last_ok_ns.store(now_ns(), Relaxed);
                self.connected = true;
                // A reconfigure during the write already installed a new plugin.
                if self.plugin.is_none() {
                    self.plugin = Some(plugin);
                }
                self.backoff.reset();
                self.retry_at = None;
            }
            Some(msg) => {
                let limit = self.settings.buffer_limit;
                let dropped = {
                    let mut b = self.bufs();
                    b.rollback();
                    b.enforce_limit(limit)
                };
                PluginStats::add(&self.stats.dropped, dropped as u64);
                let panicked = msg.starts_with("write panicked");
                if !panicked && self.plugin.is_none() {
                    self.plugin = Some(plugin);
                }
                self.connected = false;
                self.write_failed(msg);
            }
        }
        self.log_disk_reports();
        self.update_buffered();
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

/// The next batch to write: from the disk log when a read was asked for
/// and brought metrics, else from memory.
async fn take_batch(
    buffers: &SharedBuffers,
    read: Option<oneshot::Receiver<ReadBatch>>,
    max: usize,
) -> Option<Arc<Vec<Metric>>> {
    if let Some(rx) = read {
        if let Ok(read) = rx.await {
            if let Some(batch) = lock(buffers).begin_disk(read) {
                return Some(batch);
            }
        }
    }
    lock(buffers).begin_memory(max)
}

async fn write_batch(
    mut plugin: Box<dyn DynOutput>,
    batch: Arc<Vec<Metric>>,
    connected: bool,
) -> (Box<dyn DynOutput>, usize, WriteResult) {
    let result = AssertUnwindSafe(tokio::time::timeout(WRITE_TIMEOUT, async {
        if !connected {
            plugin.connect_boxed().await?;
        }
        plugin.write_boxed(&batch).await
    }))
    .catch_unwind()
    .await;
    (plugin, batch.len(), result)
}

impl Actor for OutputActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A predecessor that died mid-write left its batch in flight: it
        // was not acknowledged, so it is sent again.
        self.bufs().rollback();
        let config = self.config.clone();
        match self.build(&config) {
            Ok(p) => self.plugin = Some(p),
            Err(e) => self.write_failed(format!("build failed: {e}")),
        }
        self.apply_disk_settings(ctx);
        self.update_buffered();
        self.start_flush_timer(ctx);
        // Replay what an earlier run (or incarnation) left as soon as the actor runs.
        if self.pending() > 0 {
            ctx.run_later(Duration::ZERO, |act, ctx| act.flush(ctx));
        } else {
            self.connect_now(ctx);
        }
    }
}

impl OutputActor {
    /// Connects when the actor starts, as Telegraf's `Connect` does, so a
    /// pull output (prometheus_client) listens before the first flush. A
    /// failure is only logged: the first write connects again, with the
    /// usual retry and backoff.
    fn connect_now(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.connected {
            return;
        }
        let Some(mut plugin) = self.plugin.take() else {
            return;
        };
        self.writing = true;
        let connect = async move {
            let result =
                AssertUnwindSafe(tokio::time::timeout(WRITE_TIMEOUT, plugin.connect_boxed()))
                    .catch_unwind()
                    .await;
            (plugin, result)
        };
        ctx.spawn(connect.into_actor(self).map(|(plugin, result), act, ctx| {
            act.writing = false;
            let connected = matches!(result, Ok(Ok(Ok(()))));
            let panicked = result.is_err();
            match result {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    slog::debug!(act.log, "connect at start failed; the first write retries"; "error" => %e)
                }
                Ok(Err(_)) => slog::debug!(act.log, "connect at start timed out"),
                Err(p) => {
                    PluginStats::add(&act.stats.panics, 1);
                    slog::warn!(act.log, "connect at start panicked"; "error" => panic_message(&*p));
                }
            }
            // A panicked plugin is dropped (flush rebuilds it); one replaced
            // by a reconfigure meanwhile is dropped too.
            if !panicked && act.plugin.is_none() {
                act.plugin = Some(plugin);
                act.connected = connected;
            }
            if act.pending() > 0 {
                act.flush(ctx);
            }
            if !act.writing {
                for w in act.idle_waiters.drain(..) {
                    let _ = w.send(());
                }
            }
        }));
    }
}

struct FlushTick;

impl StreamHandler<FlushTick> for OutputActor {
    fn handle(&mut self, _: FlushTick, ctx: &mut Context<Self>) {
        self.flush(ctx);
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl OutputActor {
    /// Moves every batch waiting in the slot into the buffers, one at a
    /// time (what is not yet taken survives a panic of this actor).
    fn take_delivered(&mut self) {
        while let Some(batch) = self.slot.take() {
            self.accept(batch);
        }
    }
}

impl Handler<Wake> for OutputActor {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.take_delivered();
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
        // What was delivered before the close is flushed with the rest.
        self.take_delivered();
        if let Some(h) = self.flush_timer.take() {
            ctx.cancel_future(h);
        }
        self.closing = true;
        let (tx, rx) = oneshot::channel();
        if self.writing {
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
            // A write still in flight past the deadline: its batch is not acknowledged.
            act.bufs().rollback();
            final_flush(
                plugin,
                act.buffers.clone(),
                act.settings.batch_size,
                act.connected,
                deadline,
                act.log.clone(),
                act.stats.clone(),
            )
            .into_actor(act)
        }))
    }
}

fn lock(buffers: &SharedBuffers) -> MutexGuard<'_, OutputBuffers> {
    buffers.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes the whole buffer (the disk log first, then memory) in batches,
/// retrying failed batches with a short backoff until the deadline. What is
/// left goes to the disk log when there is one. Returns how many metrics were
/// not delivered (those kept on disk included: they are sent on the next start).
async fn final_flush(
    plugin: Option<Box<dyn DynOutput>>,
    buffers: SharedBuffers,
    batch_size: usize,
    mut connected: bool,
    deadline: Instant,
    log: Logger,
    stats: Arc<PluginStats>,
) -> usize {
    let Some(mut plugin) = plugin else {
        let left = park_on_disk(&buffers, &log).await;
        if left > 0 {
            error!(log, "output has no working plugin at shutdown"; "undelivered" => left);
        }
        return left;
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    while lock(&buffers).pending() > 0 && Instant::now() < deadline {
        let read = lock(&buffers).read_disk(batch_size);
        let Some(batch) = take_batch(&buffers, read, batch_size).await else {
            // Nothing readable although something is pending (unreadable log).
            break;
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let result = AssertUnwindSafe(tokio::time::timeout(remaining, async {
            if !connected {
                plugin.connect_boxed().await?;
            }
            plugin.write_boxed(&batch).await
        }))
        .catch_unwind()
        .await;
        let n = batch.len();
        drop(batch);
        match result {
            Ok(Ok(Ok(()))) => {
                lock(&buffers).commit();
                connected = true;
                PluginStats::add(&stats.calls, 1);
                PluginStats::add(&stats.metrics_out, n as u64);
                backoff.reset();
            }
            other => {
                lock(&buffers).rollback();
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
    let left = park_on_disk(&buffers, &log).await;
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
        let on_disk = lock(&buffers).disk.as_ref().map(|d| d.pending() as usize);
        match on_disk {
            Some(kept) if kept == left => {
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

/// Moves what is left in memory to the disk log (when there is one) and
/// closes the log; returns how many metrics are undelivered in total.
async fn park_on_disk(buffers: &SharedBuffers, log: &Logger) -> usize {
    let closed = {
        let mut b = lock(buffers);
        b.rollback();
        let b = &mut *b;
        let Some(d) = b.disk.as_ref() else {
            return b.memory.len();
        };
        if !b.memory.is_empty() {
            d.append(Arc::new(b.memory.drain(..).collect()));
        }
        d.close()
    };
    let left = closed.await.unwrap_or(0) as usize;
    let mut b = lock(buffers);
    if let Some(d) = b.disk.as_ref() {
        let (reports, _, refused) = d.take_news();
        for r in reports {
            error!(log, "disk buffer problem"; "detail" => r);
        }
        let lost: usize = refused.iter().map(|r| r.len()).sum();
        if lost > 0 {
            error!(log, "metrics could not be kept in the disk buffer"; "undelivered" => lost);
            b.memory
                .extend(refused.iter().flat_map(|r| r.iter().cloned()));
        }
    }
    left + b.memory.len()
}

/// A new config for a running output, with its settings as the plan
/// validated and resolved them (a relative `disk_buffer.path` is taken
/// from the folder that holds `etc/`, not from the working directory).
#[derive(Message)]
#[rtype(result = "Result<(), ConfigError>")]
pub(crate) struct ReconfigureOutput {
    pub config: PluginConfig,
    pub settings: OutputSettings,
}

impl Handler<ReconfigureOutput> for OutputActor {
    type Result = Result<(), ConfigError>;

    fn handle(&mut self, msg: ReconfigureOutput, ctx: &mut Context<Self>) -> Self::Result {
        let settings = msg.settings;
        let msg = Reconfigure(msg.config);
        let plugin = self.build(&msg.0).map_err(|e| build_error(&msg.0, e))?;
        // A write in flight returns the old plugin, which is then dropped.
        self.plugin = Some(plugin);
        self.connected = false;
        let timer_changed = settings.flush_every() != self.settings.flush_every()
            || settings.flush_jitter != self.settings.flush_jitter;
        let disk_changed = settings.disk_buffer != self.settings.disk_buffer;
        let retry_changed = settings.retry_max_sec != self.settings.retry_max_sec;
        let old_disk = self.settings.disk_buffer.clone();
        self.settings = settings;
        self.config = msg.0;
        if retry_changed {
            self.backoff = retry_backoff(&self.settings);
            // A retry already scheduled waits no longer than the new cap.
            let cap = Instant::now() + self.backoff.cap();
            if let Some(t) = self.retry_at.as_mut() {
                *t = (*t).min(cap);
            }
        }
        if disk_changed {
            if self.writing {
                // Moved once the write in flight has its answer.
                self.disk_change = Some(self.settings.disk_buffer.clone());
                self.settings.disk_buffer = old_disk;
            } else {
                self.apply_disk_settings(ctx);
            }
        }
        let limit = self.settings.buffer_limit;
        let dropped = self.bufs().enforce_limit(limit);
        PluginStats::add(&self.stats.dropped, dropped as u64);
        if timer_changed {
            self.start_flush_timer(ctx);
        }
        self.update_buffered();
        if self.pending() >= self.settings.batch_size {
            self.flush(ctx);
        }
        Ok(())
    }
}

#[cfg(test)]
impl Handler<super::PanicNow> for OutputActor {
    type Result = ();

    fn handle(&mut self, _: super::PanicNow, _: &mut Context<Self>) {
        panic!("injected panic in the output actor");
    }
}
