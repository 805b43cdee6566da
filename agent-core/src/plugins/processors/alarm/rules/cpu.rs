//! cpu: total, single-core and load thresholds, first match wins; the
//! top processes go into `more`.
use super::{s, thr, InputRules};
use crate::config::{ConfigError, Finite, PluginConfig};
use crate::metric::{Metric, Str};
use crate::plugins::processors::alarm::{get, Ctx, Py, StateOpts, Text};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::fmt::Write;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CpuConf {
    percent: Option<Finite>,
    max_percent: Option<Finite>,
    loadavg_precent_1: Option<Finite>,
    use_process_top: Option<bool>,
}

pub(super) fn build(
    c: &PluginConfig,
    _alarm: &Value,
    opts: StateOpts,
) -> Result<Box<dyn InputRules>, ConfigError> {
    let k: CpuConf = c.parse()?;
    Ok(Box::new(Cpu {
        percent: thr(k.percent),
        max_percent: thr(k.max_percent),
        load: thr(k.loadavg_precent_1),
        process_top: k.use_process_top.unwrap_or(true),
        opts,
    }))
}

#[derive(Debug)]
pub(super) struct Cpu {
    percent: Option<f64>,
    max_percent: Option<f64>,
    load: Option<f64>,
    process_top: bool,
    opts: StateOpts,
}

impl Cpu {
    /// `pid.name(cpu%)` of the top processes: a ready string field
    /// `process_top`, or flattened `process_top_<i>_{pid,name,cpu_percent}`.
    fn process_top(m: &Metric) -> String {
        if let Some(v) = get(m, "process_top").and_then(|v| v.as_str().map(str::to_string)) {
            return v;
        }
        let mut out = String::new();
        for i in 0..64 {
            let mut key = String::with_capacity(32);
            let mut part = |suffix: &str| {
                key.clear();
                let _ = write!(key, "process_top_{i}_{suffix}");
                get(m, &key).map(|v| v.to_string())
            };
            let (Some(pid), Some(name), Some(cpu)) =
                (part("pid"), part("name"), part("cpu_percent"))
            else {
                if i == 0 {
                    continue;
                }
                break;
            };
            if !out.is_empty() {
                out.push_str(", ");
            }
            let _ = write!(out, "{pid}.{name}({cpu}%)");
        }
        out
    }
}

impl InputRules for Cpu {
    fn check(&self, m: &Metric, at: usize, ctx: &mut Ctx) {
        let rules: [(&str, &'static str, &str, Option<f64>, bool); 3] = [
            (
                "percent",
                "cpu.percent",
                "CPU 总使用率过高(%)",
                self.percent,
                true,
            ),
            (
                "max_percent",
                "cpu.max_percent",
                "CPU 单核使用率过高(%)",
                self.max_percent,
                true,
            ),
            (
                "loadavg_precent_1",
                "cpu.loadavg_precent_1",
                "系统平均负载过高(%)",
                self.load,
                false,
            ),
        ];
        let mut fired = false;
        for (key, rule, label, t, top) in rules {
            let Some(t) = t else { continue };
            let mut text = None;
            if !fired {
                if let Some((v, shown)) = ctx.num(m, key) {
                    if v >= t {
                        fired = true;
                        let more = if top && self.process_top {
                            Self::process_top(m)
                        } else {
                            String::new()
                        };
                        text = Some(Text::new(format!("{label}: {shown}>={}", Py(t))).more(more));
                    }
                }
            }
            ctx.check(Some(m), at, self.opts, &Str::default(), &s(rule), text);
        }
    }
}
