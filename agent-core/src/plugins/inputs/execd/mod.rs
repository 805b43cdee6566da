//! `execd` input: keeps a program running and collects the metrics it
//! prints on stdout, one per line (Telegraf's `execd`). The program may
//! print on its own schedule (`signal: none`) or be asked once per gather
//! (`STDIN`: a newline on its stdin; `SIGUSR1`).
use crate::config::Seconds;
use crate::format::parse::{DataFormat, Parser, ParserConfig};
use crate::plugin::{Accumulator, Input, PluginError, PluginResult};
use crate::plugins::common::exec::{
    secs, ExecStats, ExecdChild, ExecdConfig, ExecdSettings, RateLimitedLog,
};
use crate::registry::Registry;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the program is told to report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Signal {
    /// It prints on its own schedule; a gather takes what arrived since the last.
    #[default]
    #[serde(alias = "NONE", alias = "none")]
    None,
    /// A newline is written to its stdin at each gather.
    #[serde(alias = "STDIN", alias = "stdin")]
    Stdin,
    /// SIGUSR1 is sent at each gather.
    #[serde(alias = "SIGUSR1", alias = "sigusr1")]
    Sigusr1,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ExecdInputConfig {
    pub signal: Signal,
    /// With a signal: seconds to wait for the first line of the answer
    /// (at most half the interval the input is gathered at).
    pub signal_wait: Seconds,
    /// The gather interval (read only to bound `signal_wait`: the core
    /// abandons a gather that outlives its interval); the planner's
    /// effective interval replaces it when the config is built from files.
    pub interval: Option<Seconds>,
    #[serde(flatten)]
    pub execd: ExecdConfig,
    #[serde(flatten)]
    pub parser: ParserConfig,
}

impl Default for ExecdInputConfig {
    fn default() -> Self {
        ExecdInputConfig {
            signal: Signal::None,
            signal_wait: Seconds::from_secs(2),
            interval: None,
            execd: ExecdConfig::default(),
            parser: ParserConfig::default(),
        }
    }
}

/// After the first line of an answer, lines closer together than this
/// belong to the same answer.
const ANSWER_GAP: Duration = Duration::from_millis(100);
/// A program younger than this is not sent SIGUSR1.
const SIGNAL_GRACE: Duration = Duration::from_millis(500);

pub struct ExecdInput {
    settings: ExecdSettings,
    signal: Signal,
    signal_wait: Duration,
    parser: Parser,
    child: Option<ExecdChild>,
    stats: Arc<ExecStats>,
    log: Arc<RateLimitedLog>,
}

impl ExecdInput {
    /// Logs the program's stderr, restarts and bad lines through `log`.
    pub fn with_log(mut self, log: &slog::Logger) -> Self {
        self.settings.log = log.clone();
        self.log = Arc::new(RateLimitedLog::new(log.clone(), self.settings.name.clone()));
        self
    }

    pub fn new(name: &str, cfg: ExecdInputConfig) -> Result<Self, (String, String)> {
        let settings = cfg.execd.settings(&format!("input {name}"), true)?;
        if cfg.parser.data_format == DataFormat::Nagios {
            return Err((
                "data_format".into(),
                "nagios needs an exit status per run: use the exec input".into(),
            ));
        }
        Ok(ExecdInput {
            signal: cfg.signal,
            signal_wait: secs(
                match cfg.interval {
                    Some(i) if i.as_secs_f64() > 0.0 => {
                        Seconds::new(cfg.signal_wait.as_secs_f64().min(i.as_secs_f64() / 2.0))
                            .unwrap_or(cfg.signal_wait)
                    }
                    _ => cfg.signal_wait,
                },
                "signal_wait",
                0.0,
                3600.0,
            )?,
            parser: Parser::new(cfg.parser),
            log: Arc::new(RateLimitedLog::new(
                settings.log.clone(),
                settings.name.clone(),
            )),
            settings,
            child: None,
            stats: Arc::default(),
        })
    }

    pub fn stats(&self) -> Arc<ExecStats> {
        self.stats.clone()
    }

    /// Parses one line into `acc`; a bad line is counted and logged.
    fn take_line(&self, line: crate::plugins::common::exec::Line, acc: &mut Accumulator) {
        let mut template = acc.metric();
        // A streaming program's line is as old as its arrival, not the gather.
        template.timestamp_ns = line.received_ns;
        let mut out = Vec::new();
        match self.parser.parse_line(&line.text, &template, &mut out) {
            Ok(()) => out.into_iter().for_each(|m| acc.add(m)),
            Err(e) => {
                ExecStats::add(&self.stats.parse_errors, 1);
                self.log.warn(|| {
                    format!(
                        "malformed {} line skipped: {}: {:?}",
                        self.parser.format().as_str(),
                        e.reason,
                        crate::format::parse::clip(&line.text)
                    )
                });
            }
        }
    }
}

impl ExecdInput {
    /// Parses up to `max` waiting lines; returns how many were taken.
    /// Synchronous, so no borrow of the (not `Sync`) channel spans an await.
    fn drain(&self, acc: &mut Accumulator, max: usize) -> usize {
        let Some(child) = self.child.as_ref() else {
            return 0;
        };
        let mut taken = 0;
        while taken < max {
            match child.lines().try_recv() {
                Ok(line) => {
                    self.take_line(line, acc);
                    taken += 1;
                }
                Err(_) => break,
            }
        }
        taken
    }

    /// Starts the child if needed and asks it to report; false when there
    /// is nothing to wait for.
    fn prepare(&mut self) -> PluginResult<bool> {
        if self.child.is_none() {
            self.child = Some(ExecdChild::start(
                self.settings.clone(),
                self.stats.clone(),
            )?);
        }
        let Some(child) = self.child.as_ref() else {
            return Ok(false);
        };
        if let Some(e) = child.spawn_error() {
            return Err(PluginError::msg(e));
        }
        if self.signal == Signal::None || !child.is_running() {
            return Ok(false);
        }
        let sent = match self.signal {
            Signal::Stdin => child.send(b"\n".to_vec()),
            // SIGUSR1's default action kills: give a fresh program time to
            // install its handler before the first one.
            Signal::Sigusr1 if child.running_for().unwrap_or_default() < SIGNAL_GRACE => {
                return Ok(false)
            }
            Signal::Sigusr1 => child.signal(libc::SIGUSR1),
            Signal::None => Ok(()),
        };
        if let Err(e) = sent {
            self.log.warn(|| format!("cannot signal the child: {e}"));
            return Ok(false);
        }
        Ok(true)
    }
}

impl Input for ExecdInput {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        // What arrived since the last gather, bounded so that a flooding
        // child cannot keep one gather going forever.
        let budget = self.settings.line_capacity * 4;
        let mut taken = self.drain(acc, budget);
        if !self.prepare()? {
            return Ok(());
        }
        // Poll for the answer without blocking the runtime: first up to
        // signal_wait, then as long as lines keep coming.
        let mut deadline = Instant::now() + self.signal_wait;
        let mut got_any = false;
        while taken < budget {
            let n = self.drain(acc, budget - taken);
            if n > 0 {
                taken += n;
                got_any = true;
                deadline = Instant::now() + ANSWER_GAP;
            } else if Instant::now() >= deadline {
                break;
            } else {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        if !got_any {
            let wait = self.signal_wait.as_secs_f64();
            self.log.warn(|| {
                format!(
                    "no answer within signal_wait ({wait:.1}s); it is collected at the next gather"
                )
            });
        }
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_input(
        "execd",
        "Keeps a program running and collects the metrics it prints, one per line",
        include_str!("sample.yaml"),
        |cfg| {
            let mut keys = crate::plugins::common::exec::execd_keys();
            keys.extend(["signal", "signal_wait", "interval"]);
            keys.extend_from_slice(crate::config::struct_fields::<ParserConfig>());
            let mut parsed: ExecdInputConfig = cfg.parse_with_keys(&keys)?;
            // The interval the core gathers at, also when it is main.yaml's:
            // a wait longer than the gather's timeout would get the program
            // killed and restarted at every slow answer.
            if let Some(i) = cfg.interval {
                parsed.interval = Seconds::new(i.as_secs_f64()).ok().or(parsed.interval);
            }
            ExecdInput::new(&cfg.instance, parsed)
                .map(|p| p.with_log(cfg.log()))
                .map_err(|(k, r)| cfg.error(&k, r).into())
        },
    );
}

#[cfg(test)]
mod tests;
