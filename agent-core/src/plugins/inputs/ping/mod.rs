//! `ping`: ICMP echo round trips to each target, PyAgent's fields
//! (`tag address loss minimum maximum average`) plus `stddev` and `jitter`.
//!
//! The native method sends echoes from raw ICMP sockets (tokio-icmp-echo,
//! root or `CAP_NET_RAW`); `method: exec` runs the system `ping` and parses
//! its output, as Telegraf's ping plugin does; `method: auto` tries native
//! and falls back to exec when the raw socket cannot be opened.
mod exec;
pub mod schema;
#[cfg(target_os = "linux")]
mod tune;

use crate::plugin::{Accumulator, Input, PluginResult};
use crate::registry::Registry;
use futures::stream::{FuturesUnordered, StreamExt};
use indexmap::IndexMap;
use serde::Deserialize;
use std::net::IpAddr;
use std::time::Duration;
use tokio::time::Instant;
use tokio_icmp_echo::Pinger;

/// RTT PyAgent reported for a target that never answered, in ms.
use crate::config::Seconds;

pub const NO_REPLY_MS: f64 = 5000.0;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Raw ICMP sockets in-process.
    #[default]
    Native,
    /// The system `ping` binary.
    Exec,
    /// Native, falling back to exec when raw sockets are not allowed.
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
            method: Method::Native,
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
}

impl Params {
    /// Echoes of one target outstanding at once.
    pub(crate) fn in_flight(&self) -> usize {
        if self.interval.is_zero() {
            return self.count as usize;
        }
        let n = (self.timeout.as_secs_f64() / self.interval.as_secs_f64()).ceil() as usize;
        n.clamp(1, self.count.max(1) as usize)
    }
}

pub struct Ping {
    params: Params,
    method: Method,
    binary: String,
    targets: Vec<(String, String)>,
    log: slog::Logger,
    /// What the last socket tuning gave, logged when it changes.
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
        let params = Params {
            count: c.count,
            timeout: cfg.seconds("timeout", c.timeout)?,
            interval: cfg.seconds("interval_ping", c.interval_ping)?,
            resolve_timeout: cfg.seconds("resolve_timeout", c.resolve_timeout)?,
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

/// The message for a raw socket that cannot be opened, saying how to fix it.
pub fn raw_socket_error(e: &std::io::Error) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "<path to agent>".into());
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => format!(
            "cannot open a raw ICMP socket: {e}; ping needs root or CAP_NET_RAW: \
             run `setcap cap_net_raw+ep {exe}` or run the agent as root, \
             or set `method: exec` to use the system ping"
        ),
        _ => format!("cannot open a raw ICMP socket: {e}"),
    }
}

/// Opens the shared raw sockets (one per address family).
pub(crate) async fn open_pinger() -> Result<Pinger, String> {
    match Pinger::new().await {
        Ok(p) => Ok(p),
        Err(tokio_icmp_echo::Error::IoError(e)) => Err(raw_socket_error(&e)),
        Err(e) => Err(format!("cannot open a raw ICMP socket: {e}")),
    }
}

/// What was done to the pinger's sockets: on Linux each raw ICMP socket's
/// receive buffer and filter (see `tune.rs`).
#[cfg(target_os = "linux")]
pub(crate) type Tuning = Vec<tune::Tuned>;
#[cfg(not(target_os = "linux"))]
pub(crate) type Tuning = ();

/// One line saying what the tuning obtained.
#[cfg(target_os = "linux")]
fn describe(t: &Tuning) -> String {
    if t.is_empty() {
        return "could not find the raw ICMP sockets to tune".into();
    }
    t.iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}
#[cfg(not(target_os = "linux"))]
fn describe(_: &Tuning) -> String {
    "default socket options".into()
}

/// Opens the shared raw sockets and, on Linux, gives them a receive buffer
/// sized for `targets` targets with `p`'s echoes in flight and a filter
/// passing only echo replies. Tuning failures are only reported in the
/// returned [`Tuning`].
pub(crate) async fn open_tuned_pinger(
    targets: usize,
    p: Params,
) -> Result<(Pinger, Tuning), String> {
    #[cfg(target_os = "linux")]
    {
        let before = tune::open_fds();
        let pinger = open_pinger().await?;
        let bytes = tune::rcvbuf_for(targets, p.in_flight());
        Ok((pinger, tune::tune_new_sockets(&before, bytes)))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (targets, p);
        Ok((open_pinger().await?, ()))
    }
}

/// Resolves `address` (an IP literal or a host name) under a timeout.
pub(crate) async fn resolve(address: &str, timeout: Duration) -> Result<IpAddr, String> {
    let literal = address.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return Ok(ip);
    }
    match tokio::time::timeout(timeout, tokio::net::lookup_host((address, 0))).await {
        Err(_) => Err(format!(
            "resolving {address} timed out after {:.1}s",
            timeout.as_secs_f64()
        )),
        Ok(Err(e)) => Err(format!("cannot resolve {address}: {e}")),
        Ok(Ok(mut addrs)) => addrs
            .next()
            .map(|a| a.ip())
            .ok_or_else(|| format!("cannot resolve {address}: no address")),
    }
}

/// Sends `count` echoes spaced by `interval`, each waiting up to `timeout`,
/// several in flight at once like the system ping.
pub(crate) async fn ping_native(pinger: &Pinger, ip: IpAddr, ident: u16, p: Params) -> Outcome {
    let mut inflight = FuturesUnordered::new();
    let mut replies: Vec<(u16, f64)> = Vec::with_capacity(p.count as usize);
    let mut error = None;
    let mut sent: u32 = 0;
    let mut next_send = Instant::now();
    loop {
        let result = if sent < p.count {
            tokio::select! {
                _ = tokio::time::sleep_until(next_send) => {
                    let seq = sent as u16;
                    // tokio-icmp-echo matches replies by a random token in
                    // the payload, so concurrent targets never cross-count.
                    let fut = pinger.ping(ip, ident, seq, p.timeout);
                    inflight.push(async move { (seq, fut.await) });
                    sent += 1;
                    next_send += p.interval;
                    continue;
                }
                Some(r) = inflight.next(), if !inflight.is_empty() => r,
            }
        } else {
            match inflight.next().await {
                Some(r) => r,
                None => break,
            }
        };
        match result {
            (seq, Ok(Some(rtt))) => replies.push((seq, rtt.as_secs_f64() * 1000.0)),
            (_, Ok(None)) => {}
            (_, Err(e)) => {
                error.get_or_insert_with(|| match e {
                    tokio_icmp_echo::Error::InvalidProtocol => {
                        format!("no ICMP socket for {ip}'s address family")
                    }
                    _ => format!("sending an echo request to {ip} failed (no route or address not available)"),
                });
            }
        }
    }
    replies.sort_by_key(|r| r.0);
    Outcome {
        sent,
        rtts_ms: replies.into_iter().map(|r| r.1).collect(),
        error,
    }
}

impl Ping {
    async fn gather_native(&self, pinger: &Pinger) -> Vec<Outcome> {
        let p = self.params;
        let n = self.targets.len().max(1) as u32;
        let base: u16 = rand::random();
        let futs = self
            .targets
            .iter()
            .enumerate()
            .map(|(i, (_, address))| async move {
                // Spread the targets' first echoes over one ping interval so a
                // thousand targets do not burst into the socket buffer at once.
                tokio::time::sleep(p.interval * i as u32 / n).await;
                match resolve(address, p.resolve_timeout).await {
                    Ok(ip) => ping_native(pinger, ip, base.wrapping_add(i as u16), p).await,
                    Err(e) => Outcome::failed(p.count, e),
                }
            });
        futures::future::join_all(futs).await
    }

    async fn gather_exec(&self) -> Vec<Outcome> {
        let p = self.params;
        let futs = self
            .targets
            .iter()
            .map(|(_, address)| exec::ping_exec(&self.binary, address, p));
        futures::future::join_all(futs).await
    }
}

impl Input for Ping {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        let mut failure = None;
        let outcomes = match self.method {
            Method::Exec => self.gather_exec().await,
            Method::Native | Method::Auto => {
                match open_tuned_pinger(self.targets.len(), self.params).await {
                    Ok((pinger, tuning)) => {
                        // Logged once, and again only if it changes.
                        let tuned = describe(&tuning);
                        if self.tuned.as_ref() != Some(&tuned) {
                            slog::debug!(self.log, "ping raw sockets: {tuned}");
                            self.tuned = Some(tuned);
                        }
                        self.gather_native(&pinger).await
                    }
                    Err(e) if self.method == Method::Auto => {
                        let mut o = self.gather_exec().await;
                        for x in &mut o {
                            x.error
                                .get_or_insert_with(|| format!("{e}; used the system ping"));
                        }
                        o
                    }
                    Err(e) => {
                        failure = Some(e.clone());
                        let count = self.params.count;
                        self.targets
                            .iter()
                            .map(|_| Outcome::failed(count, e.clone()))
                            .collect()
                    }
                }
            }
        };
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
        // The socket error concerns every target: report it once per gather
        // (the core logs it at most once per interval); the per-target
        // metrics are delivered and the next gather runs on time.
        if let Some(e) = failure {
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
