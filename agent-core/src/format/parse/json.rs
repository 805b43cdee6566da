//! JSON objects (Telegraf's `json` format) and PyAgent's metric shape.
use super::{JsonTimeFormat, Parser};
use crate::metric::{FieldValue, Metric, MetricKind, Str};
use serde_json::Value;

/// Flattens nested objects and arrays into `parent_child` / `parent_0` keys.
fn flatten(prefix: &str, v: Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}_{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.into_iter().enumerate() {
                let key = if prefix.is_empty() {
                    i.to_string()
                } else {
                    format!("{prefix}_{i}")
                };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_string(), other)),
    }
}

fn number(n: &serde_json::Number) -> FieldValue {
    if let Some(i) = n.as_i64() {
        FieldValue::Int(i)
    } else if let Some(u) = n.as_u64() {
        FieldValue::Uint(u)
    } else {
        FieldValue::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_time(v: &Value, format: JsonTimeFormat) -> Result<i64, String> {
    let as_f64 = || -> Option<f64> {
        match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    };
    let scale = match format {
        JsonTimeFormat::Rfc3339 => {
            let s = v.as_str().ok_or("time must be an RFC 3339 string")?;
            return chrono::DateTime::parse_from_rfc3339(s.trim())
                .ok()
                .and_then(|t| t.timestamp_nanos_opt())
                .ok_or_else(|| format!("invalid RFC 3339 time {:?}", super::clip(s)));
        }
        JsonTimeFormat::Unix => 1e9,
        JsonTimeFormat::UnixMs => 1e6,
        JsonTimeFormat::UnixUs => 1e3,
        JsonTimeFormat::UnixNs => 1.0,
    };
    // Integers keep full precision; fractions go through f64.
    if let Value::Number(n) = v {
        if let Some(i) = n.as_i64() {
            return i
                .checked_mul(scale as i64)
                .ok_or_else(|| format!("time value {i} out of range"));
        }
    }
    match as_f64() {
        Some(f) if f.is_finite() && (f * scale).abs() < 9.2e18 => Ok((f * scale) as i64),
        _ => Err(format!("invalid time value {v}")),
    }
}

/// One JSON object in Telegraf's `json` shape: numbers and booleans become
/// fields, `tag_keys` tags, `name_key` the name, strings only when listed in
/// `json_string_fields`, nulls are skipped.
pub(super) fn object(p: &Parser, v: Value, template: &Metric) -> Result<Metric, String> {
    if !v.is_object() {
        return Err(format!("expected a JSON object, got {}", kind_of(&v)));
    }
    let mut flat = Vec::new();
    flatten("", v, &mut flat);
    let mut m = template.clone();
    for (k, v) in flat {
        if p.cfg.name_key.as_deref() == Some(k.as_str()) {
            if let Some(s) = scalar_string(&v) {
                m.name = Str::from(s);
            }
            continue;
        }
        if p.cfg.json_time_key.as_deref() == Some(k.as_str()) {
            m.timestamp_ns = parse_time(&v, p.cfg.json_time_format)?;
            continue;
        }
        if p.cfg.tag_keys.contains(&k) {
            if let Some(s) = scalar_string(&v) {
                m.set_tag(k, s);
            }
            continue;
        }
        match v {
            Value::Number(n) => m.set_field(k, number(&n)),
            Value::Bool(b) => m.set_field(k, b),
            Value::String(s) if p.all_strings || p.cfg.json_string_fields.contains(&k) => {
                m.set_field(k, s)
            }
            _ => {}
        }
    }
    // A configured time key that is absent is not an error: the gather time stays.
    Ok(m)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// PyAgent's metric shape: `{"name", "kind", "time"|"timestamp", <info
/// keys>, <data>}`. `name` and `kind` go to the header, `timestamp` (epoch
/// seconds) or `time` (RFC 3339 or epoch seconds) to the time, keys equal to
/// one of the template's tags (the `info` keys) replace that tag, and the
/// rest become fields, nested values flattened with `_`. Every string is kept.
pub(super) fn pyagent(v: Value, template: &Metric) -> Result<Metric, String> {
    let Value::Object(map) = v else {
        return Err(format!("expected a JSON object, got {}", kind_of(&v)));
    };
    let mut m = template.clone();
    let mut rest = Vec::new();
    let mut time: Option<i64> = None;
    for (k, v) in map {
        match k.as_str() {
            "name" => {
                m.name = Str::from(scalar_string(&v).ok_or("`name` must be a string")?);
            }
            "kind" => {
                m.kind = match v.as_str().map(|s| s.to_ascii_uppercase()).as_deref() {
                    Some("METRIC") => MetricKind::Metric,
                    Some("ALARM") => MetricKind::Alarm,
                    _ => return Err(format!("`kind` must be METRIC or ALARM, got {v}")),
                };
            }
            "timestamp" => time = Some(parse_time(&v, JsonTimeFormat::Unix)?),
            "time" => {
                // `timestamp` wins: PyAgent printed both, `time` being local ISO text.
                if time.is_none() {
                    let format = if v.is_string() && v.as_str().is_some_and(|s| s.contains('T')) {
                        JsonTimeFormat::Rfc3339
                    } else {
                        JsonTimeFormat::Unix
                    };
                    time = Some(parse_time(&v, format)?);
                }
            }
            _ if template.tags.iter().any(|(t, _)| *t == k) => {
                if let Some(s) = scalar_string(&v) {
                    m.set_tag(k, s);
                }
            }
            _ => flatten(&k, v, &mut rest),
        }
    }
    if let Some(t) = time {
        m.timestamp_ns = t;
    }
    for (k, v) in rest {
        match v {
            Value::Number(n) => m.set_field(k, number(&n)),
            Value::Bool(b) => m.set_field(k, b),
            Value::String(s) => m.set_field(k, s),
            _ => {}
        }
    }
    if m.fields.is_empty() {
        return Err("no data fields".into());
    }
    Ok(m)
}
