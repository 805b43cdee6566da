//! `console`: prints each metric as PyAgent's console line.
use crate::format::console;
use crate::metric::Metric;
use crate::plugin::{Output, PluginResult};
use crate::registry::Registry;
use serde::Deserialize;
use std::io::Write;

/// Where the lines go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    #[default]
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConsoleConfig {
    /// `stdout` (default) or `stderr`.
    #[serde(default)]
    pub target: Target,
}

pub struct Console {
    target: Target,
    buf: String,
}

impl Console {
    pub fn new(config: ConsoleConfig) -> Self {
        Console {
            target: config.target,
            buf: String::new(),
        }
    }
}

impl Output for Console {
    async fn write(&mut self, batch: &[Metric]) -> PluginResult {
        self.buf.clear();
        for m in batch {
            console::write_line(m, &mut self.buf);
        }
        // One locked write per batch; a closed pipe is an error to retry.
        match self.target {
            Target::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(self.buf.as_bytes())?;
                out.flush()?;
            }
            Target::Stderr => std::io::stderr().lock().write_all(self.buf.as_bytes())?,
        }
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_output(
        "console",
        "Prints metrics and alarms in PyAgent's console line format",
        include_str!("sample.yaml"),
        |cfg| Ok(Console::new(cfg.parse()?)),
    );
}
