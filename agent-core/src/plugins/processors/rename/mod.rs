//! `rename`: renames fields, tags and the metric name.
//! `{fields: {old: new}, tags: {old: new}, name: new}`. A renamed key that
//! already exists replaces the existing entry. Alarms keep their name and
//! layout (`code info tag flag more`) so alarm consumers are not broken.
use crate::metric::{Metric, MetricKind, Str};
use crate::plugin::{PluginResult, Processor};
use crate::registry::Registry;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RenameConfig {
    pub fields: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Rename {
    fields: Vec<(Str, Str)>,
    tags: Vec<(Str, Str)>,
    name: Option<Str>,
}

fn pairs(m: &BTreeMap<String, String>) -> Vec<(Str, Str)> {
    m.iter()
        .filter(|(a, b)| a != b)
        .map(|(a, b)| (Str::new(a), Str::new(b)))
        .collect()
}

/// Renames `old` to `new` in a list of pairs, in place.
fn rename_in<V>(list: &mut Vec<(Str, V)>, old: &Str, new: &Str) {
    let Some(pos) = list.iter().position(|(k, _)| k == old) else {
        return;
    };
    list[pos].0 = new.clone();
    if let Some(dup) = list
        .iter()
        .enumerate()
        .position(|(i, (k, _))| i != pos && k == new)
    {
        list.remove(dup);
    }
}

impl Rename {
    pub fn new(c: RenameConfig) -> Self {
        Rename {
            fields: pairs(&c.fields),
            tags: pairs(&c.tags),
            name: c.name.filter(|n| !n.is_empty()).map(Str::from),
        }
    }
}

impl Processor for Rename {
    fn apply(&mut self, batch: &mut Vec<Metric>) -> PluginResult {
        for m in batch.iter_mut().filter(|m| m.kind == MetricKind::Metric) {
            for (old, new) in &self.fields {
                rename_in(&mut m.fields, old, new);
            }
            for (old, new) in &self.tags {
                rename_in(&mut m.tags, old, new);
            }
            if let Some(n) = &self.name {
                m.name = n.clone();
            }
        }
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_processor(
        "rename",
        "Renames fields, tags and the metric name",
        include_str!("sample.yaml"),
        |cfg| Ok(Rename::new(cfg.parse()?)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PluginConfig;
    use crate::metric::FieldValue;

    #[test]
    fn renames_fields_tags_and_name_keeping_order() {
        let cfg = PluginConfig::from_value(
            "rename",
            serde_yaml_ng::from_str(
                "{fields: {percent: used_percent, total: free}, tags: {host_name: host}, name: memory}",
            )
            .unwrap(),
        );
        let mut r = Rename::new(cfg.parse().unwrap());
        let mut alarm = Metric::new("mem", 0).with_field("percent", 1.0);
        alarm.kind = MetricKind::Alarm;
        let mut b = vec![
            Metric::new("mem", 0)
                .with_tag("host_name", "h1")
                .with_field("total", 10i64)
                .with_field("percent", 33.1)
                .with_field("free", 4i64),
            alarm.clone(),
        ];
        r.apply(&mut b).unwrap();
        let m = &b[0];
        assert_eq!(m.name, "memory");
        assert_eq!(m.tag("host"), Some("h1"));
        assert!(m.tag("host_name").is_none());
        // `total` became `free` and replaced the old `free`.
        let keys: Vec<&str> = m.fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["free", "used_percent"]);
        assert_eq!(m.field("free"), Some(&FieldValue::Int(10)));
        assert_eq!(b[1], alarm);
    }
}
