//! `telnet`: TCP connect check per target (PyAgent's telnet input), with
//! Telegraf net_response's optional `send`/`expect` banner check.
//!
//! One fractional `timeout` covers name resolution and connecting; a name
//! with several addresses is tried address by address until one accepts.
//! Names come from the shared resolver cache; each check holds one permit
//! of the agent's descriptor budget while its socket is open.
pub mod schema;
use crate::config::{Count, Seconds};
use crate::fd_budget;
use crate::plugin::{Accumulator, Input, PluginResult};
use crate::plugins::common::resolver;
use crate::registry::Registry;
use indexmap::IndexMap;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// `errcode` for a name that could not be resolved (glibc's EAI_NONAME, as
/// Python's `socket.gaierror.errno` reported it).
pub const ERR_RESOLVE: i32 = -2;

/// Most bytes read while waiting for `expect`.
const MAX_READ: usize = 64 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TelnetConfig {
    /// Seconds for resolving and connecting (fractional).
    pub timeout: Seconds,
    /// Seconds to wait for `expect` after connecting; defaults to `timeout`.
    pub read_timeout: Option<Seconds>,
    /// Most checks running at once (1 to 100,000).
    pub worker_limit: Count,
    pub target: IndexMap<String, TelnetTarget>,
}

impl Default for TelnetConfig {
    fn default() -> Self {
        TelnetConfig {
            timeout: Seconds::from_secs(5),
            read_timeout: None,
            worker_limit: Count::from_const(1000),
            target: IndexMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TelnetTarget {
    /// `host:port`, `[v6]:port` or `v4:port`.
    pub address: String,
    pub timeout: Option<Seconds>,
    pub read_timeout: Option<Seconds>,
    /// Connect over IPv6 only.
    pub ipv6: bool,
    /// Written after connecting.
    pub send: Option<String>,
    /// Expected somewhere in what the server sends back.
    pub expect: Option<String>,
}

#[derive(Debug, Clone)]
struct Target {
    tag: String,
    address: String,
    host: String,
    port: u16,
    timeout: Duration,
    read_timeout: Duration,
    ipv6: bool,
    send: Option<String>,
    expect: Option<String>,
}

pub struct Telnet {
    targets: Vec<Target>,
    worker_limit: usize,
}

/// Splits `host:port`, `[v6]:port`; a bare IPv6 address has no port.
pub fn split_host_port(address: &str) -> Result<(String, u16), String> {
    let a = address.trim();
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, p) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{a}`: missing `]` after the IPv6 address"))?;
        let p = p
            .strip_prefix(':')
            .ok_or_else(|| format!("`{a}`: expected `[address]:port`"))?;
        (h, p)
    } else {
        let (h, p) = a
            .rsplit_once(':')
            .ok_or_else(|| format!("`{a}`: expected host:port"))?;
        if h.contains(':') {
            return Err(format!("`{a}`: write IPv6 addresses as [address]:port"));
        }
        (h, p)
    };
    if host.is_empty() {
        return Err(format!("`{a}`: empty host"));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("`{a}`: port must be 1..65535"))?;
    Ok((host.to_string(), port))
}

impl Telnet {
    pub fn from_config(cfg: &crate::config::PluginConfig) -> PluginResult<Self> {
        let c: TelnetConfig = cfg.parse()?;
        let timeout = cfg.seconds("timeout", c.timeout)?;
        let worker_limit = cfg.count("worker_limit", c.worker_limit, 1, 100_000)?;
        let read_timeout = match c.read_timeout {
            Some(v) => cfg.seconds("read_timeout", v)?,
            None => timeout,
        };
        let mut targets = Vec::with_capacity(c.target.len());
        for (tag, t) in c.target {
            let key = format!("target.{tag}");
            let (host, port) =
                split_host_port(&t.address).map_err(|e| cfg.error(&format!("{key}.address"), e))?;
            let timeout = match t.timeout {
                Some(v) => cfg.seconds(&format!("{key}.timeout"), v)?,
                None => timeout,
            };
            let read_timeout = match t.read_timeout {
                Some(v) => cfg.seconds(&format!("{key}.read_timeout"), v)?,
                None => t.timeout.map(|_| timeout).unwrap_or(read_timeout),
            };
            targets.push(Target {
                tag,
                address: t.address.trim().to_string(),
                host,
                port,
                timeout,
                read_timeout,
                ipv6: t.ipv6,
                send: t.send.filter(|s| !s.is_empty()),
                expect: t.expect.filter(|s| !s.is_empty()),
            });
        }
        Ok(Telnet {
            targets,
            worker_limit: worker_limit.as_usize(),
        })
    }
}

/// What one check found.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub open: bool,
    /// OS errno of the failure, 0 when the port accepted.
    pub errcode: i32,
    /// Resolve + connect time, ms.
    pub response_ms: f64,
    pub used_ipv6: bool,
    /// success, timeout, connection_failed or string_mismatch.
    pub result: &'static str,
    pub error: Option<String>,
}

fn io_errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// The target's addresses from the shared resolver (cached, one look-up
/// per name however many targets use it).
async fn resolve(
    host: &str,
    port: u16,
    ipv6_only: bool,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, String> {
    if host.contains('%') {
        // A link-local address with its zone (`fe80::1%eth0`): the scope id
        // must reach connect(), and the shared cache keeps bare addresses.
        return tokio::net::lookup_host((host, port))
            .await
            .map(|a| a.filter(|a| !ipv6_only || a.is_ipv6()).collect())
            .map_err(|e| format!("cannot resolve {host}: {e}"));
    }
    let ips = resolver::lookup(host, timeout).await?;
    let addrs: Vec<SocketAddr> = ips
        .iter()
        .filter(|ip| !ipv6_only || ip.is_ipv6())
        .map(|ip| SocketAddr::new(*ip, port))
        .collect();
    if addrs.is_empty() {
        return Err(format!(
            "cannot resolve {host}: no {}address",
            if ipv6_only { "IPv6 " } else { "" }
        ));
    }
    Ok(addrs)
}

enum ConnectError {
    Resolve(String),
    Io(std::io::Error, bool),
}

/// Tries each address in turn; the first accepted wins, else the last error.
async fn connect(t: &Target) -> Result<(TcpStream, bool), ConnectError> {
    // The check's own timeout (around this) ends a slow look-up first, so
    // it reads "no connection within", as before the shared resolver.
    let addrs = resolve(&t.host, t.port, t.ipv6, t.timeout + Duration::from_secs(1))
        .await
        .map_err(ConnectError::Resolve)?;
    let mut last = None;
    for a in addrs {
        match connect_one(a).await {
            Ok(s) => return Ok((s, a.is_ipv6())),
            Err(e) => last = Some((e, a.is_ipv6())),
        }
    }
    let (e, v6) = last.unwrap_or_else(|| (std::io::Error::other("no address"), t.ipv6));
    Err(ConnectError::Io(e, v6))
}

/// One connect. Out of descriptors (EMFILE/ENFILE: something outside the
/// budget holds more than its reserve) is not the target's fault: wait a
/// little and try again, within the check's timeout.
async fn connect_one(a: SocketAddr) -> std::io::Result<TcpStream> {
    let mut pause = Duration::from_millis(5);
    loop {
        match TcpStream::connect(a).await {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            r => return r,
        }
    }
}

/// Sends `send`, then reads until `expect` shows up, the peer closes, or
/// `read_timeout` passes.
async fn converse(stream: &mut TcpStream, t: &Target) -> (&'static str, Option<String>) {
    let deadline = Instant::now() + t.read_timeout;
    if let Some(s) = &t.send {
        match tokio::time::timeout_at(deadline, stream.write_all(s.as_bytes())).await {
            Err(_) => return ("timeout", Some("sending timed out".into())),
            Ok(Err(e)) => return ("connection_failed", Some(format!("sending failed: {e}"))),
            Ok(Ok(())) => {}
        }
    }
    let Some(expect) = &t.expect else {
        return ("success", None);
    };
    // Read into a heap buffer: a fixed array here would sit in every
    // check's future, a thousand of them at once.
    let mut got = Vec::with_capacity(4096);
    loop {
        if got.len() == got.capacity() {
            got.reserve(4096);
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut got)).await {
            Err(_) if got.is_empty() => {
                return (
                    "timeout",
                    Some(format!(
                        "no answer within {:.3}s",
                        t.read_timeout.as_secs_f64()
                    )),
                )
            }
            Err(_) | Ok(Ok(0)) => break,
            Ok(Err(e)) => return ("connection_failed", Some(format!("reading failed: {e}"))),
            Ok(Ok(_)) => {
                if String::from_utf8_lossy(&got).contains(expect.as_str()) {
                    return ("success", None);
                }
                if got.len() >= MAX_READ {
                    break;
                }
            }
        }
    }
    let shown: String = String::from_utf8_lossy(&got).chars().take(200).collect();
    (
        "string_mismatch",
        Some(format!("expected {expect:?}, got {shown:?}")),
    )
}

async fn check(t: &Target) -> Check {
    // One socket at a time per check, from the agent's budget; waiting for
    // it is not the target's time.
    let _fd = fd_budget::global().acquire(1).await;
    let started = Instant::now();
    let connected = tokio::time::timeout(t.timeout, connect(t)).await;
    let response_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    let failed = |errcode, used_ipv6, result, error: String| Check {
        open: false,
        errcode,
        response_ms,
        used_ipv6,
        result,
        error: Some(error),
    };
    let (mut stream, used_ipv6) = match connected {
        Err(_) => {
            return failed(
                libc::ETIMEDOUT,
                t.ipv6,
                "timeout",
                format!("no connection within {:.3}s", t.timeout.as_secs_f64()),
            )
        }
        Ok(Err(ConnectError::Resolve(e))) => {
            return failed(ERR_RESOLVE, t.ipv6, "connection_failed", e)
        }
        Ok(Err(ConnectError::Io(e, v6))) => {
            return failed(io_errno(&e), v6, "connection_failed", e.to_string())
        }
        Ok(Ok(s)) => s,
    };
    let (result, error) = converse(&mut stream, t).await;
    Check {
        open: true,
        errcode: 0,
        response_ms,
        used_ipv6,
        result,
        error,
    }
}

impl Input for Telnet {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        use futures::stream::StreamExt;
        let checks: Vec<Check> = futures::stream::iter(self.targets.iter().map(check))
            .buffered(self.worker_limit)
            .collect()
            .await;
        for (t, c) in self.targets.iter().zip(checks) {
            let mut m = acc.metric();
            m.fields.reserve(9);
            m.push_field("tag", t.tag.as_str());
            m.push_field("address", t.address.as_str());
            m.push_field("as_ipv6", c.used_ipv6);
            m.push_field("timeout", t.timeout.as_secs_f64());
            m.push_field("yes", c.open);
            m.push_field("errcode", c.errcode as i64);
            m.push_field("response_ms", c.response_ms);
            m.push_field("result", c.result);
            if let Some(e) = c.error {
                m.push_field("error", e);
            }
            acc.add(m);
        }
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_input(
        "telnet",
        "TCP connect check per host:port, with optional banner check",
        include_str!("sample.yaml"),
        Telnet::from_config,
    );
}

#[cfg(test)]
mod tests;
