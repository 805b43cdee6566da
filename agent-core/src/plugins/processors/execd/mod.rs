//! `execd` processor: pipes metrics through a long-running program
//! (Telegraf's `execd` processor), in InfluxDB line protocol.
//!
//! Protocol, per batch: the agent writes each metric as one line, then a
//! control line `#batch-end <n>`; the program writes zero or more lines per
//! metric and copies every line starting with `#` to its stdout unchanged,
//! flushing after it. The agent reads until it sees its own `#batch-end
//! <n>` (anything before an older marker is a late answer and is dropped),
//! at most `batch_timeout`. Alarms are not sent: they stay where they are,
//! before the transformed metrics that followed them.
use crate::config::Seconds;
use crate::format::parse::{Parser, ParserConfig};
use crate::metric::{now_ns, Metric, MetricKind};
use crate::plugin::{PluginError, PluginResult, Processor};
use crate::plugins::common::exec::{
    encode, secs, ExecStats, ExecdChild, ExecdConfig, ExecdSettings,
};
use crate::registry::Registry;
use serde::Deserialize;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ExecdProcessorConfig {
    /// Seconds the program may take to answer one batch.
    pub batch_timeout: Seconds,
    #[serde(flatten)]
    pub execd: ExecdConfig,
}

impl Default for ExecdProcessorConfig {
    fn default() -> Self {
        ExecdProcessorConfig {
            batch_timeout: Seconds::from_secs(5),
            execd: ExecdConfig::default(),
        }
    }
}

pub struct ExecdProcessor {
    settings: ExecdSettings,
    batch_timeout: Duration,
    child: Option<ExecdChild>,
    parser: Parser,
    seq: u64,
    stats: Arc<ExecStats>,
}

/// What one exchange with the program produced.
struct Answer {
    metrics: Vec<Metric>,
    parse_errors: Vec<String>,
}

impl ExecdProcessor {
    /// Logs the program's stderr and restarts through `log`.
    pub fn with_log(mut self, log: &slog::Logger) -> Self {
        self.settings.log = log.clone();
        self
    }

    pub fn new(name: &str, cfg: ExecdProcessorConfig) -> Result<Self, (String, String)> {
        let settings = cfg.execd.settings(&format!("processor {name}"), true)?;
        Ok(ExecdProcessor {
            batch_timeout: secs(cfg.batch_timeout, "batch_timeout", 0.001, 3600.0)?,
            settings,
            child: None,
            parser: Parser::new(ParserConfig::default()),
            seq: 0,
            stats: Arc::default(),
        })
    }

    pub fn stats(&self) -> Arc<ExecStats> {
        self.stats.clone()
    }

    fn exchange(&mut self, metrics: &[Metric]) -> Result<Answer, String> {
        let child = self.child.as_ref().ok_or("the program is not started")?;
        self.seq += 1;
        let marker = format!("#batch-end {}", self.seq);
        let mut text = String::new();
        let mut unencodable = Vec::new();
        for m in metrics {
            if !encode::line_protocol(m, &mut text) {
                // No fields: line protocol cannot carry it; keep it as is.
                unencodable.push(m.clone());
            }
        }
        text.push_str(&marker);
        text.push('\n');
        child.send(text.into_bytes())?;
        let deadline = Instant::now() + self.batch_timeout;
        let max_lines = metrics.len() * 64 + 1024;
        let mut lines: Vec<String> = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match child.lines().recv_timeout(left) {
                Ok(line) => {
                    let t = line.text.trim_end();
                    if t == marker {
                        break;
                    }
                    if t.starts_with("#batch-end ") {
                        // The end of an earlier batch that timed out: its
                        // lines are late, not ours.
                        lines.clear();
                    } else if !t.starts_with('#') && lines.len() < max_lines {
                        lines.push(line.text);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "no `{marker}` from the program within batch_timeout ({:.1}s); \
                         batch passed on unchanged (does it echo `#` lines and flush?)",
                        self.batch_timeout.as_secs_f64()
                    ))
                }
                Err(RecvTimeoutError::Disconnected) => return Err(child.down_reason()),
            }
        }
        let template = Metric::new("", now_ns());
        let mut answer = Answer {
            metrics: unencodable,
            parse_errors: Vec::new(),
        };
        for l in &lines {
            if let Err(e) = self.parser.parse_line(l, &template, &mut answer.metrics) {
                answer.parse_errors.push(e.reason);
            }
        }
        Ok(answer)
    }
}

impl Processor for ExecdProcessor {
    /// Each exchange waits for the program's answer (up to `batch_timeout`).
    fn blocks(&self) -> bool {
        true
    }

    fn apply(&mut self, batch: &mut Vec<Metric>) -> PluginResult {
        if batch.is_empty() {
            return Ok(());
        }
        if self.child.is_none() {
            self.child = Some(ExecdChild::start(
                self.settings.clone(),
                self.stats.clone(),
            )?);
        }
        if let Some(child) = self.child.as_ref() {
            if !child.is_running() {
                return Err(PluginError::msg(format!(
                    "batch passed on unchanged: {}",
                    child.down_reason()
                )));
            }
            // Lines nobody asked for (printed between batches) are dropped.
            while child.lines().try_recv().is_ok() {}
        }
        let input = std::mem::take(batch);
        let mut failure: Option<String> = None;
        let mut parse_errors: Vec<String> = Vec::new();
        let mut segment: Vec<Metric> = Vec::new();
        let mut flush = |this: &mut Self, segment: &mut Vec<Metric>, out: &mut Vec<Metric>| {
            if segment.is_empty() {
                return;
            }
            if failure.is_some() {
                out.append(segment);
                return;
            }
            match this.exchange(segment) {
                Ok(answer) => {
                    out.extend(answer.metrics);
                    parse_errors.extend(answer.parse_errors);
                    segment.clear();
                }
                Err(e) => {
                    out.append(segment);
                    failure = Some(e);
                }
            }
        };
        for m in input {
            if m.kind == MetricKind::Alarm {
                flush(self, &mut segment, batch);
                batch.push(m);
            } else {
                segment.push(m);
            }
        }
        flush(self, &mut segment, batch);
        if !parse_errors.is_empty() {
            ExecStats::add(&self.stats.parse_errors, parse_errors.len() as u64);
        }
        match (failure, parse_errors.first()) {
            (Some(e), _) => Err(PluginError::msg(e)),
            (None, Some(first)) => Err(PluginError::msg(format!(
                "{} malformed lines from the program skipped (first: {first})",
                parse_errors.len()
            ))),
            (None, None) => Ok(()),
        }
    }
}

pub fn register(r: &mut Registry) {
    r.add_processor(
        "execd",
        "Pipes metrics through a long-running program as line protocol",
        include_str!("sample.yaml"),
        |cfg| {
            let mut keys = crate::plugins::common::exec::execd_keys();
            keys.push("batch_timeout");
            let parsed: ExecdProcessorConfig = cfg.parse_with_keys(&keys)?;
            ExecdProcessor::new(&cfg.instance, parsed)
                .map(|p| p.with_log(cfg.log()))
                .map_err(|(k, r)| cfg.error(&k, r).into())
        },
    );
}

#[cfg(test)]
mod tests;
