//! `agent status`: the running agent's state as a table (or JSON).
use agent_core::pipeline::{ActorStatus, StatusReport};
use agent_core::AgentConfig;
use anyhow::{Context as _, Result};

#[cfg(unix)]
pub fn show(config: &AgentConfig, json: bool) -> Result<()> {
    let socket = config.control_socket();
    let answer = agent_core::control::query(&socket).with_context(|| {
        format!(
            "cannot reach the agent at {} (is `agent run` running?)",
            socket.display()
        )
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let status: StatusReport = serde_json::from_value(answer.status)?;
    let reload = &answer.reload;
    println!(
        "agent {} (pid {}), up {:.0}s, config generation {}, last reload: {}",
        answer.version,
        answer.pid,
        status.uptime_sec,
        reload["generation"],
        reload["last_result"].as_str().unwrap_or("-")
    );
    let logging = &answer.logging;
    if logging.log_errors > 0 || logging.log_dropped > 0 {
        println!(
            "logging: {} failed writes, {} records dropped; last error: {}",
            logging.log_errors,
            logging.log_dropped,
            logging.last_error.as_deref().unwrap_or("-")
        );
    }
    if let Some(b) = &answer.fd_budget {
        println!(
            "fd budget: limit {} (hard {}, started with {}), reserved {}, probes {}: in use {}, peak {}, waited {} of {} acquisitions",
            b.soft_limit,
            b.hard_limit,
            b.initial_soft_limit,
            b.reserved,
            b.probe_capacity,
            b.in_use,
            b.peak,
            b.waited,
            b.acquired
        );
    }
    if let Some(d) = &answer.dns {
        println!(
            "dns cache: {} names, {} look-ups ({} failed), {} hits, {} shared, lifetime {}s",
            d.names, d.lookups, d.failures, d.hits, d.coalesced, d.ttl_sec
        );
    }
    if let Some(ping) = &answer.ping {
        println!(
            "ping: IPv4 {}, IPv6 {}",
            ping["ipv4"].as_str().unwrap_or("-"),
            ping["ipv6"].as_str().unwrap_or("-")
        );
    }
    println!(
        "{:<10} {:<28} {:<6} {:>8} {:>7} {:>8} {:>8} {:>10} {:>10} {:>9}  last error",
        "kind", "name", "alive", "calls", "errors", "restarts", "actor_rs", "in", "out", "last_ok"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let row = |pipeline: &str, a: &ActorStatus| {
        let name = if pipeline.is_empty() || a.kind == "input" {
            a.name.clone()
        } else {
            format!("{pipeline}/{}", a.name)
        };
        let last_ok = if a.stats.last_ok_ns > 0 {
            format!("{:.0}s ago", now - a.stats.last_ok_ns as f64 / 1e9)
        } else {
            "-".into()
        };
        println!(
            "{:<10} {:<28} {:<6} {:>8} {:>7} {:>8} {:>8} {:>10} {:>10} {:>9}  {}",
            a.kind,
            name,
            if a.alive { "yes" } else { "NO" },
            a.stats.calls,
            a.stats.errors,
            a.stats.restarts,
            a.stats.actor_restarts,
            a.stats.metrics_in,
            a.stats.metrics_out,
            last_ok,
            a.stats.last_error.as_deref().unwrap_or("")
        );
    };
    for p in &status.pipelines {
        for a in &p.actors {
            row(&p.input, a);
        }
    }
    for o in &status.outputs {
        row("", o);
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn show(_: &AgentConfig, _: bool) -> Result<()> {
    anyhow::bail!("`agent status` needs a Unix socket; not available on this platform yet")
}
