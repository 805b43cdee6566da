//! Linux: a larger receive buffer on the round's ICMP sockets, and a
//! kernel filter on raw ones.
//!
//! A raw ICMP socket receives every ICMP packet the host gets, and on
//! loopback that includes each echo *request* the agent sends. With a
//! thousand targets that is ~20,000 packets/s into the default 208 KiB
//! buffer (~250 packets), which overflows whenever the agent's thread is
//! busy for a few ms: the kernel drops replies and ping reports loss that
//! is not on the network. A datagram socket only receives its own replies,
//! but its buffer is capped by net.core.rmem_max for an unprivileged
//! process: the round's send rate is lowered to what it holds.
use super::icmp::SocketKind;
use std::io;
use std::os::fd::RawFd;

/// `ICMP_FILTER` (linux/icmp.h): at `SOL_RAW`, a u32 mask of the ICMPv4
/// types to drop.
const ICMP_FILTER: libc::c_int = 1;
/// `ICMP6_FILTER` (netinet/icmp6.h): at `IPPROTO_ICMPV6`, 256 bits, a set
/// bit blocks that ICMPv6 type.
const ICMP6_FILTER: libc::c_int = 1;
const ICMP_ECHO_REPLY: u32 = 0;
const ICMP6_ECHO_REPLY: u32 = 129;

/// The kernel's accounting for one queued echo reply (skb truesize; 832
/// bytes measured for a 52-byte loopback reply), rounded up.
pub(crate) const BYTES_PER_REPLY: usize = 1024;
/// Upper bound of the receive buffer asked for (~4,000 replies, 0.4 s at
/// the default 10,000 echoes/s). Only queued packets use memory.
pub(crate) const MAX_RCVBUF: usize = 4 << 20;
/// Never ask for less than the usual default (`net.core.rmem_default`).
pub(crate) const MIN_RCVBUF: usize = 208 << 10;

/// What was obtained on one ICMP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tuned {
    pub fd: RawFd,
    pub v6: bool,
    pub kind: SocketKind,
    /// `SO_RCVBUF` as the kernel reports it after the change (bytes the
    /// socket may queue).
    pub rcvbuf: usize,
    /// How it was set: `SO_RCVBUFFORCE`, `SO_RCVBUF` (capped by
    /// net.core.rmem_max) or the error.
    pub rcvbuf_how: String,
    /// `Ok` when only echo replies reach the socket (a datagram socket
    /// needs no filter: only its own replies reach it).
    pub filter: Result<(), String>,
}

impl std::fmt::Display for Tuned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} receive buffer {} KiB ({}), filter {}",
            if self.v6 { "ICMPv6" } else { "ICMPv4" },
            match self.kind {
                SocketKind::Raw => "raw",
                SocketKind::Datagram => "datagram",
            },
            self.rcvbuf / 1024,
            self.rcvbuf_how,
            match (&self.filter, self.kind) {
                (Ok(()), SocketKind::Datagram) => "not needed (own replies only)".to_string(),
                (Ok(()), SocketKind::Raw) => "echo replies only".to_string(),
                (Err(e), _) => format!("not set: {e}"),
            }
        )
    }
}

/// The receive buffer for a round sending `rate` echoes a second: a
/// quarter of a second of replies, within [`MIN_RCVBUF`, `MAX_RCVBUF`].
pub(crate) fn rcvbuf_for(rate: f64) -> usize {
    let replies = (rate.max(0.0) / 4.0).min(1e9) as usize;
    replies
        .saturating_mul(BYTES_PER_REPLY)
        .clamp(MIN_RCVBUF, MAX_RCVBUF)
}

fn getsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(v)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live value of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `Some(is_v6)` when `fd` is a raw ICMP or ICMPv6 socket.
#[cfg(test)]
pub(crate) fn raw_icmp_family(fd: RawFd) -> Option<bool> {
    if getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).ok()? != libc::SOCK_RAW {
        return None;
    }
    match getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL).ok()? {
        libc::IPPROTO_ICMP => Some(false),
        libc::IPPROTO_ICMPV6 => Some(true),
        _ => None,
    }
}

/// The ICMPv6 filter passing only echo replies (`struct icmp6_filter`).
pub(crate) fn icmp6_echo_reply_only() -> [u32; 8] {
    let mut f = [u32::MAX; 8];
    f[(ICMP6_ECHO_REPLY >> 5) as usize] &= !(1 << (ICMP6_ECHO_REPLY & 31));
    f
}

/// The ICMPv4 filter (types to drop): all but echo reply.
pub(crate) const ICMP_ECHO_REPLY_ONLY: u32 = !(1 << ICMP_ECHO_REPLY);

/// Reads back the ICMPv4 filter mask of a raw socket.
#[cfg(test)]
pub(crate) fn icmp_filter(fd: RawFd) -> io::Result<u32> {
    let mut v: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_RAW,
            ICMP_FILTER,
            (&mut v as *mut u32).cast(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(v)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads back the ICMPv6 filter of a raw socket.
#[cfg(test)]
pub(crate) fn icmp6_filter(fd: RawFd) -> io::Result<[u32; 8]> {
    let mut v = [0u32; 8];
    let mut len = std::mem::size_of::<[u32; 8]>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_ICMPV6,
            ICMP6_FILTER,
            v.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(v)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// SO_RCVBUF as reported (the kernel doubles what is asked for, for its
/// bookkeeping, and reports the doubled value).
pub(crate) fn rcvbuf(fd: RawFd) -> io::Result<usize> {
    getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF).map(|v| v.max(0) as usize)
}

/// Tunes one ICMP socket: receive buffer of about `bytes` and, on a raw
/// socket, the echo-reply-only filter.
pub(crate) fn tune(fd: RawFd, v6: bool, kind: SocketKind, bytes: usize) -> Tuned {
    // The kernel doubles the value; ask for half so `bytes` can be queued.
    let ask = libc::c_int::try_from(bytes / 2).unwrap_or(libc::c_int::MAX);
    let rcvbuf_how = match setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &ask) {
        Ok(()) => "SO_RCVBUFFORCE".to_string(),
        Err(force) => match setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &ask) {
            Ok(()) => format!("SO_RCVBUF, capped by net.core.rmem_max; SO_RCVBUFFORCE: {force}"),
            Err(e) => format!("unchanged: {e}"),
        },
    };
    let filter = if kind == SocketKind::Datagram {
        Ok(())
    } else if v6 {
        setsockopt(
            fd,
            libc::IPPROTO_ICMPV6,
            ICMP6_FILTER,
            &icmp6_echo_reply_only(),
        )
    } else {
        setsockopt(fd, libc::SOL_RAW, ICMP_FILTER, &ICMP_ECHO_REPLY_ONLY)
    };
    Tuned {
        fd,
        v6,
        kind,
        rcvbuf: rcvbuf(fd).unwrap_or(0),
        rcvbuf_how,
        filter: filter.map_err(|e| e.to_string()),
    }
}
