//! `discard`: PyAgent's discard sub-plugin. Drops fields by the metric's
//! `tag` (read from the tags, then the fields): `<TAG>: [fields]` wins;
//! otherwise `all: [fields]` applies unless the tag is listed in
//! `all_except`.
use crate::config::{load::key_string, PluginConfig};
use crate::metric::{Metric, Str};
use crate::plugin::{PluginResult, Processor};
use crate::plugins::common::tag::metric_tag;
use crate::registry::Registry;
use serde_yaml_ng::Value;
use std::collections::HashMap;

#[derive(Debug, Clone, Default)]
pub struct Discard {
    all: Vec<Str>,
    all_except: Vec<Str>,
    per_tag: HashMap<Str, Vec<Str>>,
}

fn string_list(cfg: &PluginConfig, key: &str, v: &Value) -> Result<Vec<Str>, crate::ConfigError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(items) => items
            .iter()
            .map(|i| match i {
                Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                    Ok(Str::from(key_string(i)))
                }
                _ => Err(cfg.error(key, "expected a list of names")),
            })
            .collect(),
        _ => Err(cfg.error(key, "expected a list of names")),
    }
}

impl Discard {
    pub fn from_config(cfg: &PluginConfig) -> Result<Self, crate::ConfigError> {
        let mut d = Discard::default();
        let value = cfg.value();
        let Value::Mapping(map) = &*value else {
            return Err(cfg.error(
                "",
                "expected a mapping: {all: [fields], all_except: [tags], <TAG>: [fields]}",
            ));
        };
        for (k, v) in map {
            let key = key_string(k);
            let list = string_list(cfg, &key, v)?;
            match key.as_str() {
                "all" => d.all = list,
                "all_except" => d.all_except = list,
                _ => {
                    d.per_tag.insert(Str::from(key), list);
                }
            }
        }
        Ok(d)
    }

    fn fields_for<'a>(&'a self, m: &Metric) -> &'a [Str] {
        let tag = metric_tag(m);
        if let Some(list) = tag.and_then(|t| self.per_tag.get(t)) {
            if !list.is_empty() {
                return list;
            }
        }
        match tag {
            Some(t) if self.all_except.iter().any(|e| e == t) => &[],
            _ => &self.all,
        }
    }
}

impl Processor for Discard {
    fn apply(&mut self, batch: &mut Vec<Metric>) -> PluginResult {
        for m in batch.iter_mut() {
            let drop = self.fields_for(m);
            if drop.is_empty() {
                continue;
            }
            m.fields.retain(|(k, _)| !drop.contains(k));
            m.tags.retain(|(k, _)| !drop.contains(k));
        }
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_processor(
        "discard",
        "Drops fields: all, all_except, or per `tag` (PyAgent's discard)",
        include_str!("sample.yaml"),
        |cfg| Ok(Discard::from_config(cfg)?),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(yaml: &str) -> Discard {
        let cfg = PluginConfig::from_value("discard", serde_yaml_ng::from_str(yaml).unwrap());
        Discard::from_config(&cfg).unwrap()
    }

    fn m(tag: Option<&str>, as_field: bool) -> Metric {
        let mut m = Metric::new("curl", 0).with_tag("node_ip", "1.2.3.4");
        if let Some(t) = tag {
            if as_field {
                m.push_field("tag", t);
            } else {
                m.set_tag("tag", t);
            }
        }
        m.push_field("status", 200i64);
        m.push_field("headers", "{}");
        m.push_field("response", "ok");
        m
    }

    fn keys(m: &Metric) -> Vec<&str> {
        m.fields.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn pyagent_curl_example() {
        // etc/aggs/curl.yaml of PyAgent: all drops headers+response, DemoCharge
        // keeps everything, 指定IP请求示例 drops only headers.
        let mut d = build(
            "{all: [headers, response], all_except: [DemoCharge], 指定IP请求示例: [headers]}",
        );
        let mut b = vec![
            m(Some("百度"), true),
            m(Some("DemoCharge"), true),
            m(Some("指定IP请求示例"), false),
            m(None, false),
        ];
        d.apply(&mut b).unwrap();
        assert_eq!(keys(&b[0]), ["tag", "status"]);
        assert_eq!(keys(&b[1]), ["tag", "status", "headers", "response"]);
        assert_eq!(keys(&b[2]), ["status", "response"]);
        assert_eq!(keys(&b[3]), ["status"]);
    }

    #[test]
    fn demo_after_hook_and_tags() {
        let mut d = build("{all: [demo_discard, node_ip]}");
        let mut b = vec![Metric::new("demo", 0)
            .with_tag("node_ip", "x")
            .with_field("x", 7i64)
            .with_field("demo_discard", "gone")];
        d.apply(&mut b).unwrap();
        assert_eq!(keys(&b[0]), ["x"]);
        assert!(b[0].tags.is_empty());
    }

    #[test]
    fn bad_config_names_the_key() {
        let cfg = PluginConfig::from_value("discard", serde_yaml_ng::from_str("{all: 3}").unwrap());
        let e = Discard::from_config(&cfg).unwrap_err();
        assert_eq!(e.key, "discard.all");
        assert!(e.reason.contains("list"), "{e}");
    }
}
