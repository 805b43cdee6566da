//! telnet: a port that does not answer, for every target or the listed
//! ones.
use super::{s, InputRules};
use crate::config::{load::key_string, ConfigError, PluginConfig};
use crate::metric::{Metric, Str};
use crate::plugins::common::tag::metric_tag;
use crate::plugins::processors::alarm::{get, Ctx, StateOpts, Text};
use serde::Deserialize;
use serde_yaml_ng::Value;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TelnetConf {
    all: bool,
    target: Vec<Value>,
}

pub(super) fn build(
    c: &PluginConfig,
    _alarm: &Value,
    opts: StateOpts,
) -> Result<Box<dyn InputRules>, ConfigError> {
    let k: TelnetConf = c.parse()?;
    Ok(Box::new(Telnet {
        all: k.all,
        target: k.target.iter().map(|t| Str::from(key_string(t))).collect(),
        opts,
    }))
}

#[derive(Debug)]
struct Telnet {
    all: bool,
    target: Vec<Str>,
    opts: StateOpts,
}

impl InputRules for Telnet {
    fn check(&self, m: &Metric, at: usize, ctx: &mut Ctx) {
        let Some(tag) = metric_tag(m).filter(|t| !t.is_empty()) else {
            return;
        };
        if !(self.all || self.target.is_empty() || self.target.iter().any(|t| t == tag)) {
            return;
        }
        let up = get(m, "yes").is_some_and(|v| v.truthy());
        let tag = Str::new(tag);
        let text = (!up).then(|| {
            let more = get(m, "address").map(|a| a.to_string()).unwrap_or_default();
            Text::new(format!("{tag} - Telnet 端口不通"))
                .tag(tag.clone())
                .more(more)
        });
        ctx.check(Some(m), at, self.opts, &tag, &s("telnet.down"), text);
    }
}
