//! disk: a `percent` threshold per mount, or only the mounts listed in
//! `disk_symbol`.
use super::{s, thr, InputRules, PercentConf};
use crate::config::{ConfigError, Finite, PluginConfig};
use crate::metric::{Metric, Str};
use crate::plugins::processors::alarm::{get, Ctx, Py, StateOpts, Text};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DiskConf {
    percent: Option<Finite>,
    disk_symbol: BTreeMap<String, Option<PercentConf>>,
}

pub(super) fn build(
    c: &PluginConfig,
    _alarm: &Value,
    opts: StateOpts,
) -> Result<Box<dyn InputRules>, ConfigError> {
    let k: DiskConf = c.parse()?;
    Ok(Box::new(Disk {
        percent: thr(k.percent),
        symbols: k
            .disk_symbol
            .into_iter()
            .map(|(m, p)| (mount_key(&m), p.and_then(|p| thr(p.percent))))
            .collect(),
        opts,
    }))
}

#[derive(Debug)]
struct Disk {
    percent: Option<f64>,
    symbols: HashMap<String, Option<f64>>,
    opts: StateOpts,
}

/// `C:\` → `c`, as PyAgent normalised Windows drives.
fn mount_key(m: &str) -> String {
    m.replace(":\\", "").to_lowercase()
}

impl InputRules for Disk {
    fn check(&self, m: &Metric, at: usize, ctx: &mut Ctx) {
        let Some(mount) = get(m, "mountpoint").or_else(|| get(m, "device")) else {
            return;
        };
        let key = mount_key(&mount.to_string());
        let t = if self.symbols.is_empty() {
            self.percent
        } else {
            match self.symbols.get(&key) {
                Some(t) => t.or(self.percent),
                None => return,
            }
        };
        let Some(t) = t else { return };
        let Some((v, shown)) = ctx.num(m, "percent") else {
            return;
        };
        let text =
            (v >= t).then(|| Text::new(format!("磁盘 {key} 占用率高(%): {shown}>={}", Py(t))));
        ctx.check(
            Some(m),
            at,
            self.opts,
            &Str::from(key),
            &s("disk.percent"),
            text,
        );
    }
}
