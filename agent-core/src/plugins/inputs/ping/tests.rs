use super::exec::{parse_unix, parse_windows};
use super::*;
use crate::config::PluginConfig;
use crate::metric::{FieldValue, Metric};

/// A host name glibc rejects before any DNS query (a label over 63
/// bytes), so the failure path is tested without traffic off loopback.
fn unresolvable() -> String {
    format!("{}.invalid", "a".repeat(70))
}

fn plugin(yaml: &str) -> Ping {
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
    Ping::from_config(&PluginConfig::from_value("ping", v)).unwrap()
}

async fn gather(p: &mut Ping) -> (PluginResult, Vec<Metric>) {
    let mut acc = Accumulator::new("ping", vec![].into());
    // Errors reported with `add_error` count as the gather's result here.
    let r = p
        .gather(&mut acc)
        .await
        .and_then(|()| acc.errors_as_result());
    (r, acc.take())
}

fn f(m: &Metric, k: &str) -> f64 {
    m.field(k)
        .and_then(FieldValue::as_f64)
        .unwrap_or_else(|| panic!("{k} missing in {m:?}"))
}

fn s<'a>(m: &'a Metric, k: &str) -> &'a str {
    m.field(k)
        .and_then(FieldValue::as_str)
        .unwrap_or_else(|| panic!("{k} missing in {m:?}"))
}

/// Whether ::1 is configured here (some containers have no IPv6).
fn ipv6_loopback_configured() -> bool {
    std::net::UdpSocket::bind("[::1]:0").is_ok()
}

#[actix_rt::test]
async fn native_loopback_v4_and_name() {
    let mut p = plugin(
        "count: 5\ntimeout: 0.7\ninterval_ping: 0.05\n\
         target: {LO: {address: 127.0.0.1}, NAME: {address: localhost}}",
    );
    let (r, ms) = gather(&mut p).await;
    r.unwrap();
    assert_eq!(ms.len(), 2);
    for (m, tag) in ms.iter().zip(["LO", "NAME"]) {
        assert_eq!(s(m, "tag"), tag);
        assert_eq!(f(m, "loss"), 0.0, "{m:?}");
        let (min, avg, max) = (f(m, "minimum"), f(m, "average"), f(m, "maximum"));
        assert!(min <= avg && avg <= max, "{m:?}");
        assert!(avg < 700.0, "avg {avg} not under the timeout");
        assert!(f(m, "stddev") >= 0.0 && f(m, "jitter") >= 0.0);
        assert!(m.field("error").is_none(), "{m:?}");
    }
    assert_eq!(s(&ms[0], "address"), "127.0.0.1");
}

#[actix_rt::test]
async fn native_loopback_v6_or_clear_error() {
    let mut p =
        plugin("count: 3\ntimeout: 0.5\ninterval_ping: 0.05\ntarget: {V6: {address: '::1'}}");
    let (r, ms) = gather(&mut p).await;
    r.unwrap();
    let m = &ms[0];
    if ipv6_loopback_configured() {
        assert_eq!(f(m, "loss"), 0.0, "{m:?}");
        assert!(f(m, "average") < 500.0);
        assert!(m.field("error").is_none(), "{m:?}");
    } else {
        // No ::1 here: the target fails on its own, with a reason.
        assert_eq!(f(m, "loss"), 100.0);
        assert_eq!(f(m, "average"), NO_REPLY_MS);
        assert!(s(m, "error").contains("::1"), "{m:?}");
    }
}

/// Both families in one gather, through the tuned sockets (on Linux only
/// echo replies reach them).
#[actix_rt::test]
async fn native_gather_v4_and_v6_with_tuned_sockets() {
    let mut p = plugin(
        "count: 4\ntimeout: 0.7\ninterval_ping: 0.05\n\
         target: {V4: {address: 127.0.0.1}, V6: {address: '::1'}}",
    );
    let (r, ms) = gather(&mut p).await;
    r.unwrap();
    assert_eq!(ms.len(), 2);
    assert_eq!(f(&ms[0], "loss"), 0.0, "{:?}", ms[0]);
    assert!(ms[0].field("error").is_none(), "{:?}", ms[0]);
    if ipv6_loopback_configured() {
        assert_eq!(f(&ms[1], "loss"), 0.0, "{:?}", ms[1]);
        assert!(ms[1].field("error").is_none(), "{:?}", ms[1]);
    } else {
        eprintln!("::1 not configured here: only IPv4 checked");
    }
    #[cfg(target_os = "linux")]
    {
        let t = p.tuned.as_deref().unwrap_or_default();
        assert!(
            t.contains("ICMPv4 receive buffer") && t.contains("filter echo replies only"),
            "{t}"
        );
    }
}

#[actix_rt::test]
async fn dns_failure_is_per_target() {
    let bad = unresolvable();
    let mut p = plugin(&format!(
        "count: 3\ntimeout: 0.5\ninterval_ping: 0.05\nresolve_timeout: 2\n\
         target: {{BAD: {{address: {bad}}}, GOOD: {{address: 127.0.0.1}}}}"
    ));
    let (r, ms) = gather(&mut p).await;
    r.unwrap();
    let (badm, good) = (&ms[0], &ms[1]);
    assert_eq!(s(badm, "tag"), "BAD");
    assert_eq!(f(badm, "loss"), 100.0);
    for k in ["minimum", "maximum", "average"] {
        assert_eq!(f(badm, k), NO_REPLY_MS);
    }
    assert!(s(badm, "error").contains("cannot resolve"), "{badm:?}");
    // The good target still ran (other tests share the ICMP traffic, so a
    // lost echo is possible on a loaded machine).
    assert!(f(good, "loss") < 100.0, "{good:?}");
    assert!(good.field("error").is_none(), "{good:?}");
}

#[actix_rt::test]
async fn concurrent_targets_do_not_cross_count() {
    // 200 distinct loopback addresses on one shared Pinger; each must get
    // exactly its own replies.
    let pinger = open_pinger().await.unwrap();
    let params = Params {
        count: 4,
        timeout: Duration::from_millis(700),
        interval: Duration::from_millis(50),
        resolve_timeout: Duration::from_secs(1),
    };
    let futs = (0..200u16).map(|i| {
        let ip: IpAddr = format!("127.0.{}.{}", 1 + i / 250, 1 + i % 250)
            .parse()
            .unwrap();
        let pinger = pinger.clone();
        // Same ident for every target: matching must not depend on it.
        async move { ping_native(&pinger, ip, 7, params).await }
    });
    let outcomes = futures::future::join_all(futs).await;
    for o in outcomes {
        assert_eq!(o.sent, 4);
        assert_eq!(o.rtts_ms.len(), 4, "{o:?}");
        assert!(o.error.is_none());
    }
}

/// Runs this test binary again as `nobody` (setpriv drops every
/// capability with the uid change, so the child has no raw-socket right;
/// the system ping still works there through its own file capability), and
/// checks the child's gathers.
#[test]
fn raw_socket_denied_gives_clear_error() {
    if std::env::var_os("AGENT_PING_NO_RAW_CHILD").is_some() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut p = plugin("count: 2\ntimeout: 0.3\ninterval_ping: 0.05\ntarget: {LO: {address: 127.0.0.1}}");
            let (r, ms) = gather(&mut p).await;
            let err = r.unwrap_err().to_string();
            println!("GATHER_ERROR={err}");
            let m = &ms[0];
            assert_eq!(f(m, "loss"), 100.0);
            assert_eq!(f(m, "average"), NO_REPLY_MS);
            assert_eq!(s(m, "error"), err);
            // auto falls back to the system ping, which works unprivileged.
            let mut p = plugin(
                "method: auto\ncount: 2\ntimeout: 0.5\ninterval_ping: 0.2\ntarget: {LO: {address: 127.0.0.1}}",
            );
            let (r, ms) = gather(&mut p).await;
            r.unwrap();
            assert_eq!(f(&ms[0], "loss"), 0.0, "{:?}", ms[0]);
            assert!(s(&ms[0], "error").contains("used the system ping"));
        });
        return;
    }
    // A copy under /tmp, so `nobody` can run it wherever the build lives.
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("ping-child");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .args([
            "plugins::inputs::ping::tests::raw_socket_denied_gives_clear_error",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("AGENT_PING_NO_RAW_CHILD", "1")
        .output()
        .expect("setpriv (util-linux) must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("GATHER_ERROR=").map(|x| x.1))
        .unwrap_or_else(|| panic!("child did not run the check:\n{stdout}\n{stderr}"));
    assert!(line.contains("Operation not permitted"), "{line}");
    assert!(line.contains("setcap cap_net_raw+ep "), "{line}");
    assert!(line.contains("as root"), "{line}");
}

#[actix_rt::test]
async fn exec_method_runs_system_ping() {
    assert!(
        std::path::Path::new("/bin/ping").exists()
            || std::path::Path::new("/usr/bin/ping").exists(),
        "the system ping is needed: apt-get install iputils-ping"
    );
    let mut p = plugin(
        "method: exec\ncount: 3\ntimeout: 0.7\ninterval_ping: 0.2\n\
         target: {LO: {address: 127.0.0.1}, BAD: {address: '127.0.0.1 -x'}}",
    );
    let (r, ms) = gather(&mut p).await;
    r.unwrap();
    let m = &ms[0];
    assert_eq!(f(m, "loss"), 0.0, "{m:?}");
    assert!(f(m, "average") < 700.0 && f(m, "minimum") <= f(m, "maximum"));
    assert!(m.field("error").is_none(), "{m:?}");
    // A target ping refuses gives 100 % loss and ping's own message.
    let bad = &ms[1];
    assert_eq!(f(bad, "loss"), 100.0);
    assert!(!s(bad, "error").is_empty());
}

// Captured here: `ping -n -c 4 -i 0.2 -W 0.7 127.0.0.1` (iputils 20221126).
const IPUTILS_V4: &str = "PING 127.0.0.1 (127.0.0.1) 56(84) bytes of data.
64 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time=0.044 ms
64 bytes from 127.0.0.1: icmp_seq=2 ttl=64 time=0.033 ms
64 bytes from 127.0.0.1: icmp_seq=3 ttl=64 time=0.029 ms
64 bytes from 127.0.0.1: icmp_seq=4 ttl=64 time=0.031 ms

--- 127.0.0.1 ping statistics ---
4 packets transmitted, 4 received, 0% packet loss, time 616ms
rtt min/avg/max/mdev = 0.029/0.034/0.044/0.005 ms
";

// Captured here: `ping -n -c 3 -i 0.2 -W 0.7 ::1`.
const IPUTILS_V6: &str = "PING ::1(::1) 56 data bytes
64 bytes from ::1: icmp_seq=1 ttl=64 time=0.029 ms
64 bytes from ::1: icmp_seq=2 ttl=64 time=0.035 ms
64 bytes from ::1: icmp_seq=3 ttl=64 time=0.038 ms

--- ::1 ping statistics ---
3 packets transmitted, 3 received, 0% packet loss, time 415ms
rtt min/avg/max/mdev = 0.029/0.034/0.038/0.003 ms
";

#[test]
fn parses_iputils_output() {
    let o = parse_unix(IPUTILS_V4).unwrap();
    assert_eq!(o.sent, 4);
    assert_eq!(o.rtts_ms, vec![0.044, 0.033, 0.029, 0.031]);
    let st = o.stats();
    // iputils printed min/avg/max = 0.029/0.034/0.044 for the same replies.
    assert_eq!(
        (st.min, st.avg, st.max, st.loss),
        (0.029, 0.034, 0.044, 0.0)
    );
    let o = parse_unix(IPUTILS_V6).unwrap();
    assert_eq!((o.sent, o.rtts_ms.len()), (3, 3));
    assert_eq!(o.stats().max, 0.038);
    assert!(parse_unix("ping: unknown host\n").is_none());
}

// Windows outputs as captured in Telegraf's ping_windows_test.go.
const WIN_EN: &str = "
Pinging 8.8.8.8 with 32 bytes of data:
Reply from 8.8.8.8: bytes=32 time=52ms TTL=43
Reply from 8.8.8.8: bytes=32 time=50ms TTL=43
Reply from 8.8.8.8: bytes=32 time=50ms TTL=43
Reply from 8.8.8.8: bytes=32 time=51ms TTL=43

Ping statistics for 8.8.8.8:
    Packets: Sent = 4, Received = 4, Lost = 0 (0% loss),
Approximate round trip times in milli-seconds:
    Minimum = 50ms, Maximum = 52ms, Average = 50ms
";

const WIN_PL_LOSSY: &str = "
Badanie thecodinglove.com [66.6.44.4] z 9800 bajtami danych:
Upłynął limit czasu żądania.
Odpowiedź z 66.6.44.4: bajtów=9800 czas=114ms TTL=48
Odpowiedź z 66.6.44.4: bajtów=9800 czas=114ms TTL=48
Odpowiedź z 66.6.44.4: bajtów=9800 czas=118ms TTL=48
Odpowiedź z 66.6.44.4: bajtów=9800 czas=114ms TTL=48
Odpowiedź z 66.6.44.4: bajtów=9800 czas=114ms TTL=48
Upłynął limit czasu żądania.
Odpowiedź z 66.6.44.4: bajtów=9800 czas=119ms TTL=48
Odpowiedź z 66.6.44.4: bajtów=9800 czas=116ms TTL=48

Statystyka badania ping dla 66.6.44.4:
    Pakiety: Wysłane = 9, Odebrane = 7, Utracone = 2
             (22% straty),
Szacunkowy czas błądzenia pakietów w millisekundach:
    Minimum = 114 ms, Maksimum = 119 ms, Czas średni = 115 ms
";

const WIN_UNREACHABLE: &str = "
Pinging www.google.pl [8.8.8.8] with 32 bytes of data:
Request timed out.
Request timed out.
Reply from 194.204.175.50: Destination net unreachable.
Request timed out.

Ping statistics for 8.8.8.8:
    Packets: Sent = 4, Received = 1, Lost = 3 (75% loss),
";

#[test]
fn parses_windows_output() {
    let o = parse_windows(WIN_EN).unwrap();
    assert_eq!(o.sent, 4);
    assert_eq!(o.rtts_ms, vec![52.0, 50.0, 50.0, 51.0]);
    let st = o.stats();
    assert_eq!((st.min, st.max, st.avg, st.loss), (50.0, 52.0, 50.75, 0.0));

    let o = parse_windows(WIN_PL_LOSSY).unwrap();
    assert_eq!((o.sent, o.rtts_ms.len()), (9, 7));
    let st = o.stats();
    assert_eq!((st.min, st.max, st.loss), (114.0, 119.0, 22.22));

    // "Destination net unreachable" is not an echo reply: 100 % loss.
    let st = parse_windows(WIN_UNREACHABLE).unwrap().stats();
    assert_eq!((st.loss, st.avg), (100.0, NO_REPLY_MS));
    assert!(parse_windows("Bad option -d.\n").is_none());
}

#[test]
fn statistics() {
    let o = Outcome {
        sent: 4,
        rtts_ms: vec![1.0, 2.0, 4.0],
        error: None,
    };
    let st = o.stats();
    assert_eq!((st.loss, st.min, st.max, st.avg), (25.0, 1.0, 4.0, 2.333));
    assert_eq!(st.jitter, 1.5); // (|2-1| + |4-2|) / 2
    assert_eq!(st.stddev, 1.247); // population stddev of 1, 2, 4
    let none = Outcome::failed(60, "x".into()).stats();
    assert_eq!(
        (none.loss, none.min, none.max, none.avg),
        (100.0, 5000.0, 5000.0, 5000.0)
    );
}

#[test]
fn config_defaults_and_errors() {
    let p = plugin("target: {A: {address: 127.0.0.1}}");
    assert_eq!(p.params.count, 60);
    assert_eq!(p.params.timeout, Duration::from_millis(700));
    assert_eq!(p.params.interval, Duration::from_millis(100));
    assert_eq!(p.method, Method::Native);
    for (yaml, key) in [
        ("timeout: 0", "timeout"),
        ("interval_ping: -1", "interval_ping"),
        ("count: 0", "count"),
        ("target: {A: {address: ''}}", "target.A.address"),
    ] {
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
        let err = Ping::from_config(&PluginConfig::from_value("ping", v))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(key), "{yaml}: {err}");
    }
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str("method: icmp").unwrap();
    assert!(Ping::from_config(&PluginConfig::from_value("ping", v)).is_err());
}

/// Raw-socket tuning (Linux): larger receive buffer, echo replies only.
#[cfg(target_os = "linux")]
mod tuning {
    use super::super::tune::{self, Tuned};
    use super::*;
    use std::os::fd::RawFd;

    /// PyAgent's defaults: 60 echoes 0.1 s apart, 0.7 s timeout.
    fn defaults() -> Params {
        Params {
            count: 60,
            timeout: Duration::from_millis(700),
            interval: Duration::from_millis(100),
            resolve_timeout: Duration::from_secs(1),
        }
    }

    /// The pinger and its tuning, or `None` (with the reason printed) when
    /// raw sockets cannot be opened here.
    async fn tuned_pinger(targets: usize) -> Option<(Pinger, Vec<Tuned>)> {
        match open_tuned_pinger(targets, defaults()).await {
            Ok(x) => Some(x),
            Err(e) => {
                eprintln!("skipped: {e}");
                None
            }
        }
    }

    /// `(bytes queued, packets dropped)` of a socket, from /proc/net/raw{,6}.
    fn queue_and_drops(fd: RawFd) -> (u64, u64) {
        // SAFETY: `st` is written by fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
        let ino = st.st_ino.to_string();
        for file in ["/proc/net/raw", "/proc/net/raw6"] {
            let text = std::fs::read_to_string(file).unwrap();
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.get(9) == Some(&ino.as_str()) {
                    let rx = f[4].split(':').nth(1).unwrap();
                    let rx = u64::from_str_radix(rx, 16).unwrap();
                    return (rx, f.last().unwrap().parse().unwrap());
                }
            }
        }
        panic!("socket {fd} (inode {ino}) not in /proc/net/raw*");
    }

    /// A raw ICMPv4 socket of the test's own, to send echo requests from.
    struct RawV4(RawFd);

    impl RawV4 {
        fn open() -> Self {
            // SAFETY: plain socket(2) call.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
            assert!(fd >= 0, "{}", std::io::Error::last_os_error());
            RawV4(fd)
        }

        /// Sends an echo request to 127.0.0.1.
        fn echo(&self, ident: u16, seq: u16) {
            let mut pkt = [0u8; 8 + 24];
            pkt[0] = 8; // echo request
            pkt[4..6].copy_from_slice(&ident.to_be_bytes());
            pkt[6..8].copy_from_slice(&seq.to_be_bytes());
            pkt[8..].fill(0x5a);
            let mut sum: u32 = pkt
                .chunks(2)
                .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
                .sum();
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            pkt[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `pkt` and `addr` are live for the call.
            let n = unsafe {
                libc::sendto(
                    self.0,
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    0,
                    (&addr as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            assert_eq!(n, pkt.len() as isize, "{}", std::io::Error::last_os_error());
        }

        /// `n` echo requests, in slices of 100 with a pause (blocking the
        /// thread) so loopback's backlog queue, shared with the other
        /// tests' pings, never fills.
        fn paced_echoes(&self, ident: u16, n: u16) {
            for seq in 0..n {
                self.echo(ident, seq);
                if seq % 100 == 99 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }

        /// Reads every queued packet (non-blocking): `(ICMP type, ident)`
        /// of each, after the IPv4 header.
        fn drain(&self) -> Vec<(u8, u16)> {
            let mut out = Vec::new();
            let mut buf = [0u8; 2048];
            loop {
                // SAFETY: `buf` is valid for writes of its length.
                let n = unsafe {
                    libc::recv(
                        self.0,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n <= 0 {
                    return out;
                }
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                let icmp = &buf[ihl..n as usize];
                out.push((icmp[0], u16::from_be_bytes([icmp[4], icmp[5]])));
            }
        }
    }

    impl Drop for RawV4 {
        fn drop(&mut self) {
            // SAFETY: the fd is ours.
            unsafe { libc::close(self.0) };
        }
    }

    #[test]
    fn rcvbuf_grows_with_targets_within_bounds() {
        assert_eq!(tune::rcvbuf_for(0, 7), tune::MIN_RCVBUF);
        assert_eq!(tune::rcvbuf_for(10, 7), tune::MIN_RCVBUF);
        assert_eq!(
            tune::rcvbuf_for(100, 7),
            100 * 7 * 2 * tune::BYTES_PER_REPLY
        );
        assert_eq!(tune::rcvbuf_for(1000, 7), tune::MAX_RCVBUF);
        assert_eq!(tune::rcvbuf_for(usize::MAX, usize::MAX), tune::MAX_RCVBUF);
        assert_eq!(defaults().in_flight(), 7);
        let one = Params {
            count: 3,
            timeout: Duration::from_secs(5),
            ..defaults()
        };
        assert_eq!(one.in_flight(), 3, "never more than count");
    }

    #[actix_rt::test]
    async fn pinger_sockets_get_large_buffer_and_echo_reply_filter() {
        let Some((_pinger, tuned)) = tuned_pinger(1000).await else {
            return;
        };
        let v4: Vec<&Tuned> = tuned.iter().filter(|t| !t.v6).collect();
        assert!(!v4.is_empty(), "no ICMPv4 socket tuned: {tuned:?}");
        for t in &tuned {
            assert_eq!(tune::raw_icmp_family(t.fd), Some(t.v6), "{t:?}");
            // Root: SO_RCVBUFFORCE gives the whole 4 MiB (the kernel
            // reports twice the value asked for, i.e. the bytes usable).
            // Without CAP_NET_ADMIN net.core.rmem_max caps it.
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                assert_eq!(t.rcvbuf_how, "SO_RCVBUFFORCE", "{t:?}");
                assert_eq!(tune::rcvbuf(t.fd).unwrap(), tune::MAX_RCVBUF, "{t:?}");
            } else {
                assert!(t.rcvbuf > tune::MIN_RCVBUF, "{t:?}");
            }
            assert_eq!(t.filter, Ok(()), "{t:?}");
            if t.v6 {
                let f = tune::icmp6_filter(t.fd).unwrap();
                assert_eq!(f, tune::icmp6_echo_reply_only());
                assert_eq!(f[4], !(1 << 1), "only type 129 passes");
                assert!(f.iter().enumerate().all(|(i, w)| i == 4 || *w == u32::MAX));
            } else {
                assert_eq!(
                    tune::icmp_filter(t.fd).unwrap(),
                    !1u32,
                    "only type 0 passes"
                );
            }
        }
        // The log line says what was obtained.
        let line = describe(&tuned);
        let v4 = v4[0];
        let expect = format!(
            "ICMPv4 receive buffer {} KiB ({}), filter echo replies only",
            v4.rcvbuf / 1024,
            v4.rcvbuf_how
        );
        assert!(line.contains(&expect), "{line}");
    }

    #[test]
    fn filtered_socket_queues_only_echo_replies_and_a_burst_without_drops() {
        let sender = RawV4::open();
        let rx = RawV4::open();
        let before = rx_default_rcvbuf(&rx);
        let t = tune::tune(rx.0, false, tune::MAX_RCVBUF);
        assert_eq!(t.filter, Ok(()));
        assert!(t.rcvbuf > before, "{t:?} vs default {before}");
        // 2,000 requests without reading: unfiltered, the socket would see
        // 4,000 packets (~3.3 MB), far over the default buffer.
        let ident: u16 = rand::random();
        const N: u16 = 2000;
        sender.paced_echoes(ident, N);
        let (_, drops) = queue_and_drops(rx.0);
        assert_eq!(drops, 0);
        let got = rx.drain();
        // Other tests' replies may be queued too; none is anything but a reply.
        assert!(
            got.iter().all(|(ty, _)| *ty == 0),
            "non-reply packets queued"
        );
        let ours = got.iter().filter(|(_, id)| *id == ident).count();
        assert_eq!(ours, N as usize, "every reply queued");
    }

    fn rx_default_rcvbuf(s: &RawV4) -> usize {
        tune::rcvbuf(s.0).unwrap()
    }

    /// A burst of replies queued while the thread is busy is received in
    /// full once the pinger's receiver runs (tokio-icmp-echo's receiver
    /// drains its socket by recursing; tokio's cooperative budget bounds
    /// that to 128 packets a poll, so a full buffer does not overflow the
    /// stack: this test's thread has 2 MiB).
    #[actix_rt::test]
    async fn pinger_takes_a_queued_burst_without_drops() {
        let Some((pinger, tuned)) = tuned_pinger(1000).await else {
            return;
        };
        let v4 = tuned.iter().find(|t| !t.v6).unwrap().fd;
        let sender = RawV4::open();
        // Half the buffer (other tests' replies arrive here too), nine
        // times what the default buffer holds.
        let burst = (tune::MAX_RCVBUF / 2 / 900) as u16;
        // No await: the receiver task cannot run meanwhile.
        sender.paced_echoes(0x4242, burst);
        let (queued, drops) = queue_and_drops(v4);
        assert_eq!(drops, 0, "{queued} bytes queued");
        assert!(queued > u64::from(burst) * 500, "{queued} bytes queued");
        // Then it still works.
        let o = ping_native(
            &pinger,
            "127.0.0.1".parse().unwrap(),
            9,
            Params {
                count: 3,
                interval: Duration::from_millis(20),
                ..defaults()
            },
        )
        .await;
        assert_eq!(o.rtts_ms.len(), 3, "{o:?}");
        let (queued, drops) = queue_and_drops(v4);
        assert_eq!(drops, 0);
        assert!(queued < 64 * 1024, "{queued} bytes still queued");
    }
}
