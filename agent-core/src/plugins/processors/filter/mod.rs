//! `filter`: Telegraf-style metric filtering (`namepass`, `namedrop`,
//! `fieldpass`, `fielddrop`, `tagpass`, `tagdrop`) with globs.
//! Alarms pass through untouched: filters shape measurements, they must
//! never hide an alarm by accident.
pub mod glob;

use self::glob::GlobSet;
use crate::metric::{Metric, MetricKind};
use crate::plugin::{PluginResult, Processor};
use crate::registry::Registry;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FilterConfig {
    pub namepass: Vec<String>,
    pub namedrop: Vec<String>,
    pub fieldpass: Vec<String>,
    pub fielddrop: Vec<String>,
    pub tagpass: BTreeMap<String, Vec<String>>,
    pub tagdrop: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct Filter {
    namepass: GlobSet,
    namedrop: GlobSet,
    fieldpass: GlobSet,
    fielddrop: GlobSet,
    tagpass: Vec<(String, GlobSet)>,
    tagdrop: Vec<(String, GlobSet)>,
}

fn tag_rules(m: &BTreeMap<String, Vec<String>>) -> Vec<(String, GlobSet)> {
    m.iter()
        .map(|(k, v)| (k.clone(), GlobSet::new(v)))
        .collect()
}

/// True when any listed tag key has a value matching one of its globs.
fn any_tag_matches(rules: &[(String, GlobSet)], m: &Metric) -> bool {
    rules
        .iter()
        .any(|(k, set)| m.tag(k).is_some_and(|v| set.matches(v)))
}

impl Filter {
    pub fn new(c: FilterConfig) -> Self {
        Filter {
            namepass: GlobSet::new(&c.namepass),
            namedrop: GlobSet::new(&c.namedrop),
            fieldpass: GlobSet::new(&c.fieldpass),
            fielddrop: GlobSet::new(&c.fielddrop),
            tagpass: tag_rules(&c.tagpass),
            tagdrop: tag_rules(&c.tagdrop),
        }
    }

    /// Whether the metric is kept; trims its fields when it is.
    fn keep(&self, m: &mut Metric) -> bool {
        if m.kind == MetricKind::Alarm {
            return true;
        }
        if !self.namepass.is_empty() && !self.namepass.matches(&m.name) {
            return false;
        }
        if self.namedrop.matches(&m.name) {
            return false;
        }
        if !self.tagpass.is_empty() && !any_tag_matches(&self.tagpass, m) {
            return false;
        }
        if any_tag_matches(&self.tagdrop, m) {
            return false;
        }
        if !self.fieldpass.is_empty() || !self.fielddrop.is_empty() {
            m.fields.retain(|(k, _)| {
                (self.fieldpass.is_empty() || self.fieldpass.matches(k))
                    && !self.fielddrop.matches(k)
            });
            // A metric without fields says nothing (Telegraf drops it too).
            return !m.fields.is_empty();
        }
        true
    }
}

impl Processor for Filter {
    fn apply(&mut self, batch: &mut Vec<Metric>) -> PluginResult {
        batch.retain_mut(|m| self.keep(m));
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_processor(
        "filter",
        "Telegraf-style namepass/namedrop/fieldpass/fielddrop/tagpass/tagdrop with globs",
        include_str!("sample.yaml"),
        |cfg| Ok(Filter::new(cfg.parse()?)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PluginConfig;

    fn build(yaml: &str) -> Filter {
        let cfg = PluginConfig::from_value("filter", serde_yaml_ng::from_str(yaml).unwrap());
        Filter::new(cfg.parse().unwrap())
    }

    fn batch() -> Vec<Metric> {
        let mut alarm = Metric::new("cpu", 0).with_field("info", "x");
        alarm.kind = MetricKind::Alarm;
        vec![
            Metric::new("cpu", 0)
                .with_tag("host", "web1")
                .with_field("percent", 1.0)
                .with_field("times_user", 2.0),
            Metric::new("mem", 0)
                .with_tag("host", "db1")
                .with_field("percent", 3.0),
            alarm,
            Metric::new("network", 0)
                .with_tag("nic", "eth0")
                .with_field("kbps_in", 4.0)
                .with_field("kbps_out", 5.0),
        ]
    }

    fn names(b: &[Metric]) -> Vec<&str> {
        b.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn namepass_and_namedrop() {
        let mut b = batch();
        build("namepass: ['c*', 'net*']").apply(&mut b).unwrap();
        assert_eq!(names(&b), ["cpu", "cpu", "network"]);
        let mut b = batch();
        build("namedrop: [mem]").apply(&mut b).unwrap();
        assert_eq!(names(&b), ["cpu", "cpu", "network"]);
    }

    #[test]
    fn tagpass_and_tagdrop() {
        let mut b = batch();
        build("tagpass: {host: ['web*']}").apply(&mut b).unwrap();
        // The alarm passes whatever the filters say.
        assert_eq!(names(&b), ["cpu", "cpu"]);
        let mut b = batch();
        build("tagdrop: {host: ['db?']}").apply(&mut b).unwrap();
        assert_eq!(names(&b), ["cpu", "cpu", "network"]);
    }

    #[test]
    fn fieldpass_fielddrop_and_empty_metrics_dropped() {
        let mut b = batch();
        build("fieldpass: ['*_in', 'percent']")
            .apply(&mut b)
            .unwrap();
        assert_eq!(names(&b), ["cpu", "mem", "cpu", "network"]);
        assert_eq!(b[0].fields.len(), 1);
        assert_eq!(b[3].fields.len(), 1);
        assert!(b[3].field("kbps_in").is_some());
        let mut b = batch();
        build("fielddrop: ['percent', 'kbps*']")
            .apply(&mut b)
            .unwrap();
        assert_eq!(names(&b), ["cpu", "cpu"]);
        assert!(b[0].field("times_user").is_some() && b[0].field("percent").is_none());
    }
}
