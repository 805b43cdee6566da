//! `cpu`: CPU usage, times, counters and load like PyAgent's psutil-based
//! cpu input, plus the top processes by CPU.
//!
//! One `System` per input, created at the first gather, refreshing only CPU
//! usage (and, when `process_top_num > 0`, processes with CPU time only).
//! `times_*` and `stats_*` come from `/proc/stat` on Linux, which sysinfo
//! does not expose. The first gather primes: it samples, waits
//! `sysinfo::MINIMUM_CPU_UPDATE_INTERVAL` and samples again, so even the
//! first `percent` is real (PyAgent's first value was always 0).
pub mod schema;
use crate::format::human::py_round as round_to;
use crate::metric::{Metric, Str};
use crate::plugin::{Accumulator, Input, PluginError, PluginResult};
use crate::registry::Registry;
use serde::Deserialize;
use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System};

fn d_process_top_num() -> usize {
    5
}

#[derive(Debug, Clone, Deserialize)]
pub struct CpuConfig {
    /// How many of the busiest processes to report; 0 turns it off (and
    /// saves the process scan).
    #[serde(default = "d_process_top_num")]
    pub process_top_num: usize,
}

impl Default for CpuConfig {
    fn default() -> Self {
        CpuConfig {
            process_top_num: d_process_top_num(),
        }
    }
}

/// The `cpu` line of `/proc/stat` in clock ticks, in psutil's order.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes(pub [u64; 10]);

pub const TIME_NAMES: [&str; 10] = [
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
];

impl CpuTimes {
    /// Total time: guest and guest_nice are already inside user and nice
    /// (psutil subtracts them the same way).
    fn total(&self) -> u64 {
        let all: u64 = self.0.iter().sum();
        all.saturating_sub(self.0[8]).saturating_sub(self.0[9])
    }

    /// psutil's `cpu_times_percent`: each field's share of the elapsed
    /// total between `prev` and `self`, one decimal, clamped to 0..=100.
    pub fn percent_since(&self, prev: &CpuTimes) -> [f64; 10] {
        let total = self.total().saturating_sub(prev.total());
        let mut out = [0.0; 10];
        if total == 0 {
            return out;
        }
        for (i, slot) in out.iter_mut().enumerate() {
            let d = self.0[i].saturating_sub(prev.0[i]) as f64;
            *slot = round_to((d / total as f64 * 100.0).clamp(0.0, 100.0), 1);
        }
        out
    }
}

/// What `/proc/stat` gives beyond per-cpu lines.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcStat {
    pub times: CpuTimes,
    pub ctx_switches: u64,
    pub interrupts: u64,
    pub soft_interrupts: u64,
    /// Number of `cpuN` lines.
    pub cpus: usize,
}

impl ProcStat {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = ProcStat::default();
        let mut seen_total = false;
        for line in text.lines() {
            let mut parts = line.split_ascii_whitespace();
            let Some(key) = parts.next() else { continue };
            let first = || -> u64 {
                line.split_ascii_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            match key {
                "cpu" => {
                    for (slot, v) in out.times.0.iter_mut().zip(parts) {
                        *slot = v.parse().map_err(|_| format!("bad cpu value {v:?}"))?;
                    }
                    seen_total = true;
                }
                "ctxt" => out.ctx_switches = first(),
                "intr" => out.interrupts = first(),
                "softirq" => out.soft_interrupts = first(),
                k if k.starts_with("cpu") && k[3..].bytes().all(|b| b.is_ascii_digit()) => {
                    out.cpus += 1
                }
                _ => {}
            }
        }
        if !seen_total {
            return Err("no `cpu` line".into());
        }
        Ok(out)
    }
}

#[cfg(target_os = "linux")]
fn read_proc_stat() -> PluginResult<ProcStat> {
    let text = std::fs::read_to_string("/proc/stat")
        .map_err(|e| PluginError::context("reading /proc/stat", e))?;
    ProcStat::parse(&text).map_err(|e| PluginError::msg(format!("/proc/stat: {e}")))
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), 100 if unknown.
#[cfg(target_os = "linux")]
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// One of the busiest processes.
#[derive(Debug, Clone, PartialEq)]
pub struct TopProcess {
    pub pid: u32,
    pub name: String,
    pub cpu_percent: f64,
}

/// The `n` busiest processes, busiest first (ties: lower pid first).
pub fn top_processes(sys: &System, n: usize) -> Vec<TopProcess> {
    let mut all: Vec<TopProcess> = sys
        .processes()
        .values()
        .map(|p| TopProcess {
            pid: p.pid().as_u32(),
            name: p.name().to_string_lossy().into_owned(),
            cpu_percent: round_to(p.cpu_usage() as f64, 1),
        })
        .collect();
    let order = |a: &TopProcess, b: &TopProcess| {
        b.cpu_percent
            .total_cmp(&a.cpu_percent)
            .then(a.pid.cmp(&b.pid))
    };
    if all.len() > n && n > 0 {
        all.select_nth_unstable_by(n - 1, order);
        all.truncate(n);
    }
    all.sort_by(order);
    all.truncate(n);
    all
}

/// `pid.name(cpu%)` joined by `, `: the text PyAgent's cpu alarm put in `more`.
pub fn process_top_text(top: &[TopProcess]) -> String {
    let mut s = String::new();
    for (i, p) in top.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&format!("{}.{}({:?}%)", p.pid, p.name, p.cpu_percent));
    }
    s
}

pub struct Cpu {
    config: CpuConfig,
    sys: Option<System>,
    #[cfg(target_os = "linux")]
    prev_stat: Option<ProcStat>,
    physical: Option<usize>,
}

impl Cpu {
    pub fn new(config: CpuConfig) -> Self {
        Cpu {
            config,
            sys: None,
            #[cfg(target_os = "linux")]
            prev_stat: None,
            physical: None,
        }
    }

    fn process_kind() -> ProcessRefreshKind {
        // CPU time only; no threads listed as processes, no exe/user/env.
        ProcessRefreshKind::nothing().with_cpu().without_tasks()
    }

    fn refresh(&mut self) {
        let top = self.config.process_top_num > 0;
        if let Some(sys) = self.sys.as_mut() {
            sys.refresh_cpu_usage();
            if top {
                sys.refresh_processes_specifics(ProcessesToUpdate::All, true, Self::process_kind());
            }
        }
    }

    /// First gather: create the `System` and take the first sample.
    async fn prime(&mut self) -> PluginResult {
        let sys = System::new().map_err(|e| PluginError::msg(format!("sysinfo: {e:?}")))?;
        self.sys = Some(sys);
        self.physical = System::physical_core_count().ok();
        self.refresh();
        #[cfg(target_os = "linux")]
        {
            self.prev_stat = Some(read_proc_stat()?);
        }
        tokio::time::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL).await;
        Ok(())
    }

    fn fill(&mut self, m: &mut Metric) -> PluginResult {
        let Some(sys) = self.sys.as_ref() else {
            return Err(PluginError::msg("cpu: not primed"));
        };
        let cpus = sys.cpus();
        let logical = cpus.len();
        m.fields
            .reserve(48 + logical + 3 * self.config.process_top_num);
        m.push_field("logical_count", logical);
        if let Some(physical) = self.physical {
            m.push_field("count", physical);
        }
        let percent = round_to(sys.global_cpu_usage() as f64, 1);
        m.push_field("percent", percent);
        let mut max_percent: Option<f64> = None;
        for (i, c) in cpus.iter().enumerate() {
            let p = round_to(c.usage() as f64, 1);
            max_percent = Some(max_percent.map_or(p, |mx| mx.max(p)));
            m.push_field(format!("percent_percpu_{i}"), p);
        }
        m.push_field("max_percent", max_percent.unwrap_or(percent));

        #[cfg(target_os = "linux")]
        {
            let stat = read_proc_stat()?;
            let tick = clock_ticks();
            for (name, v) in TIME_NAMES.iter().zip(stat.times.0) {
                m.push_field(format!("times_{name}"), round_to(v as f64 / tick, 2));
            }
            let prev = self.prev_stat.unwrap_or(stat);
            let pct = stat.times.percent_since(&prev.times);
            for (name, v) in TIME_NAMES.iter().zip(pct) {
                m.push_field(format!("times_percent_{name}"), v);
            }
            m.push_field("stats_ctx_switches", stat.ctx_switches);
            m.push_field("stats_interrupts", stat.interrupts);
            m.push_field("stats_soft_interrupts", stat.soft_interrupts);
            // Linux does not count system calls (psutil reports 0 as well).
            m.push_field("stats_syscalls", 0u64);
            self.prev_stat = Some(stat);
        }

        if let Ok(load) = System::load_average() {
            let loads = [("1", load.one), ("5", load.five), ("15", load.fifteen)];
            for (suffix, v) in loads {
                m.push_field(format!("loadavg_{suffix}"), round_to(v, 2));
            }
            for (suffix, v) in loads {
                let pct = if logical > 0 {
                    round_to(v / logical as f64 * 100.0, 2)
                } else {
                    0.0
                };
                m.push_field(format!("loadavg_precent_{suffix}"), pct);
            }
        }

        if self.config.process_top_num > 0 {
            let top = top_processes(sys, self.config.process_top_num);
            m.push_field("process_top", process_top_text(&top));
            for (rank, p) in top.iter().enumerate() {
                let rank = rank + 1;
                m.push_field(format!("process_top_{rank}_pid"), p.pid);
                m.push_field(
                    format!("process_top_{rank}_name"),
                    Str::from(p.name.as_str()),
                );
                m.push_field(format!("process_top_{rank}_cpu_percent"), p.cpu_percent);
            }
        }
        Ok(())
    }
}

impl Input for Cpu {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        if self.sys.is_none() {
            self.prime().await?;
        }
        self.refresh();
        let mut m = acc.metric();
        self.fill(&mut m)?;
        acc.add(m);
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_input(
        "cpu",
        "CPU usage, times, counters, load average and the busiest processes",
        include_str!("sample.yaml"),
        |cfg| {
            let c: CpuConfig = cfg.parse()?;
            if c.process_top_num > 1000 {
                return Err(cfg
                    .error(
                        "process_top_num",
                        format!("must be between 0 and 1000, got {}", c.process_top_num),
                    )
                    .into());
            }
            Ok(Cpu::new(c))
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PluginConfig;
    use crate::metric::FieldValue;

    fn f64_field(m: &Metric, k: &str) -> f64 {
        m.field(k)
            .and_then(|v| v.as_f64())
            .unwrap_or_else(|| panic!("{k} missing"))
    }

    #[test]
    fn config_default_and_off() {
        let cfg = PluginConfig::from_value("cpu", serde_yaml_ng::from_str("interval: 10").unwrap());
        assert_eq!(cfg.parse::<CpuConfig>().unwrap().process_top_num, 5);
        let cfg = PluginConfig::from_value(
            "cpu",
            serde_yaml_ng::from_str("process_top_num: 0").unwrap(),
        );
        assert_eq!(cfg.parse::<CpuConfig>().unwrap().process_top_num, 0);
        let cfg = PluginConfig::from_value(
            "cpu",
            serde_yaml_ng::from_str("process_top_num: x").unwrap(),
        );
        let err = cfg.parse::<CpuConfig>().unwrap_err().to_string();
        assert!(err.contains("process_top_num"), "{err}");
    }

    #[test]
    fn proc_stat_parse_and_percent() {
        let a = "cpu  100 0 50 800 10 5 5 0 0 0\ncpu0 50 0 25 400 5 2 3 0 0 0\n\
                 cpu1 50 0 25 400 5 3 2 0 0 0\nintr 12345 1 2 3\nctxt 999\nsoftirq 77 1 2\n";
        let b =
            "cpu  200 0 100 1600 20 10 10 60 0 0\ncpu0 0\ncpu1 0\nintr 1 1\nctxt 1\nsoftirq 1\n";
        let sa = ProcStat::parse(a).unwrap();
        assert_eq!(sa.cpus, 2);
        assert_eq!(
            (sa.ctx_switches, sa.interrupts, sa.soft_interrupts),
            (999, 12345, 77)
        );
        let sb = ProcStat::parse(b).unwrap();
        let pct = sb.times.percent_since(&sa.times);
        // Elapsed total: 100+50+800+10+5+5+60 = 1030.
        assert_eq!(pct[0], round_to(100.0 / 1030.0 * 100.0, 1));
        assert_eq!(pct[3], round_to(800.0 / 1030.0 * 100.0, 1));
        assert_eq!(pct[7], round_to(60.0 / 1030.0 * 100.0, 1));
        // No elapsed time (or counters going back) never gives NaN or negatives.
        assert!(sa.times.percent_since(&sb.times).iter().all(|v| *v == 0.0));
        assert!(ProcStat::parse("intr 1\n").is_err());
    }

    #[test]
    fn process_top_text_like_pyagent_alarm() {
        let top = vec![
            TopProcess {
                pid: 12,
                name: "nginx".into(),
                cpu_percent: 12.5,
            },
            TopProcess {
                pid: 7,
                name: "java".into(),
                cpu_percent: 3.0,
            },
        ];
        assert_eq!(process_top_text(&top), "12.nginx(12.5%), 7.java(3.0%)");
        assert_eq!(process_top_text(&[]), "");
    }

    fn proc_stat_cpu_lines() -> usize {
        std::fs::read_to_string("/proc/stat")
            .unwrap()
            .lines()
            .filter(|l| {
                let k = l.split_whitespace().next().unwrap_or("");
                k.len() > 3 && k.starts_with("cpu") && k[3..].bytes().all(|b| b.is_ascii_digit())
            })
            .count()
    }

    #[cfg(target_os = "linux")]
    #[actix_rt::test]
    async fn first_gather_is_real_and_matches_proc() {
        let loadavg_before: Vec<f64> = std::fs::read_to_string("/proc/loadavg")
            .unwrap()
            .split_whitespace()
            .take(3)
            .map(|v| v.parse().unwrap())
            .collect();
        let ctxt_before = ProcStat::parse(&std::fs::read_to_string("/proc/stat").unwrap())
            .unwrap()
            .ctx_switches;
        let mut cpu = Cpu::new(CpuConfig::default());
        let mut acc = Accumulator::new("cpu", vec![].into());
        cpu.gather(&mut acc).await.unwrap();
        let m = acc.take().pop().unwrap();
        let logical = proc_stat_cpu_lines();
        assert_eq!(
            m.field("logical_count"),
            Some(&FieldValue::Uint(logical as u64))
        );
        let percent = f64_field(&m, "percent");
        assert!((0.0..=100.0).contains(&percent), "{percent}");
        let mut max = 0.0f64;
        for i in 0..logical {
            let p = f64_field(&m, &format!("percent_percpu_{i}"));
            assert!((0.0..=100.0).contains(&p));
            max = max.max(p);
        }
        assert!(m.field(&format!("percent_percpu_{logical}")).is_none());
        assert_eq!(f64_field(&m, "max_percent"), max);
        // Over the primed interval the shares of time add up to about 100.
        let shares: f64 = TIME_NAMES[..8]
            .iter()
            .map(|n| f64_field(&m, &format!("times_percent_{n}")))
            .sum();
        assert!((shares - 100.0).abs() < 1.5, "times_percent sum {shares}");
        assert!(f64_field(&m, "times_idle") > 0.0);
        assert!(f64_field(&m, "stats_ctx_switches") >= ctxt_before as f64);
        assert_eq!(m.field("stats_syscalls"), Some(&FieldValue::Uint(0)));
        for (i, n) in ["1", "5", "15"].iter().enumerate() {
            let l = f64_field(&m, &format!("loadavg_{n}"));
            assert!(
                (l - loadavg_before[i]).abs() < 1.0,
                "loadavg_{n} {l} vs {}",
                loadavg_before[i]
            );
            let lp = f64_field(&m, &format!("loadavg_precent_{n}"));
            assert!((lp - round_to(l / logical as f64 * 100.0, 2)).abs() < 0.011);
        }
        // Top processes: 5 by default, sorted busiest first, the string agrees.
        let Some(FieldValue::Str(text)) = m.field("process_top") else {
            panic!("process_top missing")
        };
        let mut last = f64::INFINITY;
        let mut pieces = Vec::new();
        for rank in 1..=5 {
            let Some(pid) = m.field(&format!("process_top_{rank}_pid")) else {
                break;
            };
            let c = f64_field(&m, &format!("process_top_{rank}_cpu_percent"));
            assert!(c <= last);
            last = c;
            let name = m.field(&format!("process_top_{rank}_name")).unwrap();
            pieces.push(format!("{pid}.{name}({c:?}%)"));
        }
        assert!(!pieces.is_empty());
        assert!(m.field("process_top_6_pid").is_none());
        assert_eq!(text.as_str(), pieces.join(", "));

        // A second gather reuses the System and still answers sensibly.
        let mut acc = Accumulator::new("cpu", vec![].into());
        cpu.gather(&mut acc).await.unwrap();
        let m2 = acc.take().pop().unwrap();
        assert!((0.0..=100.0).contains(&f64_field(&m2, "percent")));
        assert!(f64_field(&m2, "stats_ctx_switches") >= f64_field(&m, "stats_ctx_switches"));
    }

    #[cfg(target_os = "linux")]
    #[actix_rt::test]
    async fn process_top_off_skips_processes() {
        let mut cpu = Cpu::new(CpuConfig { process_top_num: 0 });
        let mut acc = Accumulator::new("cpu", vec![].into());
        cpu.gather(&mut acc).await.unwrap();
        let m = acc.take().pop().unwrap();
        assert!(m.field("process_top").is_none());
        assert!(m.field("process_top_1_pid").is_none());
        assert!(cpu.sys.as_ref().unwrap().processes().is_empty());
    }
}
