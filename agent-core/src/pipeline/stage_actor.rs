//! Runs one processor or aggregator of a pipeline.
//!
//! A processor error is about the data, so it is logged (at most once a
//! minute) and the batch goes on; a panic drops the plugin, and until it is
//! rebuilt (after a backoff delay) batches pass through unprocessed rather
//! than being lost.
use super::{
    panic_message, Backoff, Batch, DeathGuard, Drain, PluginStats, RateLimit, Reconfigure, Sink,
};
use crate::config::{ConfigError, PluginConfig};
use crate::metric::{Metric, Str};
use crate::plugin::{Accumulator, Aggregator, PluginError, Processor};
use crate::registry::{build_error, AggregatorEntry, ProcessorEntry};
use actix::prelude::*;
use serde::Deserialize;
use slog::{error, info, warn, Logger};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) enum StageEntry {
    Processor(ProcessorEntry),
    Aggregator(AggregatorEntry),
}

enum Plugin {
    Processor(Box<dyn Processor>),
    Aggregator(Box<dyn Aggregator>),
}

fn d_period() -> f64 {
    30.0
}

/// Keys every aggregator accepts (Telegraf's names).
#[derive(Debug, Clone, Deserialize)]
struct AggregatorSettings {
    #[serde(default = "d_period")]
    period: f64,
    #[serde(default)]
    drop_original: bool,
}

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
    pub(crate) guard: DeathGuard,
    /// The aggregator's push timer (replaced when `period` changes).
    push_timer: Option<SpawnHandle>,
}

impl StageActor {
    pub(crate) fn new(
        entry: StageEntry,
        config: PluginConfig,
        info: Arc<[(Str, Str)]>,
        next: Sink,
        stats: Arc<PluginStats>,
        log: Logger,
        guard: DeathGuard,
    ) -> Self {
        StageActor {
            input: config.input.clone(),
            entry,
            config,
            info,
            plugin: None,
            settings: AggregatorSettings {
                period: d_period(),
                drop_original: false,
            },
            next,
            stats,
            log,
            backoff: Backoff::default(),
            retry_at: None,
            error_log: RateLimit::default(),
            guard,
            push_timer: None,
        }
    }

    fn build(&self, config: &PluginConfig) -> Result<Plugin, PluginError> {
        let config = &config.clone().with_log(self.log.clone());
        let built = catch_unwind(AssertUnwindSafe(|| match &self.entry {
            StageEntry::Processor(e) => (e.factory)(config).map(Plugin::Processor),
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

    fn process(&mut self, mut batch: Vec<Metric>) -> Vec<Metric> {
        PluginStats::add(&self.stats.metrics_in, batch.len() as u64);
        self.ensure_plugin();
        let outcome = match self.plugin.as_mut() {
            None => return batch,
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
                self.failed(format!("panicked: {}", panic_message(&*p)));
            }
        }
        batch
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
            self.start_push_timer(ctx);
        }
        self.ensure_plugin();
    }
}

impl StageActor {
    /// Aggregators push every `period`; a new period restarts the timer.
    fn start_push_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.push_timer.take() {
            ctx.cancel_future(h);
        }
        let period = self.settings.period_duration();
        self.push_timer = Some(ctx.run_interval(period, |act, _| act.push_aggregates()));
    }
}

impl AggregatorSettings {
    /// The period as a duration; a value no duration can hold (negative,
    /// NaN, huge) falls back to the default rather than panicking.
    fn period_duration(&self) -> Duration {
        Duration::try_from_secs_f64(self.period.max(0.001)).unwrap_or(Duration::from_secs(30))
    }
}

impl Handler<Batch> for StageActor {
    type Result = ();

    fn handle(&mut self, msg: Batch, _: &mut Context<Self>) {
        let out = self.process(msg.0);
        PluginStats::add(&self.stats.metrics_out, out.len() as u64);
        self.next.send(out);
    }
}

impl Handler<Drain> for StageActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        self.push_aggregates();
        Box::pin(self.next.clone().drain())
    }
}

impl Handler<Reconfigure> for StageActor {
    type Result = Result<(), ConfigError>;

    fn handle(&mut self, msg: Reconfigure, ctx: &mut Context<Self>) -> Self::Result {
        let settings = match self.entry {
            StageEntry::Aggregator(_) => Some(msg.0.parse::<AggregatorSettings>()?),
            StageEntry::Processor(_) => None,
        };
        let plugin = self.build(&msg.0).map_err(|e| build_error(&msg.0, e))?;
        // Aggregates of the old config are emitted, not lost.
        self.push_aggregates();
        self.plugin = Some(plugin);
        self.config = msg.0;
        self.retry_at = None;
        self.backoff.reset();
        if let Some(settings) = settings {
            let period_changed = settings.period_duration() != self.settings.period_duration();
            self.settings = settings;
            if period_changed {
                self.start_push_timer(ctx);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
impl Handler<super::PanicNow> for StageActor {
    type Result = ();

    fn handle(&mut self, _: super::PanicNow, _: &mut Context<Self>) {
        panic!("injected panic in the stage actor of {}", self.input);
    }
}
