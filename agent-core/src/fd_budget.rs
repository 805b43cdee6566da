//! The file-descriptor budget: how many sockets (and pipes) the probes of
//! every input together may hold open at once.
//!
//! Thousands of probe targets each want a socket at the same moment; past
//! `RLIMIT_NOFILE` the kernel answers `EMFILE` ("Too many open files"), and
//! not only to the probe: to the log file's rotation, an output's next
//! connection, the status socket. So the agent reads the limit once at
//! start ([`init`]), raises the soft limit to the hard one where allowed,
//! keeps a reserve for everything that is not a probe, and hands out the
//! rest as permits ([`FdBudget::acquire`]). A probe that finds no permit
//! waits for one instead of failing: with 10,000 targets and 900 permits
//! a round takes a little longer, and no result is an `EMFILE` error.
//!
//! # The reserve
//!
//! [`reserve_for`] is what the agent keeps out of the probes' reach, on top
//! of the descriptors already open when [`init`] runs (stdio, the log file,
//! the control socket, counted from `/proc/self/fd`):
//!
//! - [`BASE_RESERVE`] (32): the log file and its rotation (2), one status
//!   client (1), the config watcher (inotify) and a config file being read
//!   (2), the event loops and their wakers (about 3 per runtime, a few
//!   runtimes: 9), signal pipes (2), the shared DNS pool (4 threads, each
//!   with `/etc/hosts` or a UDP socket to the name server open: 8), and
//!   child processes' spawn pipes (2), rounded up;
//! - [`PER_OUTPUT_RESERVE`] (16) per output: an HTTP client's connections
//!   and its event loop, a disk buffer's segment files and folder, a
//!   `prometheus_client` listener and its scrapers;
//! - [`PER_INPUT_RESERVE`] (4) per input: `/proc` files read during a
//!   gather, an HTTP client's own event loop and wakers (curl), a
//!   connection closing just after its permit was returned.
//!
//! The reserve never takes more than half of the soft limit, so even a tiny
//! limit leaves the probes something. Reloads keep the budget computed at
//! start (the reserve is generous enough for a few outputs more).
//!
//! Programs that embed the core and never call [`init`] get a budget of
//! their current soft limit (not raised) less a reserve of 128, at most half.
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Kept for the agent itself, whatever its configuration (see the module docs).
pub const BASE_RESERVE: u32 = 32;
/// Kept per configured output.
pub const PER_OUTPUT_RESERVE: u32 = 16;
/// Kept per configured input.
pub const PER_INPUT_RESERVE: u32 = 4;
/// The reserve of a budget nobody initialised (an embedding program).
const DEFAULT_RESERVE: u32 = 128;
/// Most permits handed out, whatever the limit (a hard limit of 2^30 would
/// otherwise mean a billion permits).
const MAX_CAPACITY: u64 = 1 << 20;

/// The reserve for a configuration of `outputs` outputs and `inputs` inputs.
pub fn reserve_for(outputs: usize, inputs: usize) -> u32 {
    let n = u64::from(BASE_RESERVE)
        + u64::from(PER_OUTPUT_RESERVE) * outputs as u64
        + u64::from(PER_INPUT_RESERVE) * inputs as u64;
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What `agent status` shows of the budget.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdBudgetStatus {
    /// `RLIMIT_NOFILE` soft limit after raising it.
    pub soft_limit: u64,
    pub hard_limit: u64,
    /// The soft limit the process was started with.
    pub initial_soft_limit: u64,
    /// Descriptors kept out of the probes' reach (open at start + reserve).
    pub reserved: u64,
    /// Permits for probes.
    pub probe_capacity: u64,
    /// Permits held now.
    pub in_use: u64,
    /// Most permits held at once since start.
    pub peak: u64,
    /// Acquisitions that found no free permit and waited.
    pub waited: u64,
    /// Acquisitions in all.
    pub acquired: u64,
}

/// Permits for probe descriptors; see the module docs.
pub struct FdBudget {
    sem: Semaphore,
    capacity: u32,
    soft_limit: u64,
    hard_limit: u64,
    initial_soft_limit: u64,
    reserved: u64,
    in_use: AtomicU64,
    peak: AtomicU64,
    waited: AtomicU64,
    acquired: AtomicU64,
}

/// Descriptors a probe may hold; returned to the budget when dropped.
#[must_use = "the permit is returned as soon as it is dropped"]
pub struct FdPermit<'a> {
    _permit: Option<SemaphorePermit<'a>>,
    n: u32,
    budget: &'a FdBudget,
}

impl FdPermit<'_> {
    /// Permits held (the `n` asked for, at most the budget's capacity).
    pub fn count(&self) -> u32 {
        self.n
    }
}

impl Drop for FdPermit<'_> {
    fn drop(&mut self) {
        self.budget
            .in_use
            .fetch_sub(u64::from(self.n), Ordering::Relaxed);
    }
}

impl FdBudget {
    /// A budget of `capacity` permits (tests, embedding programs with their
    /// own accounting); limits are reported as given.
    pub fn with_capacity(capacity: u32) -> FdBudget {
        let c = u64::from(capacity);
        FdBudget::new(c, c, c, 0, capacity.max(1))
    }

    fn new(soft: u64, hard: u64, initial: u64, reserved: u64, capacity: u32) -> FdBudget {
        FdBudget {
            sem: Semaphore::new(capacity as usize),
            capacity,
            soft_limit: soft,
            hard_limit: hard,
            initial_soft_limit: initial,
            reserved,
            in_use: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            waited: AtomicU64::new(0),
            acquired: AtomicU64::new(0),
        }
    }

    /// Waits until `n` descriptors are free and takes them. `n` above the
    /// capacity is cut to the capacity (one probe wanting more than the
    /// whole budget still runs, alone); `n == 0` takes nothing.
    pub async fn acquire(&self, n: u32) -> FdPermit<'_> {
        let n = n.min(self.capacity);
        self.acquired.fetch_add(1, Ordering::Relaxed);
        let permit = if n == 0 {
            None
        } else {
            match self.sem.try_acquire_many(n) {
                Ok(p) => Some(p),
                Err(_) => {
                    self.waited.fetch_add(1, Ordering::Relaxed);
                    // The semaphore is never closed, so this cannot fail;
                    // if it ever did, the probe runs without a permit
                    // rather than not at all.
                    self.sem.acquire_many(n).await.ok()
                }
            }
        };
        let n = if permit.is_some() { n } else { 0 };
        let now = self.in_use.fetch_add(u64::from(n), Ordering::Relaxed) + u64::from(n);
        self.peak.fetch_max(now, Ordering::Relaxed);
        FdPermit {
            _permit: permit,
            n,
            budget: self,
        }
    }

    /// Permits for probes.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn snapshot(&self) -> FdBudgetStatus {
        FdBudgetStatus {
            soft_limit: self.soft_limit,
            hard_limit: self.hard_limit,
            initial_soft_limit: self.initial_soft_limit,
            reserved: self.reserved,
            probe_capacity: u64::from(self.capacity),
            in_use: self.in_use.load(Ordering::Relaxed),
            peak: self.peak.load(Ordering::Relaxed),
            waited: self.waited.load(Ordering::Relaxed),
            acquired: self.acquired.load(Ordering::Relaxed),
        }
    }
}

static GLOBAL: OnceLock<FdBudget> = OnceLock::new();
/// The soft limit [`init`] raised from, for child processes (0: not raised).
static RAISED_FROM: AtomicU64 = AtomicU64::new(0);

/// In a child process between fork and exec: puts back the soft limit the
/// agent was started with, if [`init`] raised it. Async-signal-safe (one
/// atomic load, two system calls); errors are ignored (the child keeps the
/// raised limit).
// rlim_t is u64 on Linux, not on every Unix.
#[allow(clippy::unnecessary_cast)]
pub fn restore_initial_limit() {
    #[cfg(unix)]
    {
        let soft = RAISED_FROM.load(Ordering::Relaxed);
        if soft == 0 {
            return;
        }
        // SAFETY: getrlimit/setrlimit only read and write the struct passed.
        unsafe {
            let mut r: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
                r.rlim_cur = soft as libc::rlim_t;
                libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            }
        }
    }
}

/// The process's budget: the one [`init`] made, else a default one (the
/// current soft limit, not raised, less a reserve of 128, at most half).
pub fn global() -> &'static FdBudget {
    GLOBAL.get_or_init(|| {
        let (soft, hard) = limits();
        from_limits(soft, hard, soft, open_fds(), DEFAULT_RESERVE)
    })
}

/// The global budget's state (see [`FdBudget::snapshot`]).
pub fn snapshot() -> FdBudgetStatus {
    global().snapshot()
}

/// Reads `RLIMIT_NOFILE`, raises the soft limit to the hard limit where the
/// system allows it, and makes the global budget: the soft limit less the
/// descriptors open now and `reserve` (see [`reserve_for`]). The first call
/// decides; later calls (and [`global`] before it) return what is there.
pub fn init(reserve: u32) -> &'static FdBudget {
    GLOBAL.get_or_init(|| {
        let (initial, hard) = limits();
        let soft = raise_soft_limit(initial, hard);
        if soft > initial {
            RAISED_FROM.store(initial, Ordering::Relaxed);
        }
        from_limits(soft, hard, initial, open_fds(), reserve)
    })
}

fn from_limits(soft: u64, hard: u64, initial: u64, open: u64, reserve: u32) -> FdBudget {
    let reserved = (open + u64::from(reserve)).min(soft / 2);
    let capacity = soft.saturating_sub(reserved).clamp(1, MAX_CAPACITY);
    FdBudget::new(soft, hard, initial, reserved, capacity as u32)
}

/// (soft, hard) of `RLIMIT_NOFILE`; infinity reads as `u64::MAX`.
// rlim_t is u64 on Linux, not on every Unix.
#[allow(clippy::unnecessary_cast)]
#[cfg(unix)]
fn limits() -> (u64, u64) {
    // SAFETY: getrlimit only writes the struct passed.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return (1024, 1024);
    }
    (r.rlim_cur as u64, r.rlim_max as u64)
}

#[cfg(not(unix))]
fn limits() -> (u64, u64) {
    // Windows has no such limit for sockets; 8192 is a conservative
    // stand-in for the C runtime's handle table.
    (8192, 8192)
}

/// Raises the soft limit toward `hard` and returns the soft limit in force.
/// An infinite hard limit is not a valid soft limit for files on Linux:
/// `fs.nr_open` caps it.
// rlim_t is u64 on Linux, not on every Unix.
#[allow(clippy::unnecessary_cast)]
#[cfg(unix)]
fn raise_soft_limit(soft: u64, hard: u64) -> u64 {
    if soft >= hard {
        return soft;
    }
    let mut target = hard;
    if hard == libc::RLIM_INFINITY as u64 {
        target = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20);
    }
    let r = libc::rlimit {
        rlim_cur: target as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct passed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } == 0 {
        target
    } else {
        soft
    }
}

#[cfg(not(unix))]
fn raise_soft_limit(soft: u64, _hard: u64) -> u64 {
    soft
}

/// Descriptors open now (`/proc/self/fd` less the one reading it); 16 when
/// that cannot be read.
fn open_fds() -> u64 {
    match std::fs::read_dir("/proc/self/fd") {
        Ok(d) => (d.count() as u64).saturating_sub(1),
        Err(_) => 16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn capacity_is_the_limit_less_what_is_open_and_the_reserve() {
        let b = from_limits(1024, 4096, 1024, 10, reserve_for(2, 3));
        assert_eq!(reserve_for(2, 3), 32 + 2 * 16 + 3 * 4);
        assert_eq!(b.snapshot().reserved, 10 + 76);
        assert_eq!(b.capacity(), 1024 - 86);
        // The reserve takes at most half of a small limit.
        let small = from_limits(64, 64, 64, 10, 1000);
        assert_eq!((small.snapshot().reserved, small.capacity()), (32, 32));
        // A huge limit is capped.
        let huge = from_limits(u64::MAX, u64::MAX, 1024, 10, 100);
        assert_eq!(u64::from(huge.capacity()), MAX_CAPACITY);
        assert_eq!(from_limits(1, 1, 1, 0, 0).capacity(), 1);
    }

    #[actix_rt::test]
    async fn permits_bound_what_is_held_and_count_waits() {
        let b: &'static FdBudget = Box::leak(Box::new(FdBudget::with_capacity(3)));
        let p1 = b.acquire(2).await;
        let p2 = b.acquire(1).await;
        assert_eq!(b.snapshot().in_use, 3);
        // A fourth descriptor waits until one is returned.
        let waiter = actix_rt::spawn(async move {
            let p = b.acquire(1).await;
            p.count()
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        assert_eq!(b.snapshot().waited, 1);
        drop(p2);
        assert_eq!(waiter.await.unwrap(), 1);
        drop(p1);
        let s = b.snapshot();
        assert_eq!((s.in_use, s.peak, s.acquired), (0, 3, 3));
        // More than the capacity is cut to it (never a deadlock); 0 is free.
        let all = b.acquire(100).await;
        assert_eq!(all.count(), 3);
        let none = b.acquire(0).await;
        assert_eq!(none.count(), 0);
        drop(all);
        assert_eq!(b.snapshot().in_use, 0);
    }

    #[actix_rt::test]
    async fn many_tasks_never_hold_more_than_the_capacity() {
        let b: &'static FdBudget = Box::leak(Box::new(FdBudget::with_capacity(8)));
        let held = Arc::new(AtomicU64::new(0));
        let most = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let (held, most) = (held.clone(), most.clone());
                actix_rt::spawn(async move {
                    let p = b.acquire(1 + i % 2).await;
                    let now = held.fetch_add(u64::from(p.count()), Ordering::SeqCst)
                        + u64::from(p.count());
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    held.fetch_sub(u64::from(p.count()), Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 8);
        assert!(b.snapshot().peak <= 8);
        assert_eq!(b.snapshot().in_use, 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn limits_are_read_and_the_soft_limit_is_raised_at_most_to_the_hard() {
        let (soft, hard) = limits();
        assert!(soft > 0 && soft <= hard, "{soft} {hard}");
        // Raising to what is already in force changes nothing.
        assert_eq!(raise_soft_limit(soft, soft), soft);
        let open = open_fds();
        assert!(open >= 3, "stdio at least: {open}");
    }
}
