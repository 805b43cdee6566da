//! The in-process echo engine (Unix): one ICMP socket per address family
//! for a whole round, echo requests paced by one sender over the round,
//! replies matched to their target by index, not by search.
//!
//! Why not one future per echo (tokio-icmp-echo): at 10,000 targets that is
//! tens of thousands of timers and map entries per second on the agent's
//! thread, which then reads its socket late; the kernel drops the queued
//! replies and ping reports loss that is not on the network. Here a round
//! is two loops over plain arrays: a sender that wakes every millisecond
//! and sends what is due, and a receiver that drains the socket.
//!
//! Two socket kinds serve: raw ICMP sockets (root or `CAP_NET_RAW`) and
//! ICMP datagram sockets (`SOCK_DGRAM`/`IPPROTO_ICMP`, unprivileged when the
//! process's group is in `net.ipv4.ping_group_range`). A datagram socket's
//! identifier is chosen by the kernel and only its own replies reach it; a
//! raw socket sees every echo reply of the host, so replies are recognised
//! by identifier, a random per-round token, the target's index and address.
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How a socket reaches ICMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// `SOCK_RAW`: root or `CAP_NET_RAW`.
    Raw,
    /// `SOCK_DGRAM` with `IPPROTO_ICMP`: allowed by `ping_group_range`.
    Datagram,
}

impl SocketKind {
    pub fn describe(self) -> &'static str {
        match self {
            SocketKind::Raw => "raw ICMP socket",
            SocketKind::Datagram => "ICMP datagram socket",
        }
    }
}

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
/// ICMP header (type, code, checksum, identifier, sequence).
const HEADER: usize = 8;
/// Payload: round token (4), target index (4), echo number (4), send time
/// in ns since the round's start (8), padding to PyAgent's 32-byte echo.
const PAYLOAD: usize = 24;
const PACKET: usize = HEADER + PAYLOAD;

/// One nonblocking ICMP socket registered with the runtime.
pub struct IcmpSocket {
    fd: AsyncFd<OwnedFd>,
    pub v6: bool,
    pub kind: SocketKind,
}

impl IcmpSocket {
    /// Opens an ICMP (`v6`: ICMPv6) socket of `kind`. Must run inside the
    /// tokio runtime.
    pub fn open(v6: bool, kind: SocketKind) -> io::Result<Self> {
        let fd = open_fd(v6, kind)?;
        // SAFETY: the OwnedFd stays open, and is the same descriptor, for
        // as long as the AsyncFd owns it.
        let fd = unsafe {
            AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE)
        }?;
        Ok(IcmpSocket { fd, v6, kind })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.get_ref().as_raw_fd()
    }

    /// Sends one packet to `ip`, waiting while the send buffer is full.
    async fn send_to(&self, pkt: &[u8], ip: IpAddr) -> io::Result<()> {
        let (addr, len) = sockaddr(ip);
        loop {
            let mut guard = self.fd.writable().await?;
            let r = guard.try_io(|fd| {
                // SAFETY: `pkt` and `addr` are live for the call; `len` is
                // the size of the address written into `addr`.
                let n = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        pkt.as_ptr().cast(),
                        pkt.len(),
                        libc::MSG_DONTWAIT,
                        (&addr as *const libc::sockaddr_storage).cast(),
                        len,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match r {
                Ok(Ok(())) => return Ok(()),
                // The device queue is full (loopback's backlog): a short
                // pause, as the system ping does, rather than a lost echo.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads one queued packet without waiting: its length and sender, or
    /// `None` when nothing is queued.
    fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<(usize, IpAddr)>> {
        // SAFETY: zeroed sockaddr_storage is a valid value.
        let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: `buf`, `from` and `len` are valid for writes of the
        // sizes given.
        let n = unsafe {
            libc::recvfrom(
                self.raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut from as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                // A pending ICMP error or a signal: not a reply, try again.
                io::ErrorKind::Interrupted | io::ErrorKind::ConnectionRefused => {
                    Ok(Some((0, ip_unspecified())))
                }
                _ => Err(e),
            };
        }
        Ok(Some((
            n as usize,
            ip_of(&from).unwrap_or_else(ip_unspecified),
        )))
    }
}

fn ip_unspecified() -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
}

fn open_fd(v6: bool, kind: SocketKind) -> io::Result<OwnedFd> {
    let domain = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    let ty = match kind {
        SocketKind::Raw => libc::SOCK_RAW,
        SocketKind::Datagram => libc::SOCK_DGRAM,
    };
    let proto = if v6 {
        libc::IPPROTO_ICMPV6
    } else {
        libc::IPPROTO_ICMP
    };
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Tries to open (and closes) a socket: how the methods are probed.
pub fn can_open(v6: bool, kind: SocketKind) -> io::Result<()> {
    open_fd(v6, kind).map(drop)
}

fn sockaddr(ip: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed sockaddr_storage is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match ip {
        IpAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for
            // sockaddr_in.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(v6) => {
            // SAFETY: zeroed sockaddr_in6 is a valid value.
            let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: v6.octets(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn ip_of(ss: &libc::sockaddr_storage) -> Option<IpAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*(ss as *const libc::sockaddr_storage).cast() };
            Some(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast() };
            Some(IpAddr::from(sin6.sin6_addr.s6_addr))
        }
        _ => None,
    }
}

/// Internet checksum (RFC 1071). The kernel computes ICMPv6's, and a
/// datagram socket's, itself; a raw ICMPv4 socket sends what it is given.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One echo request.
fn echo_request(
    v6: bool,
    ident: u16,
    token: u32,
    target: u32,
    echo: u32,
    sent_ns: u64,
) -> [u8; PACKET] {
    let mut p = [0u8; PACKET];
    p[0] = if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 };
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    // The per-target sequence number, as the system ping numbers echoes.
    p[6..8].copy_from_slice(&(echo as u16).to_be_bytes());
    p[8..12].copy_from_slice(&token.to_be_bytes());
    p[12..16].copy_from_slice(&target.to_be_bytes());
    p[16..20].copy_from_slice(&echo.to_be_bytes());
    p[20..28].copy_from_slice(&sent_ns.to_be_bytes());
    p[28..32].copy_from_slice(&0x5a5a_5a5au32.to_be_bytes());
    if !v6 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// What a received packet says, if it is an echo reply of this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reply {
    pub target: u32,
    pub echo: u32,
    pub sent_ns: u64,
}

/// Parses a received packet: a raw ICMPv4 socket delivers the IP header
/// first; ICMPv6 and datagram sockets deliver the ICMP message alone.
pub(crate) fn parse_reply(
    buf: &[u8],
    v6: bool,
    kind: SocketKind,
    ident: u16,
    token: u32,
) -> Option<Reply> {
    let icmp = if !v6 && kind == SocketKind::Raw {
        let first = *buf.first()?;
        if first >> 4 != 4 {
            return None;
        }
        buf.get(usize::from(first & 0x0f) * 4..)?
    } else {
        buf
    };
    if icmp.len() < PACKET {
        return None;
    }
    let reply = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
    if icmp[0] != reply || icmp[1] != 0 {
        return None;
    }
    let be32 = |i: usize| u32::from_be_bytes([icmp[i], icmp[i + 1], icmp[i + 2], icmp[i + 3]]);
    // A datagram socket's identifier is the kernel's, and only its own
    // replies reach it; a raw socket sees every reply of the host.
    if kind == SocketKind::Raw && u16::from_be_bytes([icmp[4], icmp[5]]) != ident {
        return None;
    }
    if be32(8) != token {
        return None;
    }
    let mut ns = [0u8; 8];
    ns.copy_from_slice(&icmp[20..28]);
    Some(Reply {
        target: be32(12),
        echo: be32(16),
        sent_ns: u64::from_be_bytes(ns),
    })
}

/// When each echo leaves: targets in turn, `gap` apart, so echo `e` of
/// the `j`-th target leaves at `(e × n + j) × gap` and one target's echoes
/// are `n × gap` apart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    /// Between two echoes of the whole round.
    pub gap: Duration,
    /// Between two echoes of one target (`n × gap`).
    pub per_target: Duration,
    /// From the first echo to the end of the last one's wait.
    pub duration: Duration,
    /// Set when the round had to send faster than `max_rate` to finish
    /// inside its time budget.
    pub compressed: bool,
}

impl Pacing {
    /// `n` targets × `count` echoes, one target's echoes at least
    /// `interval` apart, at most `max_rate` echoes a second, the round
    /// finishing within `budget` (the gather interval's share) if one is
    /// given.
    pub fn new(
        n: usize,
        count: u32,
        interval: Duration,
        timeout: Duration,
        max_rate: f64,
        budget: Option<Duration>,
    ) -> Pacing {
        let n_f = n.max(1) as f64;
        let total = n_f * f64::from(count.max(1));
        // fping's rule: a per-target period, and a floor on the gap
        // between any two packets.
        let mut gap = (interval.as_secs_f64() / n_f).max(1.0 / max_rate.max(1.0));
        let mut compressed = false;
        if let Some(budget) = budget {
            let room = budget.as_secs_f64() - timeout.as_secs_f64();
            // The last echo leaves at (total - 1) × gap.
            if room > 0.0 && (total - 1.0) * gap > room {
                gap = room / total;
                compressed = true;
            }
        }
        let gap = Duration::from_secs_f64(gap);
        Pacing {
            gap,
            per_target: gap.mul_f64(n_f),
            duration: gap.mul_f64((total - 1.0).max(0.0)) + timeout,
            compressed,
        }
    }
}

/// One target of a round.
pub(crate) struct RoundTarget {
    pub ip: IpAddr,
}

/// What one round gave: per target, echoes sent, round trips (ms, NaN for
/// no reply, in echo order) and the first send error.
pub(crate) struct RoundResult {
    pub count: u32,
    pub sent: Vec<u32>,
    pub rtt_ms: Vec<f32>,
    pub errors: Vec<Option<String>>,
    /// Replies that arrived after their timeout or twice (duplicates).
    pub late_or_duplicate: u64,
}

impl RoundResult {
    pub fn rtts(&self, target: usize) -> impl Iterator<Item = f64> + '_ {
        let c = self.count as usize;
        self.rtt_ms[target * c..(target + 1) * c]
            .iter()
            .filter(|r| !r.is_nan())
            .map(|&r| f64::from(r))
    }
}

/// Echoes sent at once at most per wake-up, so replies are read between.
const SEND_BURST: usize = 256;

/// The state of one round while it runs.
struct Round<'a> {
    targets: &'a [RoundTarget],
    count: usize,
    timeout: Duration,
    token: u32,
    ident: u16,
    start: Instant,
    res: RoundResult,
    buf: Vec<u8>,
    recv_error: Option<String>,
}

impl Round<'_> {
    /// Reads every queued packet of `sock`, recording this round's replies.
    fn drain(&mut self, sock: &IcmpSocket) {
        let (n, c) = (self.targets.len(), self.count);
        loop {
            let (len, from) = match sock.try_recv(&mut self.buf) {
                Ok(Some(x)) => x,
                Ok(None) => return,
                Err(e) => {
                    self.recv_error.get_or_insert_with(|| {
                        format!("receiving on the {}: {e}", sock.kind.describe())
                    });
                    return;
                }
            };
            let Some(r) = parse_reply(&self.buf[..len], sock.v6, sock.kind, self.ident, self.token)
            else {
                continue;
            };
            let (t, e) = (r.target as usize, r.echo as usize);
            // Index and address both checked: a forged or stray reply
            // cannot land on another target.
            if t >= n || e >= c || self.targets[t].ip != from || r.echo >= self.res.sent[t] {
                continue;
            }
            let rtt = self
                .start
                .elapsed()
                .saturating_sub(Duration::from_nanos(r.sent_ns));
            let slot = &mut self.res.rtt_ms[t * c + e];
            if rtt > self.timeout || !slot.is_nan() {
                self.res.late_or_duplicate += 1;
                continue;
            }
            *slot = (rtt.as_secs_f64() * 1000.0) as f32;
        }
    }

    /// Sends echo number `next` (in send order).
    async fn send(&mut self, next: usize, v4: Option<&IcmpSocket>, v6: Option<&IcmpSocket>) {
        let n = self.targets.len();
        let (e, t) = (next / n, next % n);
        let ip = self.targets[t].ip;
        let Some(sock) = (if ip.is_ipv6() { v6 } else { v4 }) else {
            self.res.sent[t] += 1;
            self.res.errors[t]
                .get_or_insert_with(|| format!("no ICMP socket for {ip}'s address family"));
            return;
        };
        let sent_ns = self.start.elapsed().as_nanos() as u64;
        let pkt = echo_request(sock.v6, self.ident, self.token, t as u32, e as u32, sent_ns);
        // Counted before the send: a reply only matches an echo counted.
        self.res.sent[t] += 1;
        if let Err(err) = sock.send_to(&pkt, ip).await {
            self.res.errors[t].get_or_insert_with(|| send_error(ip, &err));
        }
    }
}

/// Runs one round over `targets`: `count` echoes each, paced by `pacing`,
/// a reply counted when it comes within `timeout`. IPv4 targets use `v4`,
/// IPv6 targets `v6`; a target whose family has no socket gets an error.
pub(crate) async fn run_round(
    v4: Option<&IcmpSocket>,
    v6: Option<&IcmpSocket>,
    targets: &[RoundTarget],
    count: u32,
    timeout: Duration,
    pacing: Pacing,
) -> RoundResult {
    let n = targets.len();
    let c = count as usize;
    let mut round = Round {
        targets,
        count: c,
        timeout,
        token: rand::random(),
        ident: rand::random(),
        start: Instant::now(),
        res: RoundResult {
            count,
            sent: vec![0; n],
            rtt_ms: vec![f32::NAN; n * c],
            errors: vec![None; n],
            late_or_duplicate: 0,
        },
        buf: vec![0u8; 2048],
        recv_error: None,
    };
    if n == 0 || c == 0 {
        return round.res;
    }
    let total = n * c;
    let tstart = tokio::time::Instant::from_std(round.start);
    let deadline = tstart + pacing.gap.mul_f64((total - 1) as f64) + timeout;
    let mut next = 0usize;
    loop {
        let sending = next < total;
        let due = tstart + pacing.gap.mul_f64(next as f64);
        tokio::select! {
            r = readable(v4) => match r {
                Ok(s) => round.drain(s),
                Err(e) => {
                    round.recv_error.get_or_insert_with(|| format!("waiting on the ICMP socket: {e}"));
                }
            },
            r = readable(v6) => match r {
                Ok(s) => round.drain(s),
                Err(e) => {
                    round.recv_error.get_or_insert_with(|| format!("waiting on the ICMPv6 socket: {e}"));
                }
            },
            _ = tokio::time::sleep_until(due), if sending => {
                // Everything due by now, in a bounded burst (the timer's
                // resolution is a millisecond; the gap may be less).
                let now = round.start.elapsed();
                let mut burst = 0;
                while next < total && burst < SEND_BURST && pacing.gap.mul_f64(next as f64) <= now {
                    round.send(next, v4, v6).await;
                    next += 1;
                    burst += 1;
                }
            }
            _ = tokio::time::sleep_until(deadline), if !sending => break,
        }
    }
    // What is already queued counts if it came in time.
    for s in [v4, v6].into_iter().flatten() {
        round.drain(s);
    }
    let Round {
        mut res,
        recv_error,
        ..
    } = round;
    if let Some(e) = recv_error {
        for err in res.errors.iter_mut() {
            err.get_or_insert_with(|| e.clone());
        }
    }
    res
}

/// Waits until `s` has something queued (never, without a socket).
async fn readable(s: Option<&IcmpSocket>) -> io::Result<&IcmpSocket> {
    match s {
        Some(s) => {
            let mut guard = s.fd.readable().await?;
            // Cleared before the drain: a packet arriving during it wakes
            // the next wait.
            guard.clear_ready();
            Ok(s)
        }
        None => std::future::pending().await,
    }
}

fn send_error(ip: IpAddr, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH) => {
            format!("sending an echo request to {ip} failed: no route ({e})")
        }
        Some(libc::EADDRNOTAVAIL) | Some(libc::EINVAL) => {
            format!("sending an echo request to {ip} failed: address not available ({e})")
        }
        _ => format!("sending an echo request to {ip} failed: {e}"),
    }
}
