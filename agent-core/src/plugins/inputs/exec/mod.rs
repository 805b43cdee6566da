//! `exec`: runs commands every interval and parses what they print
//! (Telegraf's `exec`). Lets users write plugins in any language.
use crate::config::Seconds;
use crate::format::parse::{parse_nagios, DataFormat, Parser, ParserConfig};
use crate::plugin::{Accumulator, Input, PluginResult};
use crate::plugins::common::exec::{
    first_line, run_once, secs, CommandLine, CommandSpec, EnvConfig, ExecStats, RateLimitedLog,
};
use crate::registry::Registry;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ExecConfig {
    /// Commands to run, each an argv list (or one string with `shell: true`).
    pub commands: Vec<CommandLine>,
    /// Seconds a command may run before it is killed with its process group.
    pub timeout: Seconds,
    /// Bytes of stdout a command may print before it is killed.
    pub max_output_bytes: usize,
    #[serde(flatten)]
    pub env: EnvConfig,
    #[serde(flatten)]
    pub parser: ParserConfig,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            commands: Vec::new(),
            timeout: Seconds::from_secs(5),
            max_output_bytes: 1 << 20,
            env: EnvConfig::default(),
            parser: ParserConfig::default(),
        }
    }
}

pub struct Exec {
    commands: Vec<CommandSpec>,
    timeout: Duration,
    max_output: usize,
    parser: Parser,
    stats: Arc<ExecStats>,
    log: Arc<RateLimitedLog>,
}

impl Exec {
    /// Checks the config; the error names the offending key.
    pub fn new(name: &str, cfg: ExecConfig) -> Result<Self, (String, String)> {
        if cfg.commands.is_empty() {
            return Err(("commands".into(), "at least one command is required".into()));
        }
        let commands = cfg
            .commands
            .iter()
            .enumerate()
            .map(|(i, c)| CommandSpec::new(c, &cfg.env).map_err(|r| (format!("commands.{i}"), r)))
            .collect::<Result<Vec<_>, _>>()?;
        let timeout = secs(cfg.timeout, "timeout", 0.001, 86_400.0)?;
        if cfg.max_output_bytes == 0 || cfg.max_output_bytes > 1 << 30 {
            return Err((
                "max_output_bytes".into(),
                format!(
                    "must be between 1 and 1073741824, got {}",
                    cfg.max_output_bytes
                ),
            ));
        }
        Ok(Exec {
            commands,
            timeout,
            max_output: cfg.max_output_bytes,
            parser: Parser::new(cfg.parser),
            stats: Arc::default(),
            log: Arc::new(RateLimitedLog::new(
                slog::Logger::root(slog::Discard, slog::o!()),
                format!("input {name}"),
            )),
        })
    }

    /// Logs warnings (stderr lines, skipped lines) through `log`.
    pub fn with_log(mut self, log: &slog::Logger, name: &str) -> Self {
        self.log = Arc::new(RateLimitedLog::new(log.clone(), format!("input {name}")));
        self
    }

    /// Counters: spawns, parse errors, kills.
    pub fn stats(&self) -> Arc<ExecStats> {
        self.stats.clone()
    }
}

impl Input for Exec {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        let template = acc.metric();
        let (timeout, max_output, stats) = (self.timeout, self.max_output, &*self.stats);
        let runs = self.commands.iter().map(|c| async move {
            let r = run_once(c, timeout, max_output, stats).await;
            (c, r)
        });
        let results = futures::future::join_all(runs).await;
        let mut errors = Vec::new();
        for (cmd, result) in results {
            let out = match result {
                Ok(out) => out,
                Err(e) => {
                    errors.push(format!("`{}`: {e}", cmd.display()));
                    continue;
                }
            };
            let text = String::from_utf8_lossy(&out.stdout);
            let nagios = self.parser.format() == DataFormat::Nagios;
            if !out.status.success() && !nagios {
                let why = first_line(&out.stderr)
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default();
                errors.push(format!("`{}` {}{why}", cmd.display(), out.status));
                continue;
            }
            if let Some(line) = first_line(&out.stderr) {
                ExecStats::add(&self.stats.stderr_lines, 1);
                self.log
                    .warn(|| format!("`{}` stderr: {line}", cmd.display()));
            }
            let mut metrics = Vec::new();
            let parse_errors = if nagios {
                parse_nagios(&text, out.status.code(), &template, &mut metrics)
                    .err()
                    .into_iter()
                    .collect()
            } else {
                self.parser.parse_text(&text, &template, &mut metrics)
            };
            for m in metrics {
                acc.add(m);
            }
            if let Some(first) = parse_errors.first() {
                ExecStats::add(&self.stats.parse_errors, parse_errors.len() as u64);
                errors.push(format!(
                    "`{}`: {} malformed {} output skipped (first: {first})",
                    cmd.display(),
                    parse_errors.len(),
                    self.parser.format().as_str()
                ));
            }
        }
        // One failing command or a malformed line is not a broken plugin:
        // report it and keep gathering the rest every interval.
        for e in errors {
            acc.add_error(e);
        }
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_input(
        "exec",
        "Runs commands every interval and parses their output (influx, json, value, nagios, pyagent)",
        include_str!("sample.yaml"),
        |cfg| {
            let mut keys = vec!["commands", "timeout", "max_output_bytes"];
            keys.extend_from_slice(crate::config::struct_fields::<EnvConfig>());
            keys.extend_from_slice(crate::config::struct_fields::<ParserConfig>());
            let parsed: ExecConfig = cfg.parse_with_keys(&keys)?;
            Exec::new(&cfg.instance, parsed)
                .map(|e| e.with_log(cfg.log(), &cfg.instance))
                .map_err(|(k, r)| cfg.error(&k, r).into())
        },
    );
}

#[cfg(test)]
mod tests;
