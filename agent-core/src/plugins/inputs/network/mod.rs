//! `network`: per-NIC link state, addresses, counters and rates, like
//! PyAgent's psutil-based network input.
//!
//! On Linux the counters come from one read of `/proc/net/dev` (sysinfo
//! reads eight files per NIC and has no drop counters), the link state from
//! `/sys/class/net/<nic>/`, addresses from `getifaddrs`. Other systems use
//! sysinfo's `Networks`.
//!
//! Rates are computed from the previous sample over the real elapsed time.
//! A NIC's first sample has no previous one: its metric carries the state
//! and counters but no `interval` and no rate fields (a made-up 0 would draw
//! a false dip in graphs). A counter that went backwards (reset, 32-bit
//! wrap, NIC re-created) is taken as restarted from 0: the rate is the new
//! value over the interval, never negative.
pub mod schema;
use crate::format::human::{human_bps, py_round as round_to};
use crate::metric::{Metric, Str};
use crate::plugin::{Accumulator, Input, PluginResult};
use crate::plugins::common::serde_helpers::string_or_list;
use crate::registry::Registry;
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Instant;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetworkConfig {
    /// Exact NIC names to collect.
    #[serde(default, deserialize_with = "string_or_list")]
    pub network_card: Vec<String>,
    /// NIC name prefixes to collect (e.g. `eth`, `ens`).
    #[serde(default, deserialize_with = "string_or_list")]
    pub network_card_prefix: Vec<String>,
}

impl NetworkConfig {
    /// With neither key set every NIC is collected (PyAgent collected none).
    pub fn selects(&self, nic: &str) -> bool {
        (self.network_card.is_empty() && self.network_card_prefix.is_empty())
            || self.network_card.iter().any(|n| n == nic)
            || self
                .network_card_prefix
                .iter()
                .any(|p| nic.starts_with(p.as_str()))
    }
}

/// psutil's `net_io_counters` for one NIC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub bytes_sent: u64,
    pub bytes_recv: u64,
    pub packets_sent: u64,
    pub packets_recv: u64,
    pub errin: u64,
    pub errout: u64,
    pub dropin: u64,
    pub dropout: u64,
}

/// Parses `/proc/net/dev`.
pub fn parse_net_dev(text: &str) -> Vec<(String, Counters)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let v: Vec<u64> = rest
            .split_ascii_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if v.len() < 16 {
            continue;
        }
        out.push((
            name.trim().to_string(),
            Counters {
                bytes_recv: v[0],
                packets_recv: v[1],
                errin: v[2],
                dropin: v[3],
                bytes_sent: v[8],
                packets_sent: v[9],
                errout: v[10],
                dropout: v[11],
            },
        ));
    }
    out
}

/// Per-second rate of a counter between two samples `secs` apart. A
/// counter below its previous value restarted from 0 (reset or wrap), so
/// what it counts now happened within the interval: the rate is
/// `now / secs`. Never negative; 0 for a non-positive interval.
pub fn counter_rate(prev: u64, now: u64, secs: f64) -> f64 {
    if secs <= 0.0 || !secs.is_finite() {
        return 0.0;
    }
    let delta = if now >= prev { now - prev } else { now };
    delta as f64 / secs
}

/// Link state from `/sys/class/net/<nic>/` (psutil's `net_if_stats`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkState {
    pub isup: bool,
    /// psutil's NicDuplex: 2 full, 1 half, 0 unknown.
    pub duplex: u8,
    /// Mbit/s, 0 when unknown.
    pub speed: u64,
    pub mtu: u64,
    pub mac: String,
}

#[cfg(target_os = "linux")]
fn link_state(nic: &str) -> LinkState {
    let read = |file: &str| -> String {
        std::fs::read_to_string(format!("/sys/class/net/{nic}/{file}"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let flags = u32::from_str_radix(read("flags").trim_start_matches("0x"), 16).unwrap_or(0);
    let operstate = read("operstate");
    LinkState {
        // IFF_UP and running: the kernel counts "unknown" (e.g. lo) as running.
        isup: flags & libc::IFF_UP as u32 != 0 && matches!(operstate.as_str(), "up" | "unknown"),
        duplex: match read("duplex").as_str() {
            "full" => 2,
            "half" => 1,
            _ => 0,
        },
        speed: read("speed")
            .parse::<i64>()
            .ok()
            .filter(|s| *s > 0)
            .unwrap_or(0) as u64,
        mtu: read("mtu").parse().unwrap_or(0),
        mac: read("address"),
    }
}

/// IPv4 and IPv6 addresses per NIC, in the order the system lists them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Addresses {
    pub ipv4: Vec<String>,
    pub ipv6: Vec<String>,
}

/// `getifaddrs`: link-local IPv6 addresses get `%nic` like psutil.
#[cfg(unix)]
pub fn interface_addresses() -> HashMap<String, Addresses> {
    use std::ffi::CStr;
    use std::net::{Ipv4Addr, Ipv6Addr};
    let mut out: HashMap<String, Addresses> = HashMap::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below; every
    // pointer is checked for null and sockaddrs are read by their family.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
                continue;
            }
            let name = CStr::from_ptr(ifa.ifa_name).to_string_lossy();
            match (*ifa.ifa_addr).sa_family as i32 {
                libc::AF_INET => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let ip = Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
                    out.entry(name.into_owned())
                        .or_default()
                        .ipv4
                        .push(ip.to_string());
                }
                libc::AF_INET6 => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    let ip = Ipv6Addr::from(sa.sin6_addr.s6_addr);
                    let text = if sa.sin6_scope_id != 0 {
                        format!("{ip}%{name}")
                    } else {
                        ip.to_string()
                    };
                    out.entry(name.into_owned()).or_default().ipv6.push(text);
                }
                _ => {}
            }
        }
        libc::freeifaddrs(head);
    }
    out
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    counters: Counters,
}

pub struct Network {
    config: NetworkConfig,
    prev: HashMap<String, Sample>,
    #[cfg(not(target_os = "linux"))]
    nets: Option<sysinfo::Networks>,
}

/// One NIC's data for one gather.
struct NicSample {
    name: String,
    counters: Counters,
    link: LinkState,
}

impl Network {
    pub fn new(config: NetworkConfig) -> Self {
        Network {
            config,
            prev: HashMap::new(),
            #[cfg(not(target_os = "linux"))]
            nets: None,
        }
    }

    #[cfg(target_os = "linux")]
    fn sample(&mut self) -> PluginResult<Vec<NicSample>> {
        use crate::plugin::PluginError;
        let text = std::fs::read_to_string("/proc/net/dev")
            .map_err(|e| PluginError::context("reading /proc/net/dev", e))?;
        Ok(parse_net_dev(&text)
            .into_iter()
            .filter(|(name, _)| self.config.selects(name))
            .map(|(name, counters)| NicSample {
                link: link_state(&name),
                name,
                counters,
            })
            .collect())
    }

    #[cfg(not(target_os = "linux"))]
    fn sample(&mut self) -> PluginResult<Vec<NicSample>> {
        use crate::plugin::PluginError;
        if self.nets.is_none() {
            let nets = sysinfo::Networks::new_with_refreshed_list()
                .map_err(|e| PluginError::msg(format!("sysinfo networks: {e:?}")))?;
            self.nets = Some(nets);
        }
        let Some(nets) = self.nets.as_mut() else {
            return Err(PluginError::msg("sysinfo networks unavailable"));
        };
        nets.refresh(true);
        Ok(nets
            .iter()
            .filter(|(name, _)| self.config.selects(name))
            .map(|(name, d)| NicSample {
                name: name.clone(),
                counters: Counters {
                    bytes_sent: d.total_transmitted(),
                    bytes_recv: d.total_received(),
                    packets_sent: d.total_packets_transmitted(),
                    packets_recv: d.total_packets_received(),
                    errin: d.total_errors_on_received(),
                    errout: d.total_errors_on_transmitted(),
                    dropin: 0,
                    dropout: 0,
                },
                link: LinkState {
                    isup: d.operational_state() == sysinfo::InterfaceOperationalState::Up,
                    duplex: 0,
                    speed: d.receive_link_speed().unwrap_or(0) / 1_000_000,
                    mtu: d.mtu(),
                    mac: d.mac_address().to_string(),
                },
            })
            .collect())
    }
}

fn push_metric(
    acc: &mut Accumulator,
    nic: &NicSample,
    addrs: Option<&Addresses>,
    prev: Option<&Sample>,
    now: Instant,
) {
    let mut m: Metric = acc.metric();
    m.tags
        .push((Str::new_static("nic"), nic.name.as_str().into()));
    m.fields.reserve(24);
    let elapsed = prev.map(|p| now.saturating_duration_since(p.at).as_secs_f64());
    if let Some(secs) = elapsed {
        m.push_field("interval", round_to(secs, 3));
    }
    let l = &nic.link;
    m.push_field("isup", l.isup);
    m.push_field("duplex", l.duplex as u64);
    m.push_field("speed", l.speed);
    m.push_field("mtu", l.mtu);
    m.push_field("mac", l.mac.as_str());
    let join = |v: Option<&Vec<String>>| v.map(|v| v.join(",")).unwrap_or_default();
    m.push_field("ipv4", join(addrs.map(|a| &a.ipv4)));
    m.push_field("ipv6", join(addrs.map(|a| &a.ipv6)));
    let c = &nic.counters;
    m.push_field("bytes_sent", c.bytes_sent);
    m.push_field("bytes_recv", c.bytes_recv);
    m.push_field("packets_sent", c.packets_sent);
    m.push_field("packets_recv", c.packets_recv);
    m.push_field("errin", c.errin);
    m.push_field("errout", c.errout);
    m.push_field("dropin", c.dropin);
    m.push_field("dropout", c.dropout);
    if let (Some(p), Some(secs)) = (prev, elapsed) {
        let bps_in = round_to(
            counter_rate(p.counters.bytes_recv, c.bytes_recv, secs) * 8.0,
            2,
        );
        let bps_out = round_to(
            counter_rate(p.counters.bytes_sent, c.bytes_sent, secs) * 8.0,
            2,
        );
        m.push_field("bps_in", bps_in);
        m.push_field("bps_out", bps_out);
        // Whole packets per second (PyAgent truncated with int()).
        m.push_field(
            "pps_in",
            counter_rate(p.counters.packets_recv, c.packets_recv, secs) as u64,
        );
        m.push_field(
            "pps_out",
            counter_rate(p.counters.packets_sent, c.packets_sent, secs) as u64,
        );
        m.push_field("kbps_in", round_to(bps_in / 1000.0, 2));
        m.push_field("kbps_out", round_to(bps_out / 1000.0, 2));
        m.push_field("human_kbps_in", human_bps(bps_in));
        m.push_field("human_kbps_out", human_bps(bps_out));
    }
    acc.add(m);
}

impl Input for Network {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        let nics = self.sample()?;
        let now = Instant::now();
        #[cfg(unix)]
        let addrs = interface_addresses();
        #[cfg(not(unix))]
        let addrs: HashMap<String, Addresses> = self
            .nets
            .as_ref()
            .map(|nets| {
                nets.iter()
                    .map(|(name, d)| {
                        let mut a = Addresses::default();
                        for n in d.ip_networks() {
                            match n.addr {
                                std::net::IpAddr::V4(ip) => a.ipv4.push(ip.to_string()),
                                std::net::IpAddr::V6(ip) => a.ipv6.push(ip.to_string()),
                            }
                        }
                        (name.clone(), a)
                    })
                    .collect()
            })
            .unwrap_or_default();
        for nic in &nics {
            push_metric(
                acc,
                nic,
                addrs.get(&nic.name),
                self.prev.get(&nic.name),
                now,
            );
        }
        // Keep only NICs seen now: a NIC that comes back starts fresh.
        self.prev.clear();
        for nic in nics {
            self.prev.insert(
                nic.name,
                Sample {
                    at: now,
                    counters: nic.counters,
                },
            );
        }
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_input(
        "network",
        "Per-NIC state, addresses, traffic counters and rates",
        include_str!("sample.yaml"),
        |cfg| Ok(Network::new(cfg.parse()?)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PluginConfig;
    use crate::metric::FieldValue;

    #[test]
    fn rate_never_negative_on_reset() {
        assert_eq!(counter_rate(100, 300, 2.0), 100.0);
        // Reset: from 1e9 down to 500 within 2 s -> counted from 0.
        assert_eq!(counter_rate(1_000_000_000, 500, 2.0), 250.0);
        // 32-bit wrap.
        assert_eq!(counter_rate(u32::MAX as u64 - 10, 5, 1.0), 5.0);
        assert_eq!(counter_rate(0, 0, 1.0), 0.0);
        assert_eq!(counter_rate(5, 10, 0.0), 0.0);
        assert_eq!(counter_rate(5, 10, -1.0), 0.0);
        assert_eq!(counter_rate(5, 10, f64::NAN), 0.0);
        for (p, n) in [(u64::MAX, 0), (10, 9), (7, 0)] {
            assert!(counter_rate(p, n, 0.5) >= 0.0);
        }
    }

    #[test]
    fn rates_after_reset_in_metric() {
        let t0 = Instant::now();
        let prev = Sample {
            at: t0,
            counters: Counters {
                bytes_recv: 10_000,
                bytes_sent: 10_000,
                packets_recv: 100,
                packets_sent: 100,
                ..Counters::default()
            },
        };
        let nic = NicSample {
            name: "eth9".into(),
            counters: Counters {
                bytes_recv: 1_000, // reset
                bytes_sent: 12_000,
                packets_recv: 10, // reset
                packets_sent: 120,
                ..Counters::default()
            },
            link: LinkState::default(),
        };
        let mut acc = Accumulator::new("network", vec![].into());
        push_metric(
            &mut acc,
            &nic,
            None,
            Some(&prev),
            t0 + std::time::Duration::from_secs(2),
        );
        let m = acc.take().pop().unwrap();
        assert_eq!(m.tag("nic"), Some("eth9"));
        assert_eq!(m.field("interval"), Some(&FieldValue::Float(2.0)));
        assert_eq!(m.field("bps_in"), Some(&FieldValue::Float(4_000.0)));
        assert_eq!(m.field("bps_out"), Some(&FieldValue::Float(8_000.0)));
        assert_eq!(m.field("pps_in"), Some(&FieldValue::Uint(5)));
        assert_eq!(m.field("pps_out"), Some(&FieldValue::Uint(10)));
        assert_eq!(m.field("kbps_in"), Some(&FieldValue::Float(4.0)));
        assert_eq!(
            m.field("human_kbps_out").unwrap().as_str(),
            Some("8.0 Kbps")
        );
        assert_eq!(m.field("ipv4").unwrap().as_str(), Some(""));
    }

    #[test]
    fn net_dev_parse() {
        let text = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes ...\n\
                    \x20   lo:    3193      29    0    0    0     0          0         0     3194      30    0    0    0     0       0          0\n\
                    \x20 eth0: 217606829   11296    1    2    0     0          0         0   816425    9931    3    4    0     0       0          0\n\
                    broken: 1 2 3\n";
        let v = parse_net_dev(text);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].0, "lo");
        assert_eq!(v[0].1.bytes_recv, 3193);
        assert_eq!(v[0].1.bytes_sent, 3194);
        assert_eq!(v[0].1.packets_sent, 30);
        let e = v[1].1;
        assert_eq!((e.errin, e.dropin, e.errout, e.dropout), (1, 2, 3, 4));
    }

    #[test]
    fn selection_rules() {
        let all = NetworkConfig::default();
        assert!(all.selects("lo") && all.selects("eth0"));
        let cfg: NetworkConfig = PluginConfig::from_value(
            "network",
            serde_yaml_ng::from_str("network_card: lo\nnetwork_card_prefix: [eth, ens]").unwrap(),
        )
        .parse()
        .unwrap();
        assert!(cfg.selects("lo") && cfg.selects("eth0") && cfg.selects("ens3"));
        assert!(!cfg.selects("lo0") && !cfg.selects("docker0"));
        let cfg: NetworkConfig = PluginConfig::from_value(
            "network",
            serde_yaml_ng::from_str("network_card:\nnetwork_card_prefix: [wl]").unwrap(),
        )
        .parse()
        .unwrap();
        assert!(cfg.selects("wlan0") && !cfg.selects("lo"));
        let err = PluginConfig::from_value(
            "network",
            serde_yaml_ng::from_str("network_card: {a: 1}").unwrap(),
        )
        .parse::<NetworkConfig>()
        .unwrap_err()
        .to_string();
        assert!(err.contains("network_card"), "{err}");
    }

    #[cfg(target_os = "linux")]
    fn lo_bytes_recv() -> u64 {
        let text = std::fs::read_to_string("/proc/net/dev").unwrap();
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("lo:"))
            .unwrap();
        line.split_once(':')
            .unwrap()
            .1
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    #[cfg(target_os = "linux")]
    #[actix_rt::test]
    async fn lo_counters_and_rate_from_real_traffic() {
        let mut net = Network::new(NetworkConfig {
            network_card: vec!["lo".into()],
            network_card_prefix: vec![],
        });
        let before = lo_bytes_recv();
        let mut acc = Accumulator::new("network", vec![].into());
        net.gather(&mut acc).await.unwrap();
        let first = acc.take();
        assert_eq!(first.len(), 1, "only lo selected");
        let m = &first[0];
        assert_eq!(m.tag("nic"), Some("lo"));
        let recv = m.field("bytes_recv").and_then(|v| v.as_f64()).unwrap();
        assert!(recv >= before as f64);
        assert_eq!(m.field("isup"), Some(&FieldValue::Bool(true)));
        assert_eq!(
            m.field("mtu"),
            Some(&FieldValue::Uint(
                std::fs::read_to_string("/sys/class/net/lo/mtu")
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap()
            ))
        );
        assert!(m
            .field("ipv4")
            .unwrap()
            .as_str()
            .unwrap()
            .split(',')
            .any(|ip| ip == "127.0.0.1"));
        // First sample: no previous one, so no rates.
        assert!(m.field("bps_in").is_none() && m.field("interval").is_none());

        // Real loopback traffic between the two gathers.
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let payload = [7u8; 1200];
        for _ in 0..20 {
            tx.send_to(&payload, rx.local_addr().unwrap()).unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut acc = Accumulator::new("network", vec![].into());
        net.gather(&mut acc).await.unwrap();
        let m = acc.take().pop().unwrap();
        let recv2 = m.field("bytes_recv").and_then(|v| v.as_f64()).unwrap();
        assert!(recv2 >= recv + 20.0 * 1200.0, "{recv} -> {recv2}");
        let secs = m.field("interval").and_then(|v| v.as_f64()).unwrap();
        assert!(secs > 0.0);
        let bps_in = m.field("bps_in").and_then(|v| v.as_f64()).unwrap();
        assert!(bps_in > 0.0);
        // bps is bits: at least 20 datagrams of 1200 bytes over the interval.
        assert!(
            bps_in >= 20.0 * 1200.0 * 8.0 / (secs + 0.001) * 0.99,
            "{bps_in} over {secs}s"
        );
        assert!(m.field("pps_in").and_then(|v| v.as_f64()).unwrap() > 0.0);
        let kbps = m.field("kbps_in").and_then(|v| v.as_f64()).unwrap();
        assert!((kbps - round_to(bps_in / 1000.0, 2)).abs() < 1e-9);
        assert_eq!(
            m.field("human_kbps_in").unwrap().as_str().unwrap(),
            human_bps(bps_in)
        );
        let mut buf = [0u8; 2048];
        assert_eq!(rx.recv(&mut buf).unwrap(), 1200);
    }

    #[cfg(target_os = "linux")]
    #[actix_rt::test]
    async fn no_keys_means_all_nics() {
        let mut net = Network::new(NetworkConfig::default());
        let mut acc = Accumulator::new("network", vec![].into());
        net.gather(&mut acc).await.unwrap();
        let mut got: Vec<String> = acc
            .take()
            .iter()
            .map(|m| m.tag("nic").unwrap().to_string())
            .collect();
        got.sort();
        let mut expected: Vec<String> =
            parse_net_dev(&std::fs::read_to_string("/proc/net/dev").unwrap())
                .into_iter()
                .map(|(n, _)| n)
                .collect();
        expected.sort();
        assert_eq!(got, expected);
        assert!(got.iter().any(|n| n == "lo"));
    }
}
