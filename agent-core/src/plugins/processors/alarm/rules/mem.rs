//! mem: one `percent` threshold.
use super::{s, thr, InputRules, PercentConf};
use crate::config::{ConfigError, PluginConfig};
use crate::metric::{Metric, Str};
use crate::plugins::processors::alarm::{Ctx, Py, StateOpts, Text};
use serde_yaml_ng::Value;

pub(super) fn build(
    c: &PluginConfig,
    _alarm: &Value,
    opts: StateOpts,
) -> Result<Box<dyn InputRules>, ConfigError> {
    Ok(Box::new(Mem {
        percent: thr(c.parse::<PercentConf>()?.percent),
        opts,
    }))
}

#[derive(Debug)]
struct Mem {
    percent: Option<f64>,
    opts: StateOpts,
}

impl InputRules for Mem {
    fn check(&self, m: &Metric, at: usize, ctx: &mut Ctx) {
        let Some(t) = self.percent else { return };
        let Some((v, shown)) = ctx.num(m, "percent") else {
            return;
        };
        let text = (v >= t).then(|| Text::new(format!("内存占用率过高(%): {shown}>={}", Py(t))));
        ctx.check(
            Some(m),
            at,
            self.opts,
            &Str::default(),
            &s("mem.percent"),
            text,
        );
    }
}
