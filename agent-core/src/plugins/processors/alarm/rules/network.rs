//! network: per-NIC `kbps_in`/`kbps_out` thresholds and the VIP watch
//! (an address that left or joined a NIC).
use super::{s, thr, InputRules};
use crate::config::{load::key_string, ConfigError, Finite, PluginConfig};
use crate::metric::{Metric, Str};
use crate::plugins::processors::alarm::{get, Ctx, Py, StateOpts, Text, COMMON_KEYS};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NicConf {
    comment: Option<String>,
    kbps_in: Option<Finite>,
    kbps_out: Option<Finite>,
    vip: BTreeMap<String, Value>,
}

pub(super) fn build(
    c: &PluginConfig,
    alarm: &Value,
    opts: StateOpts,
) -> Result<Box<dyn InputRules>, ConfigError> {
    let Value::Mapping(map) = alarm else {
        unreachable!("checked above")
    };
    // Its keys are NIC names (each parsed as a NicConf below).
    c.declare_keys(&["*"]);
    let mut nics = HashMap::new();
    for (k, v) in map {
        let nic = key_string(k);
        if COMMON_KEYS.contains(&nic.as_str()) || v.is_null() {
            continue;
        }
        let n: NicConf = c.child(&nic, v.clone(), &nic).parse()?;
        let mut vip = Vec::new();
        for (family, ips) in n.vip {
            let list = match &ips {
                Value::Sequence(s) => s.iter().map(|i| Str::from(key_string(i))).collect(),
                Value::Null => Vec::new(),
                other => vec![Str::from(key_string(other))],
            };
            vip.push((Str::from(family), list));
        }
        nics.insert(
            Str::from(nic),
            Nic {
                comment: Str::from(n.comment.unwrap_or_default()),
                kbps_in: thr(n.kbps_in),
                kbps_out: thr(n.kbps_out),
                vip,
            },
        );
    }
    Ok(Box::new(Network { nics, opts }))
}

#[derive(Debug)]
struct Nic {
    comment: Str,
    kbps_in: Option<f64>,
    kbps_out: Option<f64>,
    vip: Vec<(Str, Vec<Str>)>,
}

#[derive(Debug)]
struct Network {
    nics: HashMap<Str, Nic>,
    opts: StateOpts,
}

impl InputRules for Network {
    fn check(&self, m: &Metric, at: usize, ctx: &mut Ctx) {
        let Some(nic_name) = get(m, "nic").and_then(|v| v.as_str()) else {
            return;
        };
        let Some(nic) = self.nics.get(nic_name) else {
            return;
        };
        let nic_name = Str::new(nic_name);
        for (key, rule, label, t) in [
            ("kbps_in", "network.kbps_in", "流入带宽(kbps)", nic.kbps_in),
            (
                "kbps_out",
                "network.kbps_out",
                "流出带宽(kbps)",
                nic.kbps_out,
            ),
        ] {
            let Some(t) = t else { continue };
            let v = ctx.num(m, key);
            let text = v.filter(|(v, _)| *v >= t).map(|(_, shown)| {
                Text::new(format!("{nic_name} {label}: {shown}>={}", Py(t)))
                    .tag(nic_name.clone())
                    .more(nic.comment.clone())
            });
            ctx.check(Some(m), at, self.opts, &nic_name, &s(rule), text);
        }
        for (family, ips) in &nic.vip {
            let now: Vec<Str> = get(m, family)
                .map(|v| v.to_string())
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(Str::new)
                .collect();
            let key = crate::plugins::processors::alarm::state::StateKey {
                input: ctx.input().clone(),
                series: nic_name.clone(),
                rule: family.clone(),
            };
            let last = ctx.store().vips.insert(key, now.clone());
            let Some(last) = last else { continue };
            let ts = m.timestamp_secs();
            for ip in ips {
                let (was, is) = (last.contains(ip), now.contains(ip));
                let text = if was && !is {
                    Text::new(format!("{nic_name} 减少 IP: {ip}")).flag(format!("vip_dec_{ts}"))
                } else if is && !was {
                    Text::new(format!("{nic_name} 增加 IP: {ip}")).flag(format!("vip_inc_{ts}"))
                } else {
                    continue;
                };
                ctx.emit(
                    Some(m),
                    at,
                    text.tag(nic_name.clone()).more(nic.comment.clone()),
                );
            }
        }
    }
}
