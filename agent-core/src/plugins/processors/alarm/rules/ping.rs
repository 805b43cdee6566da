//! ping: `loss`, `average` and `maximum` thresholds, overridden per
//! target; first match wins.
use super::{s, thr, InputRules};
use crate::config::{ConfigError, Finite, PluginConfig};
use crate::metric::{Metric, Str};
use crate::plugins::common::tag::metric_tag;
use crate::plugins::processors::alarm::{get, Ctx, Py, StateOpts, Text};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(default)]
struct PingThr {
    loss: Option<Finite>,
    average: Option<Finite>,
    maximum: Option<Finite>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PingConf {
    loss: Option<Finite>,
    average: Option<Finite>,
    maximum: Option<Finite>,
    target: BTreeMap<String, Option<PingThr>>,
}

pub(super) fn build(
    c: &PluginConfig,
    _alarm: &Value,
    opts: StateOpts,
) -> Result<Box<dyn InputRules>, ConfigError> {
    let k: PingConf = c.parse()?;
    let default = PingThr {
        loss: k.loss,
        average: k.average,
        maximum: k.maximum,
    };
    let target = k
        .target
        .into_iter()
        .map(|(t, p)| {
            let p = p.unwrap_or_default();
            (
                Str::from(t),
                PingThr {
                    loss: p.loss.or(default.loss),
                    average: p.average.or(default.average),
                    maximum: p.maximum.or(default.maximum),
                },
            )
        })
        .collect();
    Ok(Box::new(Ping {
        default,
        target,
        opts,
    }))
}

#[derive(Debug)]
struct Ping {
    default: PingThr,
    target: HashMap<Str, PingThr>,
    opts: StateOpts,
}

impl InputRules for Ping {
    fn check(&self, m: &Metric, at: usize, ctx: &mut Ctx) {
        let tag = Str::new(metric_tag(m).unwrap_or(""));
        let t = self.target.get(&tag).copied().unwrap_or(self.default);
        let mut fired = false;
        for (key, rule, label, t) in [
            ("loss", "ping.loss", "丢包比例过高(%)", thr(t.loss)),
            (
                "average",
                "ping.average",
                "平均延迟过高(ms)",
                thr(t.average),
            ),
            (
                "maximum",
                "ping.maximum",
                "最大延迟过高(ms)",
                thr(t.maximum),
            ),
        ] {
            let Some(t) = t else { continue };
            let mut text = None;
            if !fired {
                if let Some((v, shown)) = ctx.num(m, key) {
                    if v >= t {
                        fired = true;
                        let more = get(m, "address").map(|a| a.to_string()).unwrap_or_default();
                        text = Some(
                            Text::new(format!("{tag} {label}: {shown}>={}", Py(t)))
                                .tag(tag.clone())
                                .more(more),
                        );
                    }
                }
            }
            ctx.check(Some(m), at, self.opts, &tag, &s(rule), text);
        }
    }
}
