//! `ping`: ICMP echo round trips to each target, PyAgent's fields
//! (`tag address loss minimum maximum average`) plus `stddev` and `jitter`.
//!
//! In-process, a round's echoes go out from one ICMP socket per address
//! family (`icmp.rs`), paced over the round; each family uses a raw socket
//! when allowed, else an unprivileged ICMP datagram socket, else (with
//! `method: auto`, the default) the system `ping` (`exec.rs`), as chosen
//! once by `method.rs`.
mod exec;
#[cfg(unix)]
mod icmp;
pub mod method;
pub mod schema;
#[cfg(target_os = "linux")]
mod tune;

use crate::config::Seconds;
use crate::plugin::{Accumulator, Input, PluginResult};
use crate::registry::Registry;
use futures::stream::StreamExt;
use indexmap::IndexMap;
use method::{Choice, FamilyMethod};
use serde::Deserialize;
use std::net::IpAddr;
use std::time::Duration;

/// RTT PyAgent reported for a target that never answered, in ms.
pub const NO_REPLY_MS: f64 = 5000.0;

/// Echoes per second of a round, all targets together, unless configured.
pub const DEFAULT_MAX_RATE: f64 = 10_000.0;

/// System ping processes running at once (`exec`).
const EXEC_CONCURRENCY: usize = 64;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// In-process: a raw ICMP socket, else an ICMP datagram socket.
    Native,
    /// The system `ping` binary.
    Exec,
    /// Native, falling back to the system ping when neither socket may be
    /// opened.
    #[default]
    Auto,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PingConfig {
    /// Echoes per target per gather.
    pub count: u32,
    /// Seconds to wait for each reply (fractional).
    pub timeout: Seconds,
    /// Seconds between two echoes to the same target.
    pub interval_ping: Seconds,
    /// Seconds allowed for resolving a host name.
    pub resolve_timeout: Seconds,
    /// Echoes per second at most, all targets together (fping's `-i`).
    pub max_rate: f64,
    pub method: Method,
    /// The system ping program for `method: exec`.
    pub binary: String,
    pub target: IndexMap<String, PingTarget>,
}

impl Default for PingConfig {
    fn default() -> Self {
        PingConfig {
            count: 60,
            timeout: Seconds::from_millis(700),
            interval_ping: Seconds::from_millis(100),
            resolve_timeout: Seconds::from_secs(5),
            max_rate: DEFAULT_MAX_RATE,
            method: Method::Auto,
            binary: "ping".into(),
            target: IndexMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PingTarget {
    pub address: String,
}

/// The checked settings of one gather.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    pub count: u32,
    pub timeout: Duration,
    pub interval: Duration,
    pub resolve_timeout: Duration,
    /// Echoes per second at most, all targets together.
    pub max_rate: f64,
    /// The share of the gather interval a round may take.
    pub budget: Option<Duration>,
}

pub struct Ping {
    params: Params,
    method: Method,
    binary: String,
    targets: Vec<(String, String)>,
    log: slog::Logger,
    /// How each family is pinged: probed at the first gather.
    choice: Option<Choice>,
    /// What the last round's sockets and pacing were, logged when it
    /// changes.
    tuned: Option<String>,
}

impl Ping {
    pub fn from_config(cfg: &crate::config::PluginConfig) -> PluginResult<Self> {
        let c: PingConfig = cfg.parse()?;
        if c.count == 0 || c.count > 65535 {
            return Err(cfg
                .error("count", format!("must be 1..65535, got {}", c.count))
                .into());
        }
        if !(c.max_rate.is_finite() && (1.0..=1_000_000.0).contains(&c.max_rate)) {
            return Err(cfg
                .error(
                    "max_rate",
                    format!("must be 1..1000000 echoes per second, got {}", c.max_rate),
                )
                .into());
        }
        let params = Params {
            count: c.count,
            timeout: cfg.seconds("timeout", c.timeout)?,
            interval: cfg.seconds("interval_ping", c.interval_ping)?,
            resolve_timeout: cfg.seconds("resolve_timeout", c.resolve_timeout)?,
            max_rate: c.max_rate,
            // The core abandons a gather that outlives its interval: a
            // round keeps a tenth of it in hand.
            budget: cfg.interval.map(|i| i.mul_f64(0.9)),
        };
        let mut targets = Vec::with_capacity(c.target.len());
        for (tag, t) in c.target {
            let address = t.address.trim().to_string();
            if address.is_empty() {
                return Err(cfg
                    .error(&format!("target.{tag}.address"), "is empty")
                    .into());
            }
            targets.push((tag, address));
        }
        Ok(Ping {
            params,
            method: c.method,
            binary: c.binary,
            targets,
            log: cfg.log().clone(),
            choice: None,
            tuned: None,
        })
    }
}

/// What one target's echoes gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Outcome {
    pub sent: u32,
    /// Round trips in ms of the replies received, in sequence order.
    pub rtts_ms: Vec<f64>,
    /// Set when something other than plain silence went wrong.
    pub error: Option<String>,
}

/// Summary statistics, in ms and %.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stats {
    pub loss: f64,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
    pub stddev: f64,
    pub jitter: f64,
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

impl Outcome {
    pub(crate) fn failed(sent: u32, error: String) -> Self {
        Outcome {
            sent,
            rtts_ms: Vec::new(),
            error: Some(error),
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        let n = self.rtts_ms.len();
        let sent = self.sent.max(1) as f64;
        let received = (n as f64).min(sent);
        let loss = ((sent - received) / sent * 100.0 * 100.0).round() / 100.0;
        if n == 0 {
            return Stats {
                loss: 100.0,
                min: NO_REPLY_MS,
                max: NO_REPLY_MS,
                avg: NO_REPLY_MS,
                stddev: 0.0,
                jitter: 0.0,
            };
        }
        let min = self.rtts_ms.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self
            .rtts_ms
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        let avg = self.rtts_ms.iter().sum::<f64>() / n as f64;
        let var = self
            .rtts_ms
            .iter()
            .map(|r| (r - avg) * (r - avg))
            .sum::<f64>()
            / n as f64;
        // Mean absolute difference of consecutive replies (RFC 3550's idea).
        let jitter = if n > 1 {
            self.rtts_ms
                .windows(2)
                .map(|w| (w[1] - w[0]).abs())
                .sum::<f64>()
                / (n - 1) as f64
        } else {
            0.0
        };
        Stats {
            loss,
            min: round3(min),
            max: round3(max),
            avg: round3(avg),
            stddev: round3(var.sqrt()),
            jitter: round3(jitter),
        }
    }
}

/// Resolves `address` (an IP literal or a host name) under a timeout,
/// through the probes' shared cache (one look-up per name per lifetime).
pub(crate) async fn resolve(address: &str, timeout: Duration) -> Result<IpAddr, String> {
    let addrs = crate::plugins::common::resolver::lookup(address, timeout).await?;
    addrs
        .first()
        .copied()
        .ok_or_else(|| format!("cannot resolve {address}: no address"))
}

/// The in-process part of a gather: opens the sockets the targets need,
/// runs one paced round, and gives each target's outcome.
#[cfg(unix)]
mod native {
    use super::icmp::{self, IcmpSocket, Pacing, RoundTarget, SocketKind};
    use super::{Outcome, Params};
    use std::net::IpAddr;

    /// The sockets of a round and what they were given.
    pub(super) struct Sockets {
        pub v4: Option<IcmpSocket>,
        pub v6: Option<IcmpSocket>,
        /// Per family, the socket's error when it could not be opened.
        pub v4_error: Option<String>,
        pub v6_error: Option<String>,
        /// Replies the smallest receive buffer holds.
        pub queue_replies: usize,
        pub tuning: Vec<String>,
    }

    /// Opens a `kind` socket for each family that has targets, tuned for
    /// `rate` echoes a second.
    pub(super) fn open(v4: Option<SocketKind>, v6: Option<SocketKind>, rate: f64) -> Sockets {
        let mut s = Sockets {
            v4: None,
            v6: None,
            v4_error: None,
            v6_error: None,
            queue_replies: usize::MAX,
            tuning: Vec::new(),
        };
        for (is_v6, kind) in [(false, v4), (true, v6)] {
            let Some(kind) = kind else { continue };
            match IcmpSocket::open(is_v6, kind) {
                Ok(sock) => {
                    #[cfg(target_os = "linux")]
                    {
                        let t = super::tune::tune(
                            sock.raw_fd(),
                            is_v6,
                            kind,
                            super::tune::rcvbuf_for(rate),
                        );
                        s.queue_replies =
                            s.queue_replies.min(t.rcvbuf / super::tune::BYTES_PER_REPLY);
                        s.tuning.push(t.to_string());
                    }
                    #[cfg(not(target_os = "linux"))]
                    let _ = rate;
                    if is_v6 {
                        s.v6 = Some(sock);
                    } else {
                        s.v4 = Some(sock);
                    }
                }
                Err(e) => {
                    let msg = format!("cannot open an {}: {e}", kind.describe());
                    if is_v6 {
                        s.v6_error = Some(msg);
                    } else {
                        s.v4_error = Some(msg);
                    }
                }
            }
        }
        if s.queue_replies == usize::MAX {
            s.queue_replies = 0;
        }
        s
    }

    /// The send rate a round may use: the configured one, lowered so the
    /// receive buffer holds a fifth of a second of replies (the agent's
    /// thread may be busy elsewhere that long without the kernel dropping
    /// any).
    pub(super) fn safe_rate(p: &Params, queue_replies: usize) -> f64 {
        if queue_replies == 0 {
            return p.max_rate;
        }
        p.max_rate.min(queue_replies as f64 * 5.0).max(1.0)
    }

    /// Runs one round over `targets` (index into the gather's outcomes,
    /// address) and writes their outcomes.
    pub(super) async fn round(
        s: &Sockets,
        targets: &[(usize, IpAddr)],
        p: &Params,
        pacing: Pacing,
        outcomes: &mut [Option<Outcome>],
    ) -> u64 {
        let list: Vec<RoundTarget> = targets.iter().map(|&(_, ip)| RoundTarget { ip }).collect();
        let r = icmp::run_round(
            s.v4.as_ref(),
            s.v6.as_ref(),
            &list,
            p.count,
            p.timeout,
            pacing,
        )
        .await;
        for (j, &(i, _)) in targets.iter().enumerate() {
            outcomes[i] = Some(Outcome {
                sent: r.sent[j],
                rtts_ms: r.rtts(j).collect(),
                error: r.errors[j].clone(),
            });
        }
        r.late_or_duplicate
    }
}

impl Ping {
    /// The methods, probing them at the first gather (and again after a
    /// socket that was allowed could not be opened).
    fn choice(&mut self) -> Choice {
        if let Some(c) = &self.choice {
            return c.clone();
        }
        let c = method::probe(self.method);
        if method::report(&c) {
            slog::info!(self.log, "{}", c.describe());
        }
        self.choice = Some(c.clone());
        c
    }

    /// Logs `line` once, and again only if it changes.
    fn note(&mut self, line: String) {
        if self.tuned.as_ref() != Some(&line) {
            slog::debug!(self.log, "{line}");
            self.tuned = Some(line);
        }
    }

    /// Every target's outcome, and the errors of whole address families.
    async fn gather_outcomes(&mut self) -> (Vec<Outcome>, Vec<String>) {
        let p = self.params;
        let choice = self.choice();
        // Names first (each at most resolve_timeout), then one round.
        // (Futures collected first: a stream's `map` closure over borrowed
        // items trips the Send check of the gather's future.)
        let lookups: Vec<_> = self
            .targets
            .iter()
            .map(|(_, address)| resolve(address, p.resolve_timeout))
            .collect();
        let resolved: Vec<Result<IpAddr, String>> = futures::stream::iter(lookups)
            .buffered(EXEC_CONCURRENCY)
            .collect()
            .await;
        let mut outcomes: Vec<Option<Outcome>> = vec![None; self.targets.len()];
        let mut in_process: Vec<(usize, IpAddr)> = Vec::new();
        let mut by_exec: Vec<(usize, IpAddr)> = Vec::new();
        let mut shared: Vec<String> = Vec::new();
        let mut share = |e: &String| {
            if !shared.contains(e) {
                shared.push(e.clone());
            }
        };
        for (i, r) in resolved.into_iter().enumerate() {
            match r {
                Err(e) => outcomes[i] = Some(Outcome::failed(p.count, e)),
                Ok(ip) => match choice.family(ip.is_ipv6()) {
                    #[cfg(unix)]
                    FamilyMethod::Socket(_) => in_process.push((i, ip)),
                    FamilyMethod::Exec(_) => by_exec.push((i, ip)),
                    FamilyMethod::Unavailable(why) => {
                        share(why);
                        outcomes[i] = Some(Outcome::failed(p.count, why.clone()))
                    }
                },
            }
        }
        let binary = self.binary.clone();
        let binary = binary.as_str();
        let runs: Vec<_> = by_exec
            .iter()
            .map(|&(i, ip)| async move {
                // A child's stdin, stdout and stderr pipes, from the
                // agent's descriptor budget.
                let _fd = crate::fd_budget::global().acquire(3).await;
                (i, exec::ping_exec(binary, &ip.to_string(), p).await)
            })
            .collect();
        let exec_round = futures::stream::iter(runs)
            .buffer_unordered(EXEC_CONCURRENCY)
            .collect::<Vec<_>>();
        #[cfg(unix)]
        let (exec_outcomes, reopen) = {
            let kind = |v6: bool| match choice.family(v6) {
                FamilyMethod::Socket(k) => in_process
                    .iter()
                    .any(|(_, ip)| ip.is_ipv6() == v6)
                    .then_some(*k),
                _ => None,
            };
            let (k4, k6) = (kind(false), kind(true));
            let mut reopen = false;
            let exec_outcomes = if k4.is_none() && k6.is_none() {
                exec_round.await
            } else {
                // One descriptor per socket, from the agent's budget.
                let _fd = crate::fd_budget::global()
                    .acquire(u32::from(k4.is_some()) + u32::from(k6.is_some()))
                    .await;
                let sockets = native::open(k4, k6, p.max_rate);
                let rate = native::safe_rate(&p, sockets.queue_replies);
                let pacing = icmp::Pacing::new(
                    in_process.len(),
                    p.count,
                    p.interval,
                    p.timeout,
                    rate,
                    p.budget,
                );
                let mut line = sockets.tuning.join("; ");
                line.push_str(&format!(
                    "; {} targets, an echo every {:.3} ms ({:.0}/s), each target's every {:.3} s, round {:.1} s{}",
                    in_process.len(),
                    pacing.gap.as_secs_f64() * 1000.0,
                    1.0 / pacing.gap.as_secs_f64().max(1e-9),
                    pacing.per_target.as_secs_f64(),
                    pacing.duration.as_secs_f64(),
                    if pacing.compressed { " (faster than max_rate, to finish inside the interval)" } else { "" }
                ));
                if pacing.compressed && self.tuned.as_deref() != Some(line.as_str()) {
                    slog::warn!(
                        self.log,
                        "ping: {} targets × {} echoes do not fit in the interval at {:.0} echoes/s; sending at {:.0}/s",
                        in_process.len(), p.count, rate, 1.0 / pacing.gap.as_secs_f64().max(1e-9)
                    );
                }
                self.note(line);
                // A family whose socket failed: its targets get the error.
                let mut open_targets = Vec::with_capacity(in_process.len());
                for &(i, ip) in &in_process {
                    let err = if ip.is_ipv6() {
                        &sockets.v6_error
                    } else {
                        &sockets.v4_error
                    };
                    match err {
                        Some(e) => {
                            reopen = true;
                            share(e);
                            outcomes[i] = Some(Outcome::failed(p.count, e.clone()));
                        }
                        None => open_targets.push((i, ip)),
                    }
                }
                let (exec_outcomes, _late) = futures::join!(
                    exec_round,
                    native::round(&sockets, &open_targets, &p, pacing, &mut outcomes)
                );
                exec_outcomes
            };
            (exec_outcomes, reopen)
        };
        #[cfg(not(unix))]
        let (exec_outcomes, reopen) = (exec_round.await, false);
        // The method was chosen once and reported (log, `agent status`):
        // the system ping's results carry no error of their own.
        for (i, o) in exec_outcomes {
            outcomes[i] = Some(o);
        }
        if reopen {
            // Probe again next time: the rights may have changed.
            self.choice = None;
        }
        let outcomes = outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::failed(p.count, "not pinged".into())))
            .collect();
        (outcomes, shared)
    }
}

impl Input for Ping {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        let (outcomes, shared) = self.gather_outcomes().await;
        for ((tag, address), o) in self.targets.iter().zip(outcomes) {
            let s = o.stats();
            let mut m = acc.metric();
            m.fields.reserve(9);
            m.push_field("tag", tag.as_str());
            m.push_field("address", address.as_str());
            m.push_field("loss", s.loss);
            m.push_field("minimum", s.min);
            m.push_field("maximum", s.max);
            m.push_field("average", s.avg);
            m.push_field("stddev", s.stddev);
            m.push_field("jitter", s.jitter);
            if let Some(e) = o.error {
                m.push_field("error", e);
            }
            acc.add(m);
        }
        // An error of a whole address family (no way to ping it) is also
        // the gather's error, reported once per gather (the core logs it at
        // most once per interval); the per-target metrics are delivered.
        for e in shared {
            acc.add_error(e);
        }
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_input(
        "ping",
        "ICMP echo loss and round-trip times per target",
        include_str!("sample.yaml"),
        Ping::from_config,
    );
}

#[cfg(test)]
mod tests;
