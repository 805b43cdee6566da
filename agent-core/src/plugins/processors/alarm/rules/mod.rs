//! The rule engine of the built-in alarm rules, one file per input next to
//! it (like Vector's `sources/host_metrics/`), with PyAgent's exact message
//! texts. Thresholds are inclusive (`>=`); a threshold of 0 counts (PyAgent
//! took 0 as unset); a negative or absent threshold disables its check.
//!
//! An input with alarm rules adds its file here and one line to
//! [`BUILT_IN`]: its `build` reads the `alarm:` block, and the rules it
//! returns check each metric ([`InputRules::check`]) or the whole batch
//! ([`InputRules::check_batch`]), reporting through [`Ctx`], which keeps
//! the `for`/`repeat_sec`/`recovery` state.
use super::{Ctx, StateOpts};
use crate::config::{ConfigError, Finite, PluginConfig};
use crate::metric::{Metric, Str};
use serde::Deserialize;
use serde_yaml_ng::Value;

mod cpu;
mod curl;
mod demo;
mod disk;
mod mem;
mod network;
mod ping;
mod process;
mod telnet;

/// Builds an input's rules from its `alarm:` block (a mapping; `c` is its
/// config, whose errors name `alarm.<key>`).
type Build = fn(c: &PluginConfig, alarm: &Value, opts: StateOpts) -> BuildResult;
type BuildResult = Result<Box<dyn InputRules>, ConfigError>;

/// The inputs with built-in rules, by registered plugin name.
const BUILT_IN: &[(&str, Build)] = &[
    ("cpu", cpu::build),
    ("mem", mem::build),
    ("disk", disk::build),
    ("network", network::build),
    ("ping", ping::build),
    ("telnet", telnet::build),
    ("curl", curl::build),
    ("process", process::build),
    ("demo", demo::build),
];

/// One input's alarm rules.
pub(crate) trait InputRules: std::fmt::Debug + Send {
    /// Rules that look at the whole batch (process counts).
    fn check_batch(&self, _batch: &[Metric], _ctx: &mut Ctx) {}
    /// Per-metric rules; `at` is the metric's index in the batch.
    fn check(&self, _m: &Metric, _at: usize, _ctx: &mut Ctx) {}
}

/// The rules of one input plugin (none for an input without built-in rules
/// or without an `alarm:` mapping).
#[derive(Debug)]
pub(crate) struct Rules(Option<Box<dyn InputRules>>);

impl Rules {
    pub(crate) fn new(
        cfg: &PluginConfig,
        plugin: &str,
        alarm: &Value,
        opts: StateOpts,
    ) -> Result<Rules, ConfigError> {
        if !matches!(alarm, Value::Mapping(_)) {
            return Ok(Rules(None));
        }
        let Some((_, build)) = BUILT_IN.iter().find(|(name, _)| *name == plugin) else {
            return Ok(Rules(None));
        };
        let c = cfg.child("alarm", alarm.clone(), "alarm");
        Ok(Rules(Some(build(&c, alarm, opts)?)))
    }

    pub(crate) fn check_batch(&self, batch: &[Metric], ctx: &mut Ctx) {
        if let Some(r) = &self.0 {
            r.check_batch(batch, ctx);
        }
    }

    pub(crate) fn check(&self, m: &Metric, at: usize, ctx: &mut Ctx) {
        if let Some(r) = &self.0 {
            r.check(m, at, ctx);
        }
    }
}

/// A threshold that is set and not negative.
fn thr(t: Option<Finite>) -> Option<f64> {
    t.map(Finite::get).filter(|t| *t >= 0.0)
}

/// A rule name.
fn s(v: &'static str) -> Str {
    Str::new_static(v)
}

/// `{percent}`: mem's whole block, and disk's per-mount entries.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PercentConf {
    percent: Option<Finite>,
}
