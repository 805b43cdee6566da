//! demo: PyAgent's example alarm, `x` below `limit`.
use super::{s, InputRules};
use crate::config::{ConfigError, Finite, PluginConfig};
use crate::metric::{Metric, Str};
use crate::plugins::processors::alarm::{Ctx, StateOpts, Text};
use serde::Deserialize;
use serde_yaml_ng::Value;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DemoConf {
    limit: Option<Finite>,
}

pub(super) fn build(
    c: &PluginConfig,
    _alarm: &Value,
    opts: StateOpts,
) -> Result<Box<dyn InputRules>, ConfigError> {
    Ok(Box::new(Demo {
        limit: c.parse::<DemoConf>()?.limit.map(Finite::get),
        opts,
    }))
}

#[derive(Debug)]
struct Demo {
    limit: Option<f64>,
    opts: StateOpts,
}

impl InputRules for Demo {
    fn check(&self, m: &Metric, at: usize, ctx: &mut Ctx) {
        let Some(limit) = self.limit else { return };
        let Some((x, _)) = ctx.num(m, "x") else {
            return;
        };
        let text = (x < limit).then(|| {
            Text::new("示例报警数据".into())
                .tag("demo")
                .flag("test")
                .more("报警附加消息")
        });
        ctx.check(
            Some(m),
            at,
            self.opts,
            &Str::default(),
            &s("demo.limit"),
            text,
        );
    }
}
