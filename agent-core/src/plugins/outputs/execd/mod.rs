//! `execd` output: writes metrics to the stdin of a long-running program,
//! one per line (Telegraf's `execd` output).
use crate::metric::Metric;
use crate::plugin::{Output, PluginError, PluginResult};
use crate::plugins::common::exec::{encode, ExecStats, ExecdChild, ExecdConfig, ExecdSettings};
use crate::registry::Registry;
use serde::Deserialize;
use std::sync::Arc;

/// How metrics are written to the program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// InfluxDB line protocol.
    #[default]
    Influx,
    /// `{"name","kind","timestamp","tags":{..},"fields":{..}}` per line.
    Json,
    /// PyAgent's flat object per line: `name`, `kind`, `timestamp`, tags, fields.
    Pyagent,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ExecdOutputConfig {
    pub data_format: OutputFormat,
    #[serde(flatten)]
    pub execd: ExecdConfig,
}

pub struct ExecdOutput {
    settings: ExecdSettings,
    format: OutputFormat,
    child: Option<ExecdChild>,
    stats: Arc<ExecStats>,
}

impl ExecdOutput {
    /// Logs the program's stderr and restarts through `log`.
    pub fn with_log(mut self, log: &slog::Logger) -> Self {
        self.settings.log = log.clone();
        self
    }

    pub fn new(name: &str, cfg: ExecdOutputConfig) -> Result<Self, (String, String)> {
        // The program's stdout is logged (rate-limited), never parsed.
        let settings = cfg.execd.settings(&format!("output {name}"), false)?;
        Ok(ExecdOutput {
            settings,
            format: cfg.data_format,
            child: None,
            stats: Arc::default(),
        })
    }

    pub fn stats(&self) -> Arc<ExecStats> {
        self.stats.clone()
    }

    fn start(&mut self) -> PluginResult {
        if self.child.is_none() {
            self.child = Some(ExecdChild::start(
                self.settings.clone(),
                self.stats.clone(),
            )?);
        }
        match self.child.as_ref().and_then(ExecdChild::spawn_error) {
            Some(e) => Err(PluginError::msg(e)),
            None => Ok(()),
        }
    }

    fn encode(&self, batch: &[Metric]) -> String {
        let mut text = String::with_capacity(batch.len() * 128);
        for m in batch {
            match self.format {
                OutputFormat::Influx => {
                    // A metric without fields has no line protocol form.
                    encode::line_protocol(m, &mut text);
                }
                OutputFormat::Json => encode::json_line(m, &mut text),
                OutputFormat::Pyagent => encode::pyagent_line(m, &mut text),
            }
        }
        text
    }
}

impl Output for ExecdOutput {
    async fn connect(&mut self) -> PluginResult {
        self.start()
    }

    async fn write(&mut self, batch: &[Metric]) -> PluginResult {
        self.start()?;
        let text = self.encode(batch);
        let Some(child) = self.child.as_ref() else {
            return Err(PluginError::msg("the program is not started"));
        };
        if !child.is_running() {
            // The core keeps the batch and retries after the restart.
            return Err(PluginError::msg(child.down_reason()));
        }
        if text.is_empty() {
            return Ok(());
        }
        let written = child
            .write_queued(text.into_bytes())
            .map_err(PluginError::msg)?;
        match written.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(PluginError::msg(format!(
                "writing to the program failed: {e}"
            ))),
            Err(_) => Err(PluginError::msg(match self.child.as_ref() {
                Some(c) => c.down_reason(),
                None => "the program exited".into(),
            })),
        }
    }

    async fn close(&mut self) -> PluginResult {
        if let Some(mut child) = self.child.take() {
            child.stop_async().await;
        }
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_output(
        "execd",
        "Writes metrics to a long-running program's stdin (influx, json or pyagent lines)",
        include_str!("sample.yaml"),
        |cfg| {
            let mut keys = crate::plugins::common::exec::execd_keys();
            keys.push("data_format");
            let parsed: ExecdOutputConfig = cfg.parse_with_keys(&keys)?;
            ExecdOutput::new(&cfg.instance, parsed)
                .map(|p| p.with_log(cfg.log()))
                .map_err(|(k, r)| cfg.error(&k, r).into())
        },
    );
}

#[cfg(test)]
mod tests;
