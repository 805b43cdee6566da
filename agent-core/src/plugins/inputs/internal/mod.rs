//! `internal`: the agent's own metrics, like Telegraf's `internal` input:
//! per plugin actor its calls, errors, restarts and metrics in/out, per
//! output its buffer, drops and write time, the process's RSS, CPU and
//! logging problems (failed log writes, dropped log records), and the
//! reload counters.
pub mod schema;
use crate::metric::Metric;
use crate::plugin::{Accumulator, Input, PluginResult};
use crate::registry::Registry;
use crate::selfstat::{self, directory};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct InternalConfig {
    /// Emit one metric per plugin actor (false: only process and reload).
    #[serde(default = "yes")]
    pub per_plugin: bool,
}

fn yes() -> bool {
    true
}

pub struct Internal {
    config: InternalConfig,
}

impl Internal {
    pub fn new(config: InternalConfig) -> Self {
        Internal { config }
    }
}

/// Resident set size in bytes and CPU seconds (user + system) of this process.
#[cfg(target_os = "linux")]
pub fn process_usage() -> Option<(u64, f64, u64)> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let rss_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the `(comm)`, which may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let threads: u64 = f.get(17)?.parse().ok()?;
    Some((rss_pages * page, (utime + stime) / ticks, threads))
}

#[cfg(not(target_os = "linux"))]
pub fn process_usage() -> Option<(u64, f64, u64)> {
    None
}

impl Input for Internal {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        if self.config.per_plugin {
            for e in directory::live() {
                let s = e.stats.snapshot();
                let mut m: Metric = acc.metric();
                m.set_tag("kind", e.kind);
                if !e.pipeline.is_empty() {
                    m.set_tag("pipeline", e.pipeline.as_str());
                }
                m.set_tag("plugin", e.name.as_str());
                m.push_field("calls", s.calls);
                m.push_field("errors", s.errors);
                m.push_field("panics", s.panics);
                m.push_field("restarts", s.restarts);
                m.push_field("actor_restarts", s.actor_restarts);
                m.push_field("metrics_in", s.metrics_in);
                m.push_field("metrics_out", s.metrics_out);
                m.push_field("dropped", s.dropped);
                if e.kind == "output" {
                    m.push_field("buffered", s.buffered);
                }
                m.push_field("last_duration_us", s.last_duration_us);
                acc.add(m);
            }
        }
        if let Some((rss, cpu, threads)) = process_usage() {
            let mut m = acc.metric();
            m.set_tag("kind", "process");
            m.push_field("rss_bytes", rss);
            m.push_field("cpu_seconds", cpu);
            m.push_field("threads", threads);
            m.push_field("pid", std::process::id());
            let log = crate::logging::stats();
            m.push_field("log_errors", log.log_errors);
            m.push_field("log_dropped", log.log_dropped);
            acc.add(m);
        }
        if let Some(r) = selfstat::reload_counters() {
            let mut m = acc.metric();
            m.set_tag("kind", "reload");
            m.push_field("generation", r.generation);
            m.push_field("attempts", r.attempts);
            m.push_field("unchanged", r.unchanged);
            m.push_field("file_events", r.file_events);
            m.push_field("reloader_restarts", r.reloader_restarts);
            m.push_field("last_ok", r.last_ok);
            acc.add(m);
        }
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_input(
        "internal",
        "The agent's own metrics: per plugin counters, process RSS and CPU, reloads",
        include_str!("sample.yaml"),
        |cfg| Ok(Internal::new(cfg.parse()?)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_usage_matches_proc_status() {
        let (rss, cpu, threads) = process_usage().unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let vmrss_kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap();
        // RSS moves a little between the two reads.
        let diff = (rss as i64 - (vmrss_kb * 1024) as i64).abs();
        assert!(diff < 4 * 1024 * 1024, "{rss} vs {vmrss_kb} kB");
        assert!(cpu >= 0.0);
        assert!(threads >= 1);
    }
}
