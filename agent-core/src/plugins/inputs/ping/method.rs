//! Which way each address family is pinged: a raw ICMP socket when the
//! process may open one (root or `CAP_NET_RAW`), else an ICMP datagram
//! socket (`net.ipv4.ping_group_range`), else the system `ping` program.
//! Probed once per plugin instance at its first gather, logged when the
//! choice differs from the one last reported, and shown by `agent status`.
#[cfg(unix)]
use super::icmp::{self, SocketKind};
use super::Method;
use std::sync::Mutex;

/// How one address family is pinged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FamilyMethod {
    /// In-process, on this kind of socket.
    #[cfg(unix)]
    Socket(SocketKind),
    /// The system ping program, and why.
    Exec(String),
    /// Not at all: every target of the family gets this error.
    Unavailable(String),
}

impl FamilyMethod {
    /// A short name for logs and status.
    pub fn name(&self) -> &'static str {
        match self {
            #[cfg(unix)]
            FamilyMethod::Socket(SocketKind::Raw) => "raw",
            #[cfg(unix)]
            FamilyMethod::Socket(SocketKind::Datagram) => "datagram",
            FamilyMethod::Exec(_) => "exec",
            FamilyMethod::Unavailable(_) => "unavailable",
        }
    }

    fn describe(&self) -> String {
        match self {
            #[cfg(unix)]
            FamilyMethod::Socket(k) => k.describe().to_string(),
            FamilyMethod::Exec(why) => format!("the system ping ({why})"),
            FamilyMethod::Unavailable(why) => format!("unavailable: {why}"),
        }
    }
}

/// The methods of both families.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub v4: FamilyMethod,
    pub v6: FamilyMethod,
}

impl Choice {
    /// The log line.
    pub fn describe(&self) -> String {
        if self.v4 == self.v6 {
            return format!("ping: IPv4 and IPv6 via {}", self.v4.describe());
        }
        format!(
            "ping: IPv4 via {}; IPv6 via {}",
            self.v4.describe(),
            self.v6.describe()
        )
    }

    pub fn family(&self, v6: bool) -> &FamilyMethod {
        if v6 {
            &self.v6
        } else {
            &self.v4
        }
    }
}

/// Probes both families for `method`.
pub fn probe(method: Method) -> Choice {
    Choice {
        v4: probe_family(false, method),
        v6: probe_family(true, method),
    }
}

#[cfg(unix)]
fn probe_family(v6: bool, method: Method) -> FamilyMethod {
    if method == Method::Exec {
        return FamilyMethod::Exec("method: exec".into());
    }
    let raw = match icmp::can_open(v6, SocketKind::Raw) {
        Ok(()) => return FamilyMethod::Socket(SocketKind::Raw),
        Err(e) => e,
    };
    if raw.raw_os_error() == Some(libc::EAFNOSUPPORT) {
        return FamilyMethod::Unavailable(format!(
            "this host has no {}: {raw}",
            if v6 { "IPv6" } else { "IPv4" }
        ));
    }
    let dgram = match icmp::can_open(v6, SocketKind::Datagram) {
        Ok(()) => return FamilyMethod::Socket(SocketKind::Datagram),
        Err(e) => e,
    };
    let why = denied(&raw, &dgram);
    match method {
        Method::Auto => FamilyMethod::Exec(why),
        _ => FamilyMethod::Unavailable(format!(
            "{why}; run `setcap cap_net_raw+ep {}`, run the agent as root, allow the \
             agent's group in net.ipv4.ping_group_range, or set `method: auto` to use \
             the system ping",
            exe()
        )),
    }
}

#[cfg(not(unix))]
fn probe_family(_v6: bool, method: Method) -> FamilyMethod {
    let why = "in-process ICMP is implemented on Unix only".to_string();
    match method {
        Method::Native => FamilyMethod::Unavailable(format!("{why}; set `method: auto` or `exec`")),
        _ => FamilyMethod::Exec(why),
    }
}

/// Why neither socket could be opened, naming what would allow each.
#[cfg(unix)]
fn denied(raw: &std::io::Error, dgram: &std::io::Error) -> String {
    let raw_why = match raw.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => "needs root or CAP_NET_RAW",
        _ => "cannot be opened",
    };
    let dgram_why = match dgram.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => format!(
            "group {} is not in net.ipv4.ping_group_range ({})",
            // SAFETY: getegid has no preconditions.
            unsafe { libc::getegid() },
            std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|_| "unreadable".into())
        ),
        _ => "cannot be opened".into(),
    };
    format!(
        "cannot open a raw ICMP socket: {raw} ({raw_why}); \
         cannot open an ICMP datagram socket: {dgram} ({dgram_why})"
    )
}

fn exe() -> String {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "<path to agent>".into())
}

/// The choice last reported, for `agent status`.
static REPORTED: Mutex<Option<Choice>> = Mutex::new(None);

/// Records `choice` for status; `true` when it differs from the last one
/// (so the caller logs it).
pub fn report(choice: &Choice) -> bool {
    let mut last = REPORTED.lock().unwrap_or_else(|p| p.into_inner());
    if last.as_ref() == Some(choice) {
        return false;
    }
    *last = Some(choice.clone());
    true
}

/// What `agent status` shows: `{"ipv4": "raw", "ipv6": "datagram",
/// "detail": "..."}`, or `None` before any ping gather.
pub fn status() -> Option<serde_json::Value> {
    let last = REPORTED.lock().unwrap_or_else(|p| p.into_inner());
    last.as_ref().map(|c| {
        serde_json::json!({
            "ipv4": c.v4.name(),
            "ipv6": c.v6.name(),
            "detail": c.describe(),
        })
    })
}
