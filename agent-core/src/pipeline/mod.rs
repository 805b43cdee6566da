//! The actor side: every plugin instance runs in its own actix actor, and a
//! [`PipelineSupervisor`] builds and owns them all.
//!
//! ```text
//! InputActor ──Batch──▶ StageActor ──Batch──▶ … ──Deliver──▶ OutputActor(s)
//!      ▲                     ▲                                   ▲
//!      └──────────── PipelineSupervisor (builds, drains, reports) ┘
//! ```
//!
//! actix restarts an actor only when it stops, not when a handler panics
//! (the panic kills the arbiter task and the mailbox). So every call into
//! plugin code goes through `catch_unwind`; a failed plugin is dropped and
//! rebuilt from its factory with exponential backoff, inside its actor.
//!
//! All actors share one thread, so nothing that can block runs on it:
//! console/file writes, `statvfs`, log writes and processors that declare
//! they block ([`crate::Processor::blocks`]) go to a dedicated worker thread
//! per resource with a bounded queue ([`crate::blocking`]). Chosen over
//! `spawn_blocking` and a `SyncArbiter` by measurement (debug build, loaded
//! 2-core machine, 20,000 round trips from the actix loop): 23 µs per call
//! for a dedicated thread, 57 µs for `spawn_blocking`, 62 µs for a
//! one-thread `SyncArbiter`; and dropping the runtime with a 3 s
//! `spawn_blocking` task still running took 2.95 s (tokio waits for it: a
//! write stuck on a pipe would hang the exit past the shutdown deadline),
//! 0.2 ms with a dedicated thread. A pool or a `SyncArbiter` is also
//! exhausted by as many stuck calls as it has threads; a thread per
//! resource costs one thread per stuck resource and keeps its order.
pub mod disk_buffer;
mod input_actor;
mod output_actor;
mod stage_actor;
pub mod stats;
mod supervisor;

pub use stats::{directory, PluginStats, StatsSnapshot};
pub use supervisor::{
    ActorStatus, ApplyConfig, ApplyReport, GatherOnce, PipelineStatus, PipelineSupervisor,
    Shutdown, ShutdownReport, Status, StatusReport,
};

pub(crate) use input_actor::InputActor;
pub(crate) use output_actor::OutputActor;
pub(crate) use stage_actor::StageActor;

use crate::metric::Metric;
use actix::prelude::*;
use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Metrics moving from one stage to the next.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Batch(pub Vec<Metric>);

/// Metrics handed to an output; shared when a pipeline has several outputs.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Deliver(pub Arc<Vec<Metric>>);

/// Finish what is in flight, push aggregates, and pass the drain on; the
/// reply comes when everything downstream (up to the outputs) has it.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Drain;

/// Rebuild the actor's plugin from a new config (by message, so the actor,
/// its timers and buffers live on).
#[derive(Message)]
#[rtype(result = "Result<(), crate::config::ConfigError>")]
pub struct Reconfigure(pub crate::config::PluginConfig);

/// Where a stage sends its metrics.
#[derive(Clone)]
pub(crate) enum Sink {
    Stage(Addr<StageActor>),
    Outputs(Arc<[Addr<OutputActor>]>),
}

impl Sink {
    pub(crate) fn send(&self, batch: Vec<Metric>) {
        if batch.is_empty() {
            return;
        }
        match self {
            Sink::Stage(a) => a.do_send(Batch(batch)),
            Sink::Outputs(outs) => {
                let shared = Arc::new(batch);
                for o in outs.iter() {
                    o.do_send(Deliver(shared.clone()));
                }
            }
        }
    }

    /// Resolves when every stage downstream has drained. Outputs are
    /// flushed by the supervisor once all pipelines have drained.
    pub(crate) async fn drain(self) {
        if let Sink::Stage(a) = self {
            let _ = a.send(Drain).await;
        }
    }
}

/// Exponential backoff: 100 ms doubling to a cap of 30 s.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    start: Duration,
    cap: Duration,
}

impl Backoff {
    pub(crate) const START: Duration = Duration::from_millis(100);
    pub(crate) const CAP: Duration = Duration::from_secs(30);

    pub(crate) fn new(start: Duration, cap: Duration) -> Self {
        Backoff {
            next: start,
            start,
            cap,
        }
    }

    /// The delay to wait now; the following one is twice as long.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.cap);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.start;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Self::START, Self::CAP)
    }
}

/// Lets a repeated log line through at most once per period, counting the
/// rest.
#[derive(Debug, Default)]
pub(crate) struct RateLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// `Some(n)` when the line may be logged now; `n` lines were held back
    /// since the last one.
    pub(crate) fn check(&mut self, period: Duration) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The text of a caught panic.
pub(crate) fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_cap_and_resets() {
        let mut b = Backoff::default();
        let seq: Vec<u128> = (0..12).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(&seq[..4], &[100, 200, 400, 800]);
        assert_eq!(*seq.last().unwrap(), 30_000);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn rate_limit_counts_suppressed() {
        let mut r = RateLimit::default();
        assert_eq!(r.check(Duration::from_secs(60)), Some(0));
        assert_eq!(r.check(Duration::from_secs(60)), None);
        assert_eq!(r.check(Duration::from_secs(60)), None);
        assert_eq!(r.check(Duration::ZERO), Some(2));
    }
}
