//! Linux: a larger receive buffer and a kernel filter on tokio-icmp-echo's
//! raw ICMP sockets.
//!
//! A raw ICMP socket receives every ICMP packet the host gets, and on
//! loopback that includes each echo *request* the agent sends. With a
//! thousand targets that is ~20,000 packets/s into the default 208 KiB
//! buffer (~250 packets), which overflows whenever the agent's thread is
//! busy for a few ms: the kernel drops replies and ping reports loss that
//! is not on the network. tokio-icmp-echo does not expose its sockets, so
//! the ones a `Pinger::new()` call opened are found among the process's
//! file descriptors (those that were not open before the call).
use std::collections::HashSet;
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
/// Upper bound of the receive buffer asked for (~5,000 replies, half a
/// second of 1,000 targets' replies). Only queued packets use memory.
pub(crate) const MAX_RCVBUF: usize = 4 << 20;
/// Never ask for less than the usual default (`net.core.rmem_default`).
pub(crate) const MIN_RCVBUF: usize = 208 << 10;

/// What was obtained on one raw ICMP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tuned {
    pub fd: RawFd,
    pub v6: bool,
    /// `SO_RCVBUF` as the kernel reports it after the change (bytes the
    /// socket may queue).
    pub rcvbuf: usize,
    /// How it was set: `SO_RCVBUFFORCE`, `SO_RCVBUF` (capped by
    /// net.core.rmem_max) or the error.
    pub rcvbuf_how: String,
    /// `Ok` when only echo replies reach the socket.
    pub filter: Result<(), String>,
}

impl std::fmt::Display for Tuned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} receive buffer {} KiB ({}), filter {}",
            if self.v6 { "ICMPv6" } else { "ICMPv4" },
            self.rcvbuf / 1024,
            self.rcvbuf_how,
            match &self.filter {
                Ok(()) => "echo replies only".to_string(),
                Err(e) => format!("not set: {e}"),
            }
        )
    }
}

/// The receive buffer for `targets` targets with `in_flight` echoes each
/// outstanding: room for twice their replies, within
/// [`MIN_RCVBUF`, `MAX_RCVBUF`].
pub(crate) fn rcvbuf_for(targets: usize, in_flight: usize) -> usize {
    targets
        .saturating_mul(in_flight.max(1))
        .saturating_mul(2 * BYTES_PER_REPLY)
        .clamp(MIN_RCVBUF, MAX_RCVBUF)
}

/// This process's open file descriptors.
pub(crate) fn open_fds() -> HashSet<RawFd> {
    let mut fds: HashSet<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => HashSet::new(),
    };
    // The listing includes the directory's own fd, closed by now and the
    // first number the next socket gets.
    // SAFETY: F_GETFD only queries the descriptor.
    fds.retain(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1);
    fds
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

/// Tunes one raw ICMP socket: receive buffer of about `bytes` and the
/// echo-reply-only filter.
pub(crate) fn tune(fd: RawFd, v6: bool, bytes: usize) -> Tuned {
    // The kernel doubles the value; ask for half so `bytes` can be queued.
    let ask = libc::c_int::try_from(bytes / 2).unwrap_or(libc::c_int::MAX);
    let rcvbuf_how = match setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &ask) {
        Ok(()) => "SO_RCVBUFFORCE".to_string(),
        Err(force) => match setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &ask) {
            Ok(()) => format!("SO_RCVBUF, capped by net.core.rmem_max; SO_RCVBUFFORCE: {force}"),
            Err(e) => format!("unchanged: {e}"),
        },
    };
    let filter = if v6 {
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
        rcvbuf: rcvbuf(fd).unwrap_or(0),
        rcvbuf_how,
        filter: filter.map_err(|e| e.to_string()),
    }
}

/// Tunes the raw ICMP sockets open now that were not in `before`.
pub(crate) fn tune_new_sockets(before: &HashSet<RawFd>, bytes: usize) -> Vec<Tuned> {
    let mut fds: Vec<RawFd> = open_fds().difference(before).copied().collect();
    fds.sort_unstable();
    fds.into_iter()
        .filter_map(|fd| Some(tune(fd, raw_icmp_family(fd)?, bytes)))
        .collect()
}
