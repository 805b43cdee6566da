//! `converter`: PyAgent's converter sub-plugin. For each function
//! configured (`human_bytes`, `get_round`, ...), picks fields by exact name,
//! prefix, suffix or regex, converts them, and writes the result to
//! `name_prefix + field + name_suffix` (replacing the field when both are
//! empty). Everything is compiled at build time; the per-metric path reuses
//! its buffers and caches.
pub mod funcs;

use self::funcs::Func;
use crate::config::{load::key_string, ConfigError, PluginConfig};
use crate::metric::{FieldValue, Metric, Str};
use crate::plugin::{PluginError, PluginResult, Processor};
use crate::registry::Registry;
use regex::Regex;
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FieldConf {
    pub default_value: Option<Value>,
    pub name_override: Option<String>,
    pub delete_old: Option<bool>,
}

/// The options of one function.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FnConf {
    pub fields_items: Vec<Value>,
    pub fields_prefix: Vec<String>,
    pub fields_suffix: Vec<String>,
    /// Case-insensitive searches; entries that are not valid regexes (or
    /// not strings) are skipped, as PyAgent did.
    pub fields_regex: Vec<Value>,
    pub default_value: Option<Value>,
    pub name_prefix: String,
    pub name_suffix: String,
    pub delete_old: bool,
    pub fields_conf: BTreeMap<String, FieldConf>,
}

#[derive(Debug, Clone)]
struct FieldRule {
    default: Option<FieldValue>,
    name: Option<Str>,
    delete_old: Option<bool>,
}

/// Caches are cleared past this many entries: field names are few, but a
/// misbehaving input must not grow them forever.
const CACHE_CAP: usize = 4096;

#[derive(Debug, Clone)]
struct Conversion {
    name: &'static str,
    func: Func,
    items: Vec<Str>,
    prefixes: Vec<String>,
    suffixes: Vec<String>,
    regexes: Vec<Regex>,
    /// Regex verdict per field name.
    regex_cache: HashMap<Str, bool>,
    default: Option<FieldValue>,
    name_prefix: String,
    name_suffix: String,
    delete_old: bool,
    fields: HashMap<Str, FieldRule>,
    /// field → new key (`prefix + field + suffix`), built once.
    key_cache: HashMap<Str, Str>,
}

fn yaml_to_field(
    cfg: &PluginConfig,
    key: &str,
    v: &Value,
) -> Result<Option<FieldValue>, ConfigError> {
    Ok(Some(match v {
        Value::Null => return Ok(None),
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::Int(i),
            None => FieldValue::Float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => FieldValue::Str(Str::new(s)),
        _ => return Err(cfg.error(key, "default_value must be a number, a bool or a string")),
    }))
}

/// PyAgent replaced "falsy" results by the default when one was set.
fn is_falsy(v: &FieldValue) -> bool {
    match v {
        FieldValue::Int(i) => *i == 0,
        FieldValue::Uint(u) => *u == 0,
        FieldValue::Float(f) => *f == 0.0,
        FieldValue::Bool(b) => !*b,
        FieldValue::Str(s) => s.is_empty(),
    }
}

impl Conversion {
    fn new(
        cfg: &PluginConfig,
        name: &'static str,
        func: Func,
        c: FnConf,
    ) -> Result<Self, ConfigError> {
        let regexes = c
            .fields_regex
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Regex::new(&format!("(?i){s}")).ok(),
                _ => None,
            })
            .collect();
        let mut fields = HashMap::new();
        for (field, fc) in &c.fields_conf {
            let key = format!("{name}.fields_conf.{field}.default_value");
            fields.insert(
                Str::new(field),
                FieldRule {
                    default: yaml_to_field(
                        cfg,
                        &key,
                        fc.default_value.as_ref().unwrap_or(&Value::Null),
                    )?,
                    name: fc
                        .name_override
                        .as_deref()
                        .filter(|n| !n.is_empty())
                        .map(Str::new),
                    delete_old: fc.delete_old,
                },
            );
        }
        Ok(Conversion {
            name,
            func,
            items: c
                .fields_items
                .iter()
                .map(|v| Str::from(key_string(v)))
                .collect(),
            prefixes: c.fields_prefix,
            suffixes: c.fields_suffix,
            regexes,
            regex_cache: HashMap::new(),
            default: yaml_to_field(
                cfg,
                &format!("{name}.default_value"),
                c.default_value.as_ref().unwrap_or(&Value::Null),
            )?,
            name_prefix: c.name_prefix,
            name_suffix: c.name_suffix,
            delete_old: c.delete_old,
            fields,
            key_cache: HashMap::new(),
        })
    }

    fn selects(&mut self, field: &Str) -> bool {
        if self.items.iter().any(|i| i == field)
            || self.prefixes.iter().any(|p| field.starts_with(p.as_str()))
            || self.suffixes.iter().any(|s| field.ends_with(s.as_str()))
        {
            return true;
        }
        if self.regexes.is_empty() {
            return false;
        }
        if let Some(&hit) = self.regex_cache.get(field) {
            return hit;
        }
        let hit = self.regexes.iter().any(|re| re.is_match(field));
        if self.regex_cache.len() >= CACHE_CAP {
            self.regex_cache.clear();
        }
        self.regex_cache.insert(field.clone(), hit);
        hit
    }

    fn new_key(&mut self, field: &Str) -> Str {
        if !self.fields.is_empty() {
            if let Some(n) = self.fields.get(field).and_then(|f| f.name.clone()) {
                return n;
            }
        }
        if self.name_prefix.is_empty() && self.name_suffix.is_empty() {
            return field.clone();
        }
        if let Some(k) = self.key_cache.get(field) {
            return k.clone();
        }
        let k = Str::from(format!("{}{}{}", self.name_prefix, field, self.name_suffix));
        if self.key_cache.len() >= CACHE_CAP {
            self.key_cache.clear();
        }
        self.key_cache.insert(field.clone(), k.clone());
        k
    }

    /// Converts the selected fields of one metric. Returns how many
    /// conversions failed with no default to fall back on.
    fn apply(&mut self, m: &mut Metric, s: &mut Scratch) -> usize {
        s.pending.clear();
        let mut failed = 0;
        for i in 0..m.fields.len() {
            let field = &m.fields[i].0;
            if !self.selects(field) {
                continue;
            }
            let rule = if self.fields.is_empty() {
                None
            } else {
                self.fields.get(field)
            };
            let default = rule
                .and_then(|r| r.default.as_ref())
                .or(self.default.as_ref());
            let delete = rule.and_then(|r| r.delete_old).unwrap_or(self.delete_old);
            let value = match self.func.apply(&m.fields[i].1, &mut s.buf) {
                Some(v) if !(self.default.is_some() && is_falsy(&v)) => Some(v),
                _ => default.cloned(),
            };
            let field = field.clone();
            match value {
                Some(v) => {
                    let key = self.new_key(&field);
                    s.pending.push((i, key, Some(v), delete));
                }
                None => failed += 1,
            }
        }
        // In-place replacements first, then removals (back to front, so the
        // indices stay valid), then the new fields.
        for (i, key, v, _) in s.pending.iter_mut() {
            if m.fields[*i].0 == *key {
                if let Some(v) = v.take() {
                    m.fields[*i].1 = v;
                }
            }
        }
        for (i, key, _, delete) in s.pending.iter().rev() {
            if *delete && m.fields[*i].0 != *key {
                m.fields.remove(*i);
            }
        }
        for (_, key, v, _) in s.pending.drain(..) {
            if let Some(v) = v {
                m.set_field(key, v);
            }
        }
        failed
    }
}

#[derive(Debug, Default)]
struct Scratch {
    buf: String,
    pending: Vec<(usize, Str, Option<FieldValue>, bool)>,
}

/// The converter processor: its functions in config order.
#[derive(Debug)]
pub struct Converter {
    conversions: Vec<Conversion>,
    scratch: Scratch,
}

impl Converter {
    pub fn from_config(cfg: &PluginConfig) -> Result<Self, ConfigError> {
        let value = cfg.value();
        let Value::Mapping(map) = &*value else {
            return Err(cfg.error("", "expected a mapping of function names to options"));
        };
        let mut conversions = Vec::new();
        for (k, v) in map {
            let key = key_string(k);
            let Some((name, func)) = funcs::NAMES.iter().find(|(n, _)| *n == key).copied() else {
                return Err(cfg.error(
                    &key,
                    format!(
                        "unknown converter function; known: {}",
                        funcs::NAMES.map(|(n, _)| n).join(", ")
                    ),
                ));
            };
            // PyAgent skipped functions with an empty config.
            if matches!(v, Value::Null) {
                continue;
            }
            let conf: FnConf = cfg.child(&key, v.clone(), name).parse()?;
            conversions.push(Conversion::new(cfg, name, func, conf)?);
        }
        Ok(Converter {
            conversions,
            scratch: Scratch::default(),
        })
    }
}

impl Processor for Converter {
    fn apply(&mut self, batch: &mut Vec<Metric>) -> PluginResult {
        let mut failed = 0usize;
        let mut first: Option<(&'static str, Str)> = None;
        for m in batch.iter_mut() {
            for c in self.conversions.iter_mut() {
                let n = c.apply(m, &mut self.scratch);
                if n > 0 && first.is_none() {
                    first = Some((c.name, m.name.clone()));
                }
                failed += n;
            }
        }
        match first {
            None => Ok(()),
            Some((func, metric)) => Err(PluginError::msg(format!(
                "converter: {failed} field(s) could not be converted and have no default_value \
                 (first: {func} on a `{metric}` metric); they were left unchanged"
            ))),
        }
    }
}

pub fn register(r: &mut Registry) {
    r.add_processor(
        "converter",
        "Converts fields: human_bytes, get_round, get_comma, get_hash, ... (PyAgent's converter)",
        include_str!("sample.yaml"),
        |cfg| Ok(Converter::from_config(cfg)?),
    );
}

#[cfg(test)]
mod tests;
