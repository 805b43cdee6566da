//! Alarm state that outlives plugin instances: the core rebuilds a
//! processor from its factory on every reconfigure, and `for`/`repeat_sec`
//! counting must carry on. Keyed by (input, series, rule); only series that
//! are breaching (or firing) have an entry, so the map stays small.
use crate::metric::Str;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateKey {
    pub input: Str,
    pub series: Str,
    pub rule: Str,
}

#[derive(Debug, Clone, Default)]
pub struct RuleState {
    /// Consecutive breaching gathers.
    pub consecutive: u32,
    /// An alarm has fired and the condition has not cleared since.
    pub active: bool,
    pub last_fired_ns: i64,
    /// The info text of the last alarm fired, for the recovery message.
    pub last_info: String,
}

#[derive(Debug, Default)]
pub struct Store {
    pub rules: HashMap<StateKey, RuleState>,
    /// Network VIP watch: the last IP lists seen, per (input, nic, family).
    pub vips: HashMap<StateKey, Vec<Str>>,
}

/// Entries beyond this are dropped oldest-first is not tracked; the map is
/// simply cleared, which at worst restarts `for` counting.
const MAX_ENTRIES: usize = 100_000;

static STORE: OnceLock<Mutex<Store>> = OnceLock::new();

/// The process-wide store. A poisoned lock (a panic elsewhere while held)
/// still holds consistent plain data, so it is used as is.
pub fn lock() -> MutexGuard<'static, Store> {
    let m = STORE.get_or_init(|| Mutex::new(Store::default()));
    let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
    if g.rules.len() > MAX_ENTRIES {
        g.rules.clear();
    }
    if g.vips.len() > MAX_ENTRIES {
        g.vips.clear();
    }
    g
}
