//! The agent's own statistics, at the bottom of the layers (Telegraf's
//! `selfstat`): the pipeline's actors and the reloader write here, and
//! `agent status` and the `internal` input read, without either side
//! knowing the other. Depends on nothing but std.
//!
//! - [`PluginStats`]: the counters every actor keeps about its plugin
//!   (atomics, so reading never blocks the actor), found through
//!   [`directory`].
//! - [`ReloadCounters`]: the reloader's counters, published with
//!   [`publish_reload`] and read with [`reload_counters`].
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};

#[derive(Debug, Default)]
pub struct PluginStats {
    /// Completed gathers (inputs), applied batches (stages), writes (outputs).
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    pub panics: AtomicU64,
    pub restarts: AtomicU64,
    /// Times the supervisor restarted the actor itself (it had died).
    pub actor_restarts: AtomicU64,
    pub metrics_in: AtomicU64,
    pub metrics_out: AtomicU64,
    /// Metrics dropped (output buffer overflow) or ticks skipped (inputs).
    pub dropped: AtomicU64,
    /// Output: metrics waiting in the buffer.
    pub buffered: AtomicU64,
    /// Nanoseconds since the epoch of the last successful call.
    pub last_ok_ns: AtomicI64,
    /// Duration of the last call, microseconds.
    pub last_duration_us: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

/// A copy of [`PluginStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    pub calls: u64,
    pub errors: u64,
    pub panics: u64,
    pub restarts: u64,
    /// Times the supervisor restarted the actor itself (it had died).
    #[serde(default)]
    pub actor_restarts: u64,
    pub metrics_in: u64,
    pub metrics_out: u64,
    pub dropped: u64,
    pub buffered: u64,
    pub last_ok_ns: i64,
    pub last_duration_us: u64,
    pub last_error: Option<String>,
}

impl PluginStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn set_error(&self, e: impl Into<String>) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e.into());
        }
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            calls: self.calls.load(Relaxed),
            errors: self.errors.load(Relaxed),
            panics: self.panics.load(Relaxed),
            restarts: self.restarts.load(Relaxed),
            actor_restarts: self.actor_restarts.load(Relaxed),
            metrics_in: self.metrics_in.load(Relaxed),
            metrics_out: self.metrics_out.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            buffered: self.buffered.load(Relaxed),
            last_ok_ns: self.last_ok_ns.load(Relaxed),
            last_duration_us: self.last_duration_us.load(Relaxed),
            last_error: self.last_error.lock().ok().and_then(|g| g.clone()),
        }
    }
}

/// Every live actor's counters in this process, for the `internal` input.
/// Entries are weak: a stopped actor drops out by itself.
pub mod directory {
    use super::PluginStats;
    use std::sync::{Arc, Mutex, OnceLock, Weak};

    /// One registered actor.
    #[derive(Debug, Clone)]
    pub struct Entry {
        /// `input`, `processor`, `aggregator` or `output`.
        pub kind: &'static str,
        /// The pipeline (input instance) it serves; empty for outputs.
        pub pipeline: String,
        /// Instance name.
        pub name: String,
        pub stats: Arc<PluginStats>,
    }

    struct Registered {
        kind: &'static str,
        pipeline: String,
        name: String,
        stats: Weak<PluginStats>,
    }

    fn all() -> &'static Mutex<Vec<Registered>> {
        static ALL: OnceLock<Mutex<Vec<Registered>>> = OnceLock::new();
        ALL.get_or_init(|| Mutex::new(Vec::new()))
    }

    pub(crate) fn register(
        kind: &'static str,
        pipeline: &str,
        name: &str,
        stats: &Arc<PluginStats>,
    ) {
        if let Ok(mut v) = all().lock() {
            v.retain(|r| r.stats.strong_count() > 0);
            v.push(Registered {
                kind,
                pipeline: pipeline.to_string(),
                name: name.to_string(),
                stats: Arc::downgrade(stats),
            });
        }
    }

    /// The actors alive now.
    pub fn live() -> Vec<Entry> {
        let Ok(v) = all().lock() else {
            return Vec::new();
        };
        v.iter()
            .filter_map(|r| {
                Some(Entry {
                    kind: r.kind,
                    pipeline: r.pipeline.clone(),
                    name: r.name.clone(),
                    stats: r.stats.upgrade()?,
                })
            })
            .collect()
    }
}

/// The reloader's counters, as the `internal` input reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadCounters {
    /// Applied configurations since start (1 = the initial one).
    pub generation: u64,
    /// Reloads attempted.
    pub attempts: u64,
    /// Attempts that found the files unchanged.
    pub unchanged: u64,
    /// File events that passed the filter.
    pub file_events: u64,
    /// Times the reloader actor died and was restarted.
    pub reloader_restarts: u64,
    /// The last changed configuration was applied (not rejected).
    pub last_ok: bool,
}

fn reload_slot() -> &'static Mutex<Option<ReloadCounters>> {
    static RELOAD: OnceLock<Mutex<Option<ReloadCounters>>> = OnceLock::new();
    RELOAD.get_or_init(|| Mutex::new(None))
}

/// The running reloader's counters now (the reloader calls this whenever
/// they change).
pub fn publish_reload(counters: ReloadCounters) {
    if let Ok(mut g) = reload_slot().lock() {
        *g = Some(counters);
    }
}

/// The last counters a reloader published; `None` when no reloader runs in
/// this process (`agent once`, an embedding without one).
pub fn reload_counters() -> Option<ReloadCounters> {
    reload_slot().lock().ok()?.clone()
}
