//! Runs one input: ticks every interval, gathers under a timeout and
//! `catch_unwind`, forwards the metrics, rebuilds the plugin with backoff
//! after a panic, an error or a hang.
use super::{panic_message, Backoff, DeathGuard, Drain, PluginStats, RateLimit, Reconfigure, Sink};
use crate::config::{ConfigError, PluginConfig};
use crate::metric::{now_ns, Str};
use crate::plugin::{Accumulator, DynInput, PluginError};
use crate::registry::{build_error, InputEntry};
use actix::prelude::*;
use futures::FutureExt;
use slog::{debug, error, info, warn, Logger};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub(crate) struct InputActor {
    name: Str,
    entry: InputEntry,
    config: PluginConfig,
    interval: Duration,
    /// Delay before the first gather (`delay_sec` staggering).
    start_after: Duration,
    /// Gathers on a timer; false when the supervisor drives gathers (once).
    scheduled: bool,
    info: Arc<[(Str, Str)]>,
    plugin: Option<Box<dyn DynInput>>,
    /// Shared with the accumulator of a running gather, which hands its
    /// chunks on through it: a reload that re-wires the pipeline mid-gather
    /// re-wires those too.
    next: Arc<Mutex<Sink>>,
    stats: Arc<PluginStats>,
    log: Logger,
    backoff: Backoff,
    busy: bool,
    rebuild_pending: bool,
    ticker: Option<SpawnHandle>,
    /// Bumped on reconfigure so a gather started before it returns its
    /// (old) plugin to the bin instead of the actor.
    generation: u64,
    idle_waiters: Vec<oneshot::Sender<()>>,
    error_log: RateLimit,
    pub(crate) guard: DeathGuard,
}

fn lock(next: &Mutex<Sink>) -> std::sync::MutexGuard<'_, Sink> {
    // A Sink is only replaced whole: a poisoned lock still holds a valid one.
    next.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts `batch` as the input's output and sends it to the current sink.
fn forward(next: &Mutex<Sink>, stats: &PluginStats, batch: Vec<crate::metric::Metric>) {
    PluginStats::add(&stats.metrics_out, batch.len() as u64);
    lock(next).send(batch);
}

pub(crate) struct InputSpec {
    pub name: Str,
    pub entry: InputEntry,
    pub config: PluginConfig,
    pub interval: Duration,
    pub start_after: Duration,
    pub scheduled: bool,
    pub info: Arc<[(Str, Str)]>,
    pub next: Sink,
    pub stats: Arc<PluginStats>,
    pub log: Logger,
    pub guard: DeathGuard,
}

impl InputActor {
    pub(crate) fn new(s: InputSpec) -> Self {
        InputActor {
            name: s.name,
            entry: s.entry,
            config: s.config,
            interval: s.interval,
            start_after: s.start_after,
            scheduled: s.scheduled,
            info: s.info,
            plugin: None,
            next: Arc::new(Mutex::new(s.next)),
            stats: s.stats,
            log: s.log,
            backoff: Backoff::default(),
            busy: false,
            rebuild_pending: false,
            ticker: None,
            generation: 0,
            idle_waiters: Vec::new(),
            error_log: RateLimit::default(),
            guard: s.guard,
        }
    }

    fn build(&self, config: &PluginConfig) -> Result<Box<dyn DynInput>, PluginError> {
        let config = config.clone().with_log(self.log.clone());
        match std::panic::catch_unwind(AssertUnwindSafe(|| (self.entry.factory)(&config))) {
            Ok(r) => r,
            Err(p) => Err(PluginError::msg(format!(
                "panicked while building: {}",
                panic_message(&*p)
            ))),
        }
    }

    fn start_ticker(&mut self, ctx: &mut Context<Self>, first_after: Duration) {
        if let Some(h) = self.ticker.take() {
            ctx.cancel_future(h);
        }
        let start = tokio::time::Instant::now() + first_after;
        let mut interval = tokio::time::interval_at(start, self.interval);
        // A gather that overruns skips ticks instead of bursting to catch up.
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let ticks = futures::stream::unfold(interval, |mut i| async move {
            i.tick().await;
            Some((Tick, i))
        });
        self.ticker = Some(ctx.add_stream(ticks));
    }

    /// Starts one gather unless one is running or the plugin is down.
    fn gather(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            PluginStats::add(&self.stats.dropped, 1);
            debug!(
                self.log,
                "gather skipped: the previous one is still running"
            );
            return;
        }
        let Some(mut plugin) = self.plugin.take() else {
            PluginStats::add(&self.stats.dropped, 1);
            return;
        };
        self.busy = true;
        let generation = self.generation;
        // A gather may not outlive its interval (at least one second).
        let timeout = self.interval.max(Duration::from_secs(1));
        let (next, stats) = (self.next.clone(), self.stats.clone());
        let mut acc = Accumulator::new(self.name.clone(), self.info.clone())
            .streaming(move |chunk| forward(&next, &stats, chunk));
        let started = Instant::now();
        let fut = async move {
            let result =
                AssertUnwindSafe(tokio::time::timeout(timeout, plugin.gather_boxed(&mut acc)))
                    .catch_unwind()
                    .await;
            (plugin, acc, result)
        };
        ctx.spawn(
            fut.into_actor(self)
                .map(move |(plugin, mut acc, result), act, ctx| {
                    act.busy = false;
                    let elapsed = started.elapsed();
                    act.stats
                        .last_duration_us
                        .store(elapsed.as_micros() as u64, Relaxed);
                    let failure = match result {
                        Ok(Ok(Ok(()))) => None,
                        Ok(Ok(Err(e))) => Some(format!("gather failed: {e}")),
                        Ok(Err(_)) => Some(format!(
                            "gather timed out after {:.1}s",
                            timeout.as_secs_f64()
                        )),
                        Err(p) => {
                            PluginStats::add(&act.stats.panics, 1);
                            Some(format!("gather panicked: {}", panic_message(&*p)))
                        }
                    };
                    // Partial problems reported with `add_error`: counted and
                    // logged; the plugin keeps running.
                    let errors = acc.take_errors();
                    if !errors.is_empty() {
                        PluginStats::add(&act.stats.errors, errors.len() as u64);
                        act.stats.set_error(errors.join("; "));
                        // A reported error (say, no raw-socket permission)
                        // is logged at most once per interval.
                        let period = act.interval.max(Duration::from_secs(1));
                        if let Some(held) = act.error_log.check(period) {
                            warn!(act.log, "gather reported errors";
                                "errors" => errors.join("; "), "suppressed" => held);
                        }
                    }
                    // What was gathered before a failure is still delivered.
                    forward(&act.next, &act.stats, acc.take());
                    match failure {
                        None => {
                            PluginStats::add(&act.stats.calls, 1);
                            act.stats.last_ok_ns.store(now_ns(), Relaxed);
                            act.backoff.reset();
                            if generation == act.generation && act.plugin.is_none() {
                                act.plugin = Some(plugin);
                            }
                        }
                        Some(msg) => {
                            drop(plugin);
                            act.fail(ctx, msg);
                        }
                    }
                    for w in act.idle_waiters.drain(..) {
                        let _ = w.send(());
                    }
                }),
        );
    }

    /// Drops the plugin and rebuilds it after the next backoff delay.
    fn fail(&mut self, ctx: &mut Context<Self>, msg: String) {
        PluginStats::add(&self.stats.errors, 1);
        self.stats.set_error(msg.clone());
        self.plugin = None;
        let delay = self.backoff.next_delay();
        error!(self.log, "input failed, restarting"; "error" => %msg, "backoff_ms" => delay.as_millis() as u64);
        self.schedule_rebuild(ctx, delay);
    }

    fn schedule_rebuild(&mut self, ctx: &mut Context<Self>, delay: Duration) {
        if self.rebuild_pending {
            return;
        }
        self.rebuild_pending = true;
        ctx.run_later(delay, |act, ctx| {
            act.rebuild_pending = false;
            if act.plugin.is_some() {
                return;
            }
            let config = act.config.clone();
            match act.build(&config) {
                Ok(p) => {
                    PluginStats::add(&act.stats.restarts, 1);
                    info!(act.log, "input restarted");
                    act.plugin = Some(p);
                }
                Err(e) => {
                    let msg = format!("rebuild failed: {e}");
                    act.fail(ctx, msg);
                }
            }
        });
    }

    /// Resolves when no gather is running.
    fn when_idle(&mut self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if self.busy {
            self.idle_waiters.push(tx);
        } else {
            let _ = tx.send(());
        }
        rx
    }
}

impl Actor for InputActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The mailbox is unbounded for control messages; metrics flow down.
        let config = self.config.clone();
        match self.build(&config) {
            Ok(p) => self.plugin = Some(p),
            Err(e) => self.fail(ctx, format!("build failed: {e}")),
        }
        if self.scheduled {
            self.start_ticker(ctx, self.start_after);
        }
    }
}

struct Tick;

impl StreamHandler<Tick> for InputActor {
    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        self.gather(ctx);
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // The ticker never ends on its own; a cancelled one must not stop us.
    }
}

/// Gather once now and reply when the metrics have been passed on.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct GatherNow;

impl Handler<GatherNow> for InputActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: GatherNow, ctx: &mut Context<Self>) -> Self::Result {
        self.gather(ctx);
        let idle = self.when_idle();
        Box::pin(async move {
            let _ = idle.await;
        })
    }
}

impl Handler<Drain> for InputActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(h) = self.ticker.take() {
            ctx.cancel_future(h);
        }
        self.scheduled = false;
        let idle = self.when_idle();
        let next = lock(&self.next).clone();
        Box::pin(async move {
            let _ = idle.await;
            next.drain().await;
        })
    }
}

impl Handler<Reconfigure> for InputActor {
    type Result = Result<(), ConfigError>;

    fn handle(&mut self, msg: Reconfigure, _: &mut Context<Self>) -> Self::Result {
        let plugin = self.build(&msg.0).map_err(|e| build_error(&msg.0, e))?;
        self.config = msg.0;
        self.generation += 1;
        self.plugin = Some(plugin);
        self.backoff.reset();
        warn!(self.log, "input reconfigured");
        Ok(())
    }
}

/// Change the gather interval; the next gather is one new interval away.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetInterval(pub Duration);

impl Handler<SetInterval> for InputActor {
    type Result = ();

    fn handle(&mut self, msg: SetInterval, ctx: &mut Context<Self>) {
        if msg.0 != self.interval {
            self.interval = msg.0;
            if self.scheduled {
                self.start_ticker(ctx, msg.0);
            }
        }
    }
}

/// Send gathered metrics to a new first stage (the pipeline's stages or
/// outputs were rebuilt by a reload).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetNext(pub Sink);

impl Handler<SetNext> for InputActor {
    type Result = ();

    fn handle(&mut self, msg: SetNext, _: &mut Context<Self>) {
        *lock(&self.next) = msg.0;
    }
}

/// New `info` tags for the metrics gathered from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetInfo(pub crate::config::InfoTags);

impl Handler<SetInfo> for InputActor {
    type Result = ();

    fn handle(&mut self, msg: SetInfo, _: &mut Context<Self>) {
        self.info = msg.0;
    }
}

#[cfg(test)]
impl Handler<super::PanicNow> for InputActor {
    type Result = ();

    fn handle(&mut self, _: super::PanicNow, _: &mut Context<Self>) {
        panic!("injected panic in the input actor {}", self.name);
    }
}
