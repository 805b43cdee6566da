//! curl: status, body, JSON, header and field checks for every target
//! (`all`) and per target, with chosen fields in the message.
use super::{s, InputRules};
use crate::config::{load::key_string, ConfigError, PluginConfig};
use crate::metric::{FieldValue, Metric, Str};
use crate::plugins::common::tag::metric_tag;
use crate::plugins::processors::alarm::{get, Ctx, StateOpts, Text};
use serde_yaml_ng::Value;
use std::collections::HashMap;

pub(super) fn build(
    c: &PluginConfig,
    alarm: &Value,
    opts: StateOpts,
) -> Result<Box<dyn InputRules>, ConfigError> {
    let Value::Mapping(map) = alarm else {
        unreachable!("checked above")
    };
    c.declare_keys(&["all", "target", "use_msg_fields"]);
    let all = match map.get("all") {
        Some(v) => checks(c, "all", v)?,
        None => Vec::new(),
    };
    let mut target = Vec::new();
    if let Some(t) = map.get("target") {
        let Value::Mapping(tm) = t else {
            return Err(c.error("target", "expected a mapping of TAG: checks"));
        };
        for (tag, v) in tm {
            let tag = key_string(tag);
            let ch = checks(c, &format!("target.{tag}"), v)?;
            target.push((Str::from(tag), ch));
        }
    }
    let mut msg_all = Vec::new();
    let mut msg_except = Vec::new();
    let mut msg_tag = HashMap::new();
    if let Some(Value::Mapping(mm)) = map.get("use_msg_fields") {
        for (k, v) in mm {
            let list: Vec<Str> = match v {
                Value::Sequence(s) => s.iter().map(|i| Str::from(key_string(i))).collect(),
                _ => Vec::new(),
            };
            match key_string(k).as_str() {
                "all" => msg_all = list,
                "all_except" => msg_except = list,
                other => {
                    msg_tag.insert(Str::new(other), list);
                }
            }
        }
    }
    Ok(Box::new(Curl {
        all,
        target,
        msg_all,
        msg_except,
        msg_tag,
        opts,
    }))
}

/// One curl check, in config order.
#[derive(Debug, Clone)]
enum Check {
    Status(Vec<f64>),
    Contains(String),
    Json(Vec<(String, String)>),
    Headers(Vec<(String, String)>),
    Metric(Vec<(String, String)>),
}

/// PyAgent compared `str()` of values: None is '' in the config.
fn py_str(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Number(n) if n.is_f64() => FieldValue::Float(n.as_f64().unwrap_or(0.0)).to_string(),
        other => key_string(other),
    }
}

fn pairs(cfg: &PluginConfig, key: &str, v: &Value) -> Result<Vec<(String, String)>, ConfigError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Mapping(m) => Ok(m.iter().map(|(k, v)| (key_string(k), py_str(v))).collect()),
        _ => Err(cfg.error(key, "expected a mapping of key: value")),
    }
}

fn checks(cfg: &PluginConfig, key: &str, v: &Value) -> Result<Vec<Check>, ConfigError> {
    let Value::Mapping(map) = v else {
        return match v {
            Value::Null => Ok(Vec::new()),
            _ => Err(cfg.error(key, "expected a mapping of checks")),
        };
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let name = key_string(k);
        let at = format!("{key}.{name}");
        out.push(match name.as_str() {
            "status" => match v {
                Value::Sequence(items) => Check::Status(
                    items
                        .iter()
                        .map(|i| {
                            i.as_f64()
                                .ok_or_else(|| cfg.error(&at, "expected a list of status codes"))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                Value::Number(n) => Check::Status(vec![n.as_f64().unwrap_or(0.0)]),
                _ => return Err(cfg.error(&at, "expected a list of status codes")),
            },
            "contains" => Check::Contains(py_str(v)),
            "json" => Check::Json(pairs(cfg, &at, v)?),
            "headers" => Check::Headers(pairs(cfg, &at, v)?),
            "metric" => Check::Metric(pairs(cfg, &at, v)?),
            _ => {
                return Err(cfg.error(
                    &at,
                    "unknown check; use status, contains, json, headers or metric",
                ))
            }
        });
    }
    Ok(out)
}

#[derive(Debug)]
struct Curl {
    all: Vec<Check>,
    target: Vec<(Str, Vec<Check>)>,
    msg_all: Vec<Str>,
    msg_except: Vec<Str>,
    msg_tag: HashMap<Str, Vec<Str>>,
    opts: StateOpts,
}

/// Response headers: a JSON object string `headers`, or flattened
/// `headers_<name>` fields. Names compare case-insensitively (HTTP).
fn header<'a>(
    m: &'a Metric,
    json: &'a Option<serde_json::Map<String, serde_json::Value>>,
    k: &str,
) -> Option<String> {
    if let Some(map) = json {
        return map
            .iter()
            .find(|(hk, _)| hk.eq_ignore_ascii_case(k))
            .map(|(_, v)| json_py_str(v));
    }
    m.fields
        .iter()
        .find(|(fk, _)| {
            fk.strip_prefix("headers_")
                .is_some_and(|h| h.eq_ignore_ascii_case(k))
        })
        .map(|(_, v)| v.to_string())
}

fn json_py_str(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "None".into(),
        serde_json::Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) if n.is_f64() => {
            FieldValue::Float(n.as_f64().unwrap_or(0.0)).to_string()
        }
        other => other.to_string(),
    }
}

impl Curl {
    fn run(checks: &[Check], m: &Metric) -> Option<String> {
        for c in checks {
            match c {
                Check::Status(codes) => {
                    let status = get(m, "status");
                    let n = status.and_then(|v| v.num()).unwrap_or(0.0);
                    if !codes.contains(&n) {
                        let shown = status.map(|v| v.to_string()).unwrap_or_else(|| "0".into());
                        return Some(format!("HTTP 状态码错误: {shown}"));
                    }
                }
                Check::Contains(want) => {
                    let body = get(m, "response")
                        .map(|v| v.to_string())
                        .unwrap_or_default();
                    if !body.contains(want.as_str()) {
                        return Some(format!("返回值不包含: {want}"));
                    }
                }
                Check::Json(kv) => {
                    let body = get(m, "response")
                        .map(|v| v.to_string())
                        .unwrap_or_default();
                    let js = match serde_json::from_str::<serde_json::Value>(&body) {
                        Ok(serde_json::Value::Object(o)) if !o.is_empty() => o,
                        _ => return Some("返回值不是有效JSON键值对".into()),
                    };
                    for (k, v) in kv {
                        let got = js.get(k).map_or_else(|| "None".into(), json_py_str);
                        if got != *v {
                            return Some(format!("返回值: {k} != {v}"));
                        }
                    }
                }
                Check::Headers(kv) => {
                    let json = match get(m, "headers").and_then(|v| v.as_str().map(str::to_string))
                    {
                        Some(s) => match serde_json::from_str::<serde_json::Value>(&s) {
                            Ok(serde_json::Value::Object(o)) if !o.is_empty() => Some(o),
                            _ => None,
                        },
                        None => None,
                    };
                    let has_flat = m.fields.iter().any(|(k, _)| k.starts_with("headers_"));
                    if json.is_none() && !has_flat {
                        return Some("响应头为空或不正确".into());
                    }
                    for (k, v) in kv {
                        if header(m, &json, k).unwrap_or_else(|| "None".into()) != *v {
                            return Some(format!("响应头: {k} != {v}"));
                        }
                    }
                }
                Check::Metric(kv) => {
                    for (k, v) in kv {
                        let got = get(m, k).map_or_else(|| "None".into(), |x| x.to_string());
                        if got != *v {
                            return Some(format!("数据项: {k} != {v}"));
                        }
                    }
                }
            }
        }
        None
    }
}

impl InputRules for Curl {
    fn check(&self, m: &Metric, at: usize, ctx: &mut Ctx) {
        let tag = Str::new(metric_tag(m).unwrap_or(""));
        // Target rules first; `all` only when no target rule failed.
        let failed = self
            .target
            .iter()
            .filter(|(t, _)| *t == tag)
            .find_map(|(_, c)| Self::run(c, m))
            .or_else(|| Self::run(&self.all, m));
        let text = failed.map(|info| {
            let fields = match self.msg_tag.get(&tag).filter(|l| !l.is_empty()) {
                Some(l) => l.as_slice(),
                None if self.msg_except.contains(&tag) => &[],
                None => self.msg_all.as_slice(),
            };
            let msg: Vec<String> = fields
                .iter()
                .filter_map(|f| get(m, f).map(|v| v.to_string()))
                .collect();
            let url = get(m, "url").map(|v| v.to_string()).unwrap_or_default();
            Text::new(format!("{tag} - {info} {}", msg.join(", ")))
                .tag(tag.clone())
                .more(url)
        });
        ctx.check(Some(m), at, self.opts, &tag, &s("curl.check"), text);
    }
}
