//! The actor side: every plugin instance runs in its own actix actor, and a
//! [`PipelineSupervisor`] builds and owns them all.
//!
//! ```text
//! InputActor ──Slot──▶ StageActor ──Slot──▶ … ──Slot──▶ OutputActor(s)
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
//!
//! The actor itself can still die (a panic in its own handler code drops it
//! without `stopped()`): every actor carries a [`DeathGuard`] that tells the
//! supervisor, which starts a new incarnation with backoff and swaps it into
//! the actor's [`Slot`], the address every sender goes through. An output's
//! buffers belong to the supervisor and are handed to each incarnation.
mod buffer;
pub mod diff;
pub mod disk_buffer;
mod disk_worker;
mod input_actor;
mod output_actor;
mod output_buffers;
mod output_flush;
mod stage_actor;
#[cfg(test)]
mod supervision_tests;
mod supervisor;

pub use crate::selfstat::{directory, PluginStats, StatsSnapshot};
pub use diff::{ConfigDiff, Difference, PipelineChange};
pub use supervisor::{
    ActorStatus, ApplyConfig, ApplyReport, GatherOnce, PipelineStatus, PipelineSupervisor,
    Shutdown, ShutdownReport, Status, StatusReport,
};

pub(crate) use crate::rate_limit::RateLimit;
pub(crate) use input_actor::InputActor;
pub(crate) use output_actor::OutputActor;
pub(crate) use stage_actor::StageActor;

use crate::metric::Metric;
use actix::prelude::*;
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

/// Tells an actor that its slot holds work. At most one is pending per
/// slot, so the actix mailbox never holds metrics.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Wake;

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
    Stage(Arc<StageSlot>),
    Outputs(Arc<[Arc<OutputSlot>]>),
}

impl Sink {
    pub(crate) fn send(&self, batch: Vec<Metric>) {
        if batch.is_empty() {
            return;
        }
        match self {
            Sink::Stage(slot) => slot.send(batch),
            Sink::Outputs(outs) => {
                let shared = Arc::new(batch);
                for o in outs.iter() {
                    o.send(shared.clone());
                }
            }
        }
    }

    /// Resolves when every stage downstream has drained. Outputs are
    /// flushed by the supervisor once all pipelines have drained.
    pub(crate) async fn drain(self) {
        if let Sink::Stage(slot) = self {
            let _ = slot.addr().send(Drain).await;
        }
    }
}

/// Batches waiting in a slot, at most this many (then the oldest go,
/// counted as dropped): an actor far behind or being restarted cannot make
/// memory grow without bound.
const SLOT_LIMIT: usize = 1024;

/// The queue of an actor that the supervisor may replace (after the actor
/// died), and its current address. Senders push batches here, not into the
/// actix mailbox, and wake the actor with a [`Wake`] only when none is
/// pending; the actor takes them out one at a time. So when an actor dies,
/// what it had accepted and not yet taken is still here, and one `replace`
/// re-wires every sender and wakes the next incarnation, which continues
/// with the queue in order.
///
/// A batch the actor has taken is its own: should the actor die while
/// processing it, it is lost with the actor (a stage takes one batch at a
/// time, within one handler or while its blocking processor has it; an
/// output moves it at once into buffers that outlive the actor). Taking before processing also means that a batch
/// which itself kills the actor is not handed to the next incarnation, so
/// it cannot kill actors in a loop.
pub(crate) struct Slot<A: Actor, M> {
    inner: std::sync::Mutex<SlotInner<A, M>>,
    stats: Arc<PluginStats>,
}

struct SlotInner<A: Actor, M> {
    addr: Addr<A>,
    queue: std::collections::VecDeque<M>,
    /// A `Wake` was sent and the actor has not yet found the queue empty.
    wake_pending: bool,
}

pub(crate) type StageSlot = Slot<StageActor, Vec<Metric>>;
pub(crate) type OutputSlot = Slot<OutputActor, Arc<Vec<Metric>>>;

impl<A, M> Slot<A, M>
where
    A: Actor + Handler<Wake>,
    A::Context: actix::dev::ToEnvelope<A, Wake>,
{
    pub(crate) fn new(addr: Addr<A>, stats: Arc<PluginStats>) -> Arc<Self> {
        Arc::new(Slot {
            inner: std::sync::Mutex::new(SlotInner {
                addr,
                queue: std::collections::VecDeque::new(),
                wake_pending: false,
            }),
            stats,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotInner<A, M>> {
        // Nothing in the slot can be left half-changed by a panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn addr(&self) -> Addr<A> {
        self.lock().addr.clone()
    }

    pub(crate) fn connected(&self) -> bool {
        self.lock().addr.connected()
    }

    pub(crate) fn send(&self, batch: M) {
        let mut g = self.lock();
        if g.queue.len() >= SLOT_LIMIT {
            g.queue.pop_front();
            PluginStats::add(&self.stats.dropped, 1);
        }
        g.queue.push_back(batch);
        if !g.wake_pending {
            g.wake_pending = true;
            // A dead actor loses the wake, not the batch: `replace` wakes
            // its successor.
            g.addr.do_send(Wake);
        }
    }

    /// The oldest waiting batch; `None` (and the next `send` wakes the
    /// actor again) when there is none.
    pub(crate) fn take(&self) -> Option<M> {
        let mut g = self.lock();
        let batch = g.queue.pop_front();
        if batch.is_none() {
            g.wake_pending = false;
        }
        batch
    }

    /// The actor is busy and takes nothing now, but wants a [`Wake`] for
    /// every new batch (to keep the queue's length in check).
    pub(crate) fn rearm(&self) {
        self.lock().wake_pending = false;
    }

    /// The oldest waiting batch if more than `limit` wait.
    pub(crate) fn take_beyond(&self, limit: usize) -> Option<M> {
        let mut g = self.lock();
        if g.queue.len() > limit {
            g.queue.pop_front()
        } else {
            None
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lock().queue.is_empty()
    }

    /// Points every sender at a new incarnation and wakes it for what
    /// waits in the queue.
    pub(crate) fn replace(&self, addr: Addr<A>) {
        let mut g = self.lock();
        g.addr = addr;
        g.wake_pending = !g.queue.is_empty();
        if g.wake_pending {
            g.addr.do_send(Wake);
        }
    }
}

/// Lives in every plugin actor; when the actor is dropped for any reason
/// (a stop or a panic in its own handler code, which drops the actor
/// without calling `stopped()`), it tells the supervisor, unless the
/// supervisor ordered the stop (then it was disarmed).
pub(crate) struct DeathGuard {
    id: u64,
    notify: Option<Recipient<ActorDied>>,
}

/// An actor with this id died without being told to stop.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ActorDied(pub u64);

impl DeathGuard {
    pub(crate) fn new(id: u64, notify: Option<Recipient<ActorDied>>) -> Self {
        DeathGuard { id, notify }
    }

    /// The stop is ordered: no restart.
    pub(crate) fn disarm(&mut self) {
        self.notify = None;
    }
}

impl Drop for DeathGuard {
    fn drop(&mut self) {
        if let Some(n) = self.notify.take() {
            n.do_send(ActorDied(self.id));
        }
    }
}

/// Test hook: panic inside the actor's own handler (not its plugin).
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PanicNow;

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

    /// The longest delay this backoff gives.
    pub(crate) fn cap(&self) -> Duration {
        self.cap
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Self::START, Self::CAP)
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
}
