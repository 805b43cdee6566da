//! Runs one output: a bounded buffer in front of the plugin, batches of
//! `batch_size`, a flush every `flush_interval` (plus jitter), one write in
//! flight at a time, retry with backoff on failure (the batch goes back to
//! the front of the buffer, so order is kept), and a final flush with a
//! deadline on shutdown. When the buffer is full the oldest metrics are
//! dropped and counted, never silently.
//!
//! Every write, periodic, retried or the shutdown's, goes through one flush
//! step, [`deliver`]: begin a transaction on the output's buffers
//! ([`super::output_buffers`]: memory, and the disk log with
//! `disk_buffer`), write the batch, end the transaction accepted or
//! rejected.
//!
//! Everything accepted and not yet delivered (batches waiting in the
//! output's slot, the buffers, the batch in flight) outlives the actor: the
//! slot and [`OutputBuffers`] are owned by the supervisor and handed to each
//! incarnation of the actor; a batch leaves them only when the backend
//! acknowledged the write, so an actor that dies mid-write loses nothing;
//! its successor sends the batch again.
use super::output_buffers::{lock, OutputBuffers, SharedBuffers};
use super::output_flush::{deliver, final_flush, Written};
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
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, MutexGuard};
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
        lock(&self.buffers)
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
        let Some(news) = self.bufs().disk_news() else {
            return;
        };
        for r in news.reports {
            if let Some(held) = self.drop_log.check(Duration::from_secs(60)) {
                error!(self.log, "disk buffer problem"; "detail" => r, "similar_messages_suppressed" => held);
            }
        }
        PluginStats::add(&self.stats.dropped, news.newly_dropped);
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
        let limit = self.settings.buffer_limit;
        let n = metrics.len();
        let dropped = self.bufs().add(metrics, limit);
        PluginStats::add(&self.stats.metrics_in, n as u64);
        if dropped > 0 {
            PluginStats::add(&self.stats.dropped, dropped as u64);
            if let Some(held) = self.drop_log.check(Duration::from_secs(60)) {
                warn!(self.log, "output buffer full: oldest metrics dropped";
                    "dropped" => dropped, "buffer_limit" => limit, "similar_messages_suppressed" => held);
            }
        }
        self.log_disk_reports();
        self.update_buffered();
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
        let write = deliver(
            self.buffers.clone(),
            plugin,
            self.connected,
            self.settings.batch_size,
            WRITE_TIMEOUT,
        );
        ctx.spawn(
            write
                .into_actor(self)
                .map(move |(plugin, written), act, ctx| {
                    act.writing = false;
                    act.after_write(plugin, written);
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

    fn after_write(&mut self, plugin: Box<dyn DynOutput>, written: Written) {
        match written {
            Written::Nothing => {
                if self.plugin.is_none() {
                    self.plugin = Some(plugin);
                }
                return;
            }
            Written::Delivered { n, took } => {
                self.stats
                    .last_duration_us
                    .store(took.as_micros() as u64, Relaxed);
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
            Written::Failed {
                error,
                panicked,
                took,
            } => {
                self.stats
                    .last_duration_us
                    .store(took.as_micros() as u64, Relaxed);
                let limit = self.settings.buffer_limit;
                let dropped = self.bufs().enforce_limit(limit);
                PluginStats::add(&self.stats.dropped, dropped as u64);
                if panicked {
                    PluginStats::add(&self.stats.panics, 1);
                } else if self.plugin.is_none() {
                    self.plugin = Some(plugin);
                }
                self.connected = false;
                self.write_failed(error);
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

impl Actor for OutputActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A predecessor that died mid-write left its batch in flight: it
        // was not acknowledged, so it is sent again.
        self.bufs().end(false);
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
            act.bufs().end(false);
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
