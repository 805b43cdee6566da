//! Host names to addresses for the network probes (ping, telnet, curl):
//! one process-wide cache, a bounded pool of resolver threads, and one
//! look-up per name however many targets ask for it at once.
//!
//! tokio's `lookup_host` runs `getaddrinfo` on the blocking pool, one
//! thread per call: 10,000 targets on 50 names meant 10,000 calls (and up
//! to 512 threads) every round. Here:
//!
//! - IP literals (`10.0.0.1`, `::1`, `[::1]`) are answered at once, never
//!   cached, never counted;
//! - a name's answer is kept for the cache lifetime (`dns_cache_sec` in
//!   main.yaml, default 60 s; 0 keeps nothing), a failure for at most
//!   [`NEGATIVE_TTL`] (a name that comes back is noticed soon);
//! - callers asking for a name whose look-up is under way wait for that
//!   one (single flight): the first round of 10,000 targets on 50 names
//!   costs 50 look-ups;
//! - look-ups run on at most [`THREADS`] threads (started when first
//!   needed, then kept), using the system's resolver (`getaddrinfo`:
//!   `/etc/hosts`, `nsswitch.conf`, `resolv.conf` as every other program).
//!
//! Errors keep the probes' words: `cannot resolve NAME: <reason>` (the
//! system's reason, as Rust's `ToSocketAddrs` gives it) and `resolving NAME
//! timed out after Ns`. DNS record TTLs are not visible through
//! `getaddrinfo`; the cache lifetime is the configured one.
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Resolver threads at most.
pub const THREADS: usize = 4;
/// Longest a failed look-up is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// The cache lifetime until a configuration sets `dns_cache_sec`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

type Answer = Result<Arc<[IpAddr]>, String>;

enum Slot {
    Ready { answer: Answer, expires: Instant },
    Pending(watch::Receiver<Option<Answer>>),
}

struct Entry {
    slot: Slot,
    /// Look-ups made for this name since it entered the cache.
    lookups: u64,
}

struct Job {
    host: String,
    key: String,
    tx: watch::Sender<Option<Answer>>,
}

#[derive(Default)]
struct State {
    names: HashMap<String, Entry>,
    prune_at: usize,
    threads: usize,
    busy: usize,
    jobs: Option<Sender<Job>>,
    queue: Option<JobQueue>,
}

/// A name cache with its resolver threads. The probes share [`global`].
pub struct Resolver {
    state: Mutex<State>,
    inner: Arc<Shared>,
}

/// What the threads need of the resolver.
struct Shared {
    ttl_ms: AtomicU64,
    lookups: AtomicU64,
    hits: AtomicU64,
    coalesced: AtomicU64,
    failures: AtomicU64,
    /// The resolver's state, for threads to store answers (set once).
    back: OnceLock<std::sync::Weak<Resolver>>,
}

/// The resolver's counters (`agent status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResolverStats {
    /// Names in the cache (answers and look-ups under way).
    pub names: u64,
    /// Look-ups made (calls of the system resolver).
    pub lookups: u64,
    /// Answers served from the cache.
    pub hits: u64,
    /// Callers that waited for a look-up another caller started.
    pub coalesced: u64,
    /// Look-ups that failed.
    pub failures: u64,
    /// The cache lifetime in force, seconds.
    pub ttl_sec: f64,
}

/// `host` as an IP address when it is one (`[::1]` too).
pub fn literal(host: &str) -> Option<IpAddr> {
    let h = host.trim();
    let h = h
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(h);
    h.parse().ok()
}

impl Resolver {
    /// A resolver of its own (tests; the probes use [`global`]).
    pub fn new(ttl: Duration) -> Arc<Resolver> {
        let r = Arc::new(Resolver {
            state: Mutex::new(State {
                prune_at: 1024,
                ..State::default()
            }),
            inner: Arc::new(Shared {
                ttl_ms: AtomicU64::new(duration_ms(ttl)),
                lookups: AtomicU64::new(0),
                hits: AtomicU64::new(0),
                coalesced: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                back: OnceLock::new(),
            }),
        });
        let _ = r.inner.back.set(Arc::downgrade(&r));
        r
    }

    /// Sets how long answers are kept; entries already cached keep their
    /// expiry.
    pub fn set_ttl(&self, ttl: Duration) {
        self.inner.ttl_ms.store(duration_ms(ttl), Ordering::Relaxed);
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.inner.ttl_ms.load(Ordering::Relaxed))
    }

    /// The addresses of `host`, from the cache or one look-up shared with
    /// every caller asking meanwhile; waits at most `timeout`.
    pub async fn lookup(&self, host: &str, timeout: Duration) -> Answer {
        if let Some(ip) = literal(host) {
            return Ok(Arc::from([ip]));
        }
        let host = host.trim();
        let key = host.to_ascii_lowercase();
        let mut rx = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            match st.names.get_mut(&key) {
                Some(Entry {
                    slot: Slot::Ready { answer, expires },
                    ..
                }) if *expires > now => {
                    self.inner.hits.fetch_add(1, Ordering::Relaxed);
                    return answer.clone();
                }
                // (A thread that died without answering leaves a closed
                // channel: start again.)
                Some(Entry {
                    slot: Slot::Pending(rx),
                    ..
                }) if rx.has_changed().is_ok() || rx.borrow().is_some() => {
                    self.inner.coalesced.fetch_add(1, Ordering::Relaxed);
                    rx.clone()
                }
                _ => self.start(&mut st, host, key),
            }
        };
        let answer = match tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await {
            Ok(Ok(answer)) => answer
                .clone()
                .unwrap_or_else(|| Err(format!("cannot resolve {host}: no answer"))),
            // The thread dropped its sender without answering (it panicked).
            Ok(Err(_)) => Err(format!("cannot resolve {host}: the resolver thread failed")),
            Err(_) => Err(format!(
                "resolving {host} timed out after {:.1}s",
                timeout.as_secs_f64()
            )),
        };
        answer
    }

    /// Queues a look-up of `host` (under the state lock).
    fn start(&self, st: &mut State, host: &str, key: String) -> watch::Receiver<Option<Answer>> {
        let (tx, rx) = watch::channel(None);
        let lookups = st.names.get(&key).map_or(0, |e| e.lookups) + 1;
        if st.names.len() >= st.prune_at {
            let now = Instant::now();
            st.names
                .retain(|_, e| !matches!(e.slot, Slot::Ready { expires, .. } if expires <= now));
            st.prune_at = (st.names.len() * 2).max(1024);
        }
        st.names.insert(
            key.clone(),
            Entry {
                slot: Slot::Pending(rx.clone()),
                lookups,
            },
        );
        self.inner.lookups.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            host: host.to_string(),
            key,
            tx,
        };
        st.busy += 1;
        if st.busy > st.threads && st.threads < THREADS {
            let queue = match &st.queue {
                Some(q) => q.clone(),
                None => {
                    let (tx, rx) = channel::<Job>();
                    let q: JobQueue = Arc::new(Mutex::new(rx));
                    st.jobs = Some(tx);
                    st.queue = Some(q.clone());
                    q
                }
            };
            let inner = self.inner.clone();
            let spawned = std::thread::Builder::new()
                .name("agent-dns".into())
                .spawn(move || work(&queue, &inner));
            if spawned.is_ok() {
                st.threads += 1;
            }
        }
        let sent = match &st.jobs {
            Some(jobs) if st.threads > 0 => jobs.send(job).map_err(|e| e.0),
            _ => Err(job),
        };
        if let Err(job) = sent {
            // No thread could be started: answer here so nobody waits.
            st.busy -= 1;
            let answer: Answer = Err(format!(
                "cannot resolve {}: no resolver thread could be started",
                job.host
            ));
            store(st, &job.key, answer.clone(), Instant::now());
            let _ = job.tx.send(Some(answer));
        }
        rx
    }

    /// Look-ups made for `host` since it entered the cache (0 for literals
    /// and names never asked for).
    pub fn lookups_of(&self, host: &str) -> u64 {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.names
            .get(&host.trim().to_ascii_lowercase())
            .map_or(0, |e| e.lookups)
    }

    pub fn stats(&self) -> ResolverStats {
        let names = self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .names
            .len() as u64;
        ResolverStats {
            names,
            lookups: self.inner.lookups.load(Ordering::Relaxed),
            hits: self.inner.hits.load(Ordering::Relaxed),
            coalesced: self.inner.coalesced.load(Ordering::Relaxed),
            failures: self.inner.failures.load(Ordering::Relaxed),
            ttl_sec: self.ttl().as_secs_f64(),
        }
    }
}

type JobQueue = Arc<Mutex<Receiver<Job>>>;

/// Stores `answer` for `key` (under the state lock).
fn store(st: &mut State, key: &str, answer: Answer, expires: Instant) {
    let lookups = st.names.get(key).map_or(1, |e| e.lookups);
    st.names.insert(
        key.to_string(),
        Entry {
            slot: Slot::Ready { answer, expires },
            lookups,
        },
    );
}

/// A resolver thread: takes jobs until the resolver is gone.
fn work(queue: &JobQueue, inner: &Shared) {
    loop {
        let job = {
            let rx = queue.lock().unwrap_or_else(|p| p.into_inner());
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        let answer = resolve(&job.host);
        if answer.is_err() {
            inner.failures.fetch_add(1, Ordering::Relaxed);
        }
        let ttl = Duration::from_millis(inner.ttl_ms.load(Ordering::Relaxed));
        let keep = if answer.is_ok() {
            ttl
        } else {
            ttl.min(NEGATIVE_TTL)
        };
        if let Some(r) = inner.back.get().and_then(std::sync::Weak::upgrade) {
            let mut st = r.state.lock().unwrap_or_else(|p| p.into_inner());
            st.busy = st.busy.saturating_sub(1);
            store(&mut st, &job.key, answer.clone(), Instant::now() + keep);
        }
        let _ = job.tx.send(Some(answer));
    }
}

/// One call of the system resolver; the error text is the probes' own.
fn resolve(host: &str) -> Answer {
    match (host, 0u16).to_socket_addrs() {
        Err(e) => Err(format!("cannot resolve {host}: {e}")),
        Ok(addrs) => {
            let mut ips: Vec<IpAddr> = Vec::new();
            for a in addrs {
                if !ips.contains(&a.ip()) {
                    ips.push(a.ip());
                }
            }
            if ips.is_empty() {
                Err(format!("cannot resolve {host}: no address"))
            } else {
                Ok(Arc::from(ips))
            }
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

static GLOBAL: OnceLock<Arc<Resolver>> = OnceLock::new();

/// The resolver the probes share.
pub fn global() -> &'static Resolver {
    GLOBAL.get_or_init(|| Resolver::new(DEFAULT_TTL))
}

/// [`Resolver::lookup`] on the shared resolver.
pub async fn lookup(host: &str, timeout: Duration) -> Answer {
    global().lookup(host, timeout).await
}

/// Sets the shared cache's lifetime (`dns_cache_sec`; on start and reload).
pub fn set_cache_ttl(ttl: Duration) {
    global().set_ttl(ttl);
}

/// The shared resolver's counters.
pub fn stats() -> ResolverStats {
    global().stats()
}

#[cfg(test)]
mod tests;
