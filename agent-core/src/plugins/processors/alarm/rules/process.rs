//! process: instance counts (`min_process_num`, `max_process_num`) and
//! summed CPU and memory per process name, over the whole batch.
use super::{s, thr, InputRules};
use crate::config::{ConfigError, Finite, PluginConfig};
use crate::metric::{Metric, Str};
use crate::plugins::processors::alarm::{get, Ctx, Py, StateOpts, Text};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ProcConf {
    comment: Option<String>,
    min_process_num: Option<i64>,
    max_process_num: Option<i64>,
    cpu_percent: Option<Finite>,
    memory_percent: Option<Finite>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ProcessConf {
    target: BTreeMap<String, Option<ProcConf>>,
}

pub(super) fn build(
    c: &PluginConfig,
    _alarm: &Value,
    opts: StateOpts,
) -> Result<Box<dyn InputRules>, ConfigError> {
    let k: ProcessConf = c.parse()?;
    let procs = k
        .target
        .into_iter()
        .map(|(name, p)| {
            let p = p.unwrap_or_default();
            Proc {
                name: Str::from(name),
                comment: Str::from(p.comment.unwrap_or_default()),
                min: p.min_process_num.filter(|n| *n >= 0),
                max: p.max_process_num.filter(|n| *n >= 0),
                cpu: thr(p.cpu_percent),
                mem: thr(p.memory_percent),
            }
        })
        .collect();
    Ok(Box::new(Process { procs, opts }))
}

#[derive(Debug)]
struct Proc {
    name: Str,
    comment: Str,
    min: Option<i64>,
    max: Option<i64>,
    cpu: Option<f64>,
    mem: Option<f64>,
}

#[derive(Debug)]
struct Process {
    procs: Vec<Proc>,
    opts: StateOpts,
}

impl InputRules for Process {
    /// Rules that look at the whole batch (process counts).
    fn check_batch(&self, batch: &[Metric], ctx: &mut Ctx) {
        for p in &self.procs {
            let (mut count, mut cpu, mut mem, mut first) = (0i64, 0.0f64, 0.0f64, None);
            for (i, m) in batch.iter().enumerate() {
                if m.kind != crate::MetricKind::Metric
                    || get(m, "name").and_then(|v| v.as_str().map(|n| n == p.name)) != Some(true)
                {
                    continue;
                }
                count += 1;
                first.get_or_insert(i);
                cpu += ctx.num(m, "cpu_percent").map_or(0.0, |(n, _)| n);
                mem += ctx.num(m, "memory_percent").map_or(0.0, |(n, _)| n);
            }
            let n = &p.name;
            let mut fired: Option<(&'static str, String)> = None;
            if let Some(min) = p.min.filter(|min| count < *min) {
                fired = Some(("process.min", format!("{n} 进程数小于配置: {count}<{min}")));
            } else if let Some(max) = p.max.filter(|max| count > *max) {
                fired = Some(("process.max", format!("{n} 进程数大于配置: {count}>{max}")));
            } else if let Some(t) = p.cpu.filter(|t| cpu >= *t) {
                fired = Some((
                    "process.cpu",
                    format!("{n} CPU占用过高(%): {}>={}", Py(cpu), Py(t)),
                ));
            } else if let Some(t) = p.mem.filter(|t| mem >= *t) {
                let shown = crate::format::human::py_round(mem, 2);
                fired = Some((
                    "process.mem",
                    format!("{n} 内存占用过高(%): {}>={}", Py(shown), Py(t)),
                ));
            }
            // Tags of the process's first metric; for an absent process,
            // the batch's first metric without its per-process tags.
            let at = first.unwrap_or(0);
            let src: Option<Metric> = match first {
                Some(i) => Some(batch[i].clone()),
                None => batch.first().map(|m| {
                    let mut m = m.clone();
                    m.tags.retain(|(k, _)| {
                        !matches!(k.as_str(), "name" | "pid" | "ppid" | "username" | "exe")
                    });
                    m
                }),
            };
            for rule in ["process.min", "process.max", "process.cpu", "process.mem"] {
                let text = match &fired {
                    Some((r, info)) if *r == rule => {
                        Some(Text::new(info.clone()).more(p.comment.clone()))
                    }
                    _ => None,
                };
                ctx.check(src.as_ref(), at, self.opts, n, &s(rule), text);
            }
        }
    }
}
