//! `alarm`: PyAgent's alarm checks (`etc/aggs/<input>.yaml` → `alarm:`),
//! chosen by the input's plugin (cpu, mem, disk, network, ping, telnet,
//! curl, process, demo), plus generic `threshold:` rules for any field, and
//! optional state: `for`, `repeat_sec`, `recovery`.
//!
//! The planner builds this processor with the whole `aggs.<input>` block.
//! An alarm is a metric of kind ALARM named after the input, carrying the
//! source metric's tags and the fields `code info tag flag more`, inserted
//! just before the metric that raised it.
mod rules;
pub mod state;
mod threshold;

use self::rules::Rules;
use self::state::{StateKey, Store};
use self::threshold::{Threshold, ThresholdConf};
use crate::config::{load::key_string, PluginConfig, Seconds};
use crate::metric::{FieldValue, Metric, MetricKind, Str};
use crate::plugin::{PluginError, PluginResult, Processor};
use crate::registry::Registry;
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::fmt;
use std::sync::MutexGuard;

/// The keys of the aggs block this processor reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Block {
    alarm: Value,
    threshold: Vec<ThresholdConf>,
    /// Which input's rules to use, when not the input's own plugin.
    plugin: Option<String>,
}

/// Keys every `alarm:` block accepts, whatever the input.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AlarmCommon {
    comment: Value,
    code: Option<String>,
    #[serde(rename = "for")]
    for_n: Option<u32>,
    repeat_sec: Option<Seconds>,
    recovery: Option<bool>,
}

/// Keys of `alarm:` that are options, never NIC names or rule names.
pub(crate) const COMMON_KEYS: [&str; 5] = ["comment", "code", "for", "repeat_sec", "recovery"];

/// When an alarm fires: after `for_n` consecutive breaching gathers, again
/// only after `repeat_ns` while it stays active, and with a recovery event
/// when it clears (if `recovery`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StateOpts {
    pub for_n: u32,
    pub repeat_ns: i64,
    pub recovery: bool,
}

impl StateOpts {
    pub(crate) const PYAGENT: StateOpts = StateOpts {
        for_n: 1,
        repeat_ns: 0,
        recovery: false,
    };

    fn stateless(&self) -> bool {
        self.for_n <= 1 && self.repeat_ns == 0 && !self.recovery
    }

    pub(crate) fn new(
        cfg: &PluginConfig,
        key: &str,
        for_n: Option<u32>,
        repeat_sec: Option<Seconds>,
        recovery: Option<bool>,
        base: StateOpts,
    ) -> Result<StateOpts, crate::ConfigError> {
        let repeat_ns = match repeat_sec {
            None => base.repeat_ns,
            // At most a year: far from overflowing a nanosecond timestamp sum.
            Some(s) => s
                .within(0.0, 86_400.0 * 365.0)
                .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                .map_err(|r| cfg.error(&crate::config::load::join(key, "repeat_sec"), r))?,
        };
        Ok(StateOpts {
            for_n: for_n.unwrap_or(base.for_n).max(1),
            repeat_ns,
            recovery: recovery.unwrap_or(base.recovery),
        })
    }
}

/// A value read from a metric: tags are looked at first, then fields, so
/// rules work whichever an input chose.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Val<'a> {
    Field(&'a FieldValue),
    Tag(&'a str),
}

impl<'a> Val<'a> {
    /// The value as a number: numbers and bools (PyAgent's bools were
    /// ints); tags are parsed; string fields are not numbers.
    pub(crate) fn num(&self) -> Option<f64> {
        match self {
            Val::Field(FieldValue::Str(_)) => None,
            Val::Field(v) => v.as_f64(),
            Val::Tag(s) => s.trim().parse().ok(),
        }
    }

    pub(crate) fn as_str(&self) -> Option<&'a str> {
        match self {
            Val::Field(FieldValue::Str(s)) => Some(s),
            Val::Field(_) => None,
            Val::Tag(s) => Some(s),
        }
    }

    /// Python truthiness of the value.
    pub(crate) fn truthy(&self) -> bool {
        match self {
            Val::Field(FieldValue::Str(s)) => !s.is_empty(),
            Val::Field(v) => v.as_f64().is_some_and(|f| f != 0.0),
            Val::Tag(s) => !matches!(*s, "" | "0" | "False" | "false"),
        }
    }
}

impl fmt::Display for Val<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Field(v) => write!(f, "{v}"),
            Val::Tag(s) => f.write_str(s),
        }
    }
}

pub(crate) fn get<'a>(m: &'a Metric, key: &str) -> Option<Val<'a>> {
    if let Some(t) = m.tag(key) {
        return Some(Val::Tag(t));
    }
    m.field(key).map(Val::Field)
}

/// A threshold as PyAgent printed it: always a float (`80` → `80.0`).
pub(crate) struct Py(pub f64);

impl fmt::Display for Py {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", FieldValue::Float(self.0))
    }
}

/// What an alarm says.
#[derive(Debug, Clone, Default)]
pub(crate) struct Text {
    pub info: String,
    pub tag: Str,
    pub flag: Str,
    /// Empty: the block's `comment` is used (as PyAgent did).
    pub more: Str,
}

impl Text {
    pub(crate) fn new(info: String) -> Text {
        Text {
            info,
            ..Text::default()
        }
    }
    pub(crate) fn tag(mut self, tag: impl Into<Str>) -> Text {
        self.tag = tag.into();
        self
    }
    pub(crate) fn more(mut self, more: impl Into<Str>) -> Text {
        self.more = more.into();
        self
    }
    pub(crate) fn flag(mut self, flag: impl Into<Str>) -> Text {
        self.flag = flag.into();
        self
    }
}

/// Bad data seen in a batch: reported once, after the whole batch.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    count: usize,
    first: Option<String>,
}

/// What rules use while checking one batch.
pub(crate) struct Ctx<'a> {
    input: &'a Str,
    code: &'a Str,
    comment: &'a Str,
    store: Option<MutexGuard<'static, Store>>,
    /// (index of the metric the alarm goes before, the alarm)
    out: &'a mut Vec<(usize, Metric)>,
    problems: Problems,
}

impl Ctx<'_> {
    pub(crate) fn problem(&mut self, what: impl FnOnce() -> String) {
        self.problems.count += 1;
        if self.problems.first.is_none() {
            self.problems.first = Some(what());
        }
    }

    /// A number at `key`; `None` when absent, or (reported) not a number.
    pub(crate) fn num<'m>(&mut self, m: &'m Metric, key: &str) -> Option<(f64, Val<'m>)> {
        let v = get(m, key)?;
        match v.num() {
            Some(n) => Some((n, v)),
            None => {
                self.problem(|| format!("`{key}` of a `{}` metric is not a number: {v}", m.name));
                None
            }
        }
    }

    pub(crate) fn store(&mut self) -> &mut Store {
        self.store.get_or_insert_with(state::lock)
    }

    pub(crate) fn input(&self) -> &Str {
        self.input
    }

    /// Builds the alarm metric for `src` and queues it before index `at`.
    pub(crate) fn emit(&mut self, src: Option<&Metric>, at: usize, text: Text) {
        let more = if text.more.is_empty() {
            self.comment.clone()
        } else {
            text.more
        };
        let (name, ts, tags) = match src {
            Some(m) => (m.name.clone(), m.timestamp_ns, m.tags.clone()),
            None => (self.input.clone(), crate::metric::now_ns(), Vec::new()),
        };
        let alarm = Metric {
            name,
            kind: MetricKind::Alarm,
            timestamp_ns: ts,
            tags,
            fields: vec![
                (Str::new_static("code"), FieldValue::Str(self.code.clone())),
                (
                    Str::new_static("info"),
                    FieldValue::Str(Str::from(text.info.trim())),
                ),
                (Str::new_static("tag"), FieldValue::Str(text.tag)),
                (Str::new_static("flag"), FieldValue::Str(text.flag)),
                (
                    Str::new_static("more"),
                    FieldValue::Str(Str::from(more.trim())),
                ),
            ],
        };
        self.out.push((at, alarm));
    }

    /// One rule's verdict for one series this gather: `Some(text)` when the
    /// condition holds. Applies `for`, `repeat_sec` and `recovery`.
    pub(crate) fn check(
        &mut self,
        src: Option<&Metric>,
        at: usize,
        opts: StateOpts,
        series: &Str,
        rule: &Str,
        text: Option<Text>,
    ) {
        if opts.stateless() {
            if let Some(t) = text {
                self.emit(src, at, t);
            }
            return;
        }
        let now = src.map_or_else(crate::metric::now_ns, |m| m.timestamp_ns);
        let key = StateKey {
            input: self.input.clone(),
            series: series.clone(),
            rule: rule.clone(),
        };
        let store = self.store();
        match text {
            Some(t) => {
                let st = store.rules.entry(key).or_default();
                st.consecutive = st.consecutive.saturating_add(1);
                if st.consecutive < opts.for_n {
                    return;
                }
                let due = !st.active
                    || opts.repeat_ns == 0
                    || now.saturating_sub(st.last_fired_ns) >= opts.repeat_ns;
                if !due {
                    return;
                }
                st.active = true;
                st.last_fired_ns = now;
                st.last_info.clear();
                st.last_info.push_str(t.info.trim());
                self.emit(src, at, t);
            }
            None => {
                let Some(st) = store.rules.remove(&key) else {
                    return;
                };
                if st.active && opts.recovery {
                    let info = format!("已恢复: {}", st.last_info);
                    self.emit(src, at, Text::new(info).tag(series.clone()).flag("recover"));
                }
            }
        }
    }
}

/// The alarm processor of one input's aggs block.
pub struct Alarm {
    input: Str,
    code: Str,
    comment: Str,
    rules: Rules,
    thresholds: Vec<Threshold>,
    pending: Vec<(usize, Metric)>,
}

impl Alarm {
    pub fn from_config(cfg: &PluginConfig) -> Result<Self, crate::ConfigError> {
        let block: Block = cfg.parse()?;
        let common: AlarmCommon = match &block.alarm {
            Value::Mapping(_) => cfg.child("alarm", block.alarm.clone(), "alarm").parse()?,
            Value::Null => AlarmCommon::default(),
            _ => return Err(cfg.error("alarm", "expected a mapping")),
        };
        let opts = StateOpts::new(
            cfg,
            "alarm",
            common.for_n,
            common.repeat_sec,
            common.recovery,
            StateOpts::PYAGENT,
        )?;
        let comment = match &common.comment {
            Value::Null => Str::default(),
            v => Str::from(key_string(v)),
        };
        let code = match common.code.as_deref() {
            Some(c) if !c.is_empty() => Str::new(c),
            _ => cfg.alarm_code.clone(),
        };
        let plugin = block
            .plugin
            .as_deref()
            .map_or_else(|| cfg.input_plugin(), Str::new);
        let rules = Rules::new(cfg, &plugin, &block.alarm, opts)?;
        let thresholds = block
            .threshold
            .into_iter()
            .enumerate()
            .map(|(i, t)| Threshold::new(cfg, i, t, opts))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Alarm {
            input: cfg.input.clone(),
            code,
            comment,
            rules,
            thresholds,
            pending: Vec::new(),
        })
    }
}

impl Processor for Alarm {
    fn apply(&mut self, batch: &mut Vec<Metric>) -> PluginResult {
        let Alarm {
            input,
            code,
            comment,
            rules,
            thresholds,
            pending,
        } = self;
        pending.clear();
        let mut ctx = Ctx {
            input,
            code,
            comment,
            store: None,
            out: pending,
            problems: Problems::default(),
        };
        rules.check_batch(batch, &mut ctx);
        for (i, m) in batch.iter().enumerate() {
            if m.kind == MetricKind::Alarm {
                continue;
            }
            rules.check(m, i, &mut ctx);
            for t in thresholds.iter() {
                t.check(m, i, &mut ctx);
            }
        }
        let problems = std::mem::take(&mut ctx.problems);
        drop(ctx);
        if !pending.is_empty() {
            // Alarms go just before their metric, in the order raised.
            pending.sort_by_key(|(at, _)| *at);
            let old = std::mem::take(batch);
            batch.reserve(old.len() + pending.len());
            let mut alarms = pending.drain(..).peekable();
            for (i, m) in old.into_iter().enumerate() {
                while let Some((_, a)) = alarms.next_if(|(at, _)| *at <= i) {
                    batch.push(a);
                }
                batch.push(m);
            }
            batch.extend(alarms.map(|(_, a)| a));
        }
        match problems.first {
            None => Ok(()),
            Some(first) => Err(PluginError::msg(format!(
                "alarm rules of `{}` skipped {} check(s) on bad data (first: {first})",
                self.input, problems.count
            ))),
        }
    }
}

pub fn register(r: &mut Registry) {
    r.add_processor(
        "alarm",
        "PyAgent alarm rules per input, generic thresholds, for/repeat_sec/recovery",
        include_str!("sample.yaml"),
        |cfg| Ok(Alarm::from_config(cfg)?),
    );
}

#[cfg(test)]
mod tests;
