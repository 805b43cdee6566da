//! Minimal encoders for what the execd processor and output write to a
//! child: InfluxDB line protocol and JSON, one metric per line.
//!
//! Kept private to the exec plugins on purpose: a general line protocol
//! writer (`format::line_protocol`) is being written separately, and this
//! one should be folded into it.
use crate::metric::{FieldValue, Metric};
use std::fmt::Write;

fn escape(out: &mut String, s: &str, specials: &[char]) {
    for c in s.chars() {
        match c {
            // A raw newline would end the line: line protocol has no escape for it.
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c if specials.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

/// Appends one metric as a line of line protocol, newline included.
/// Metrics without fields cannot be expressed and are skipped (false).
pub(crate) fn line_protocol(m: &Metric, out: &mut String) -> bool {
    let fields: Vec<&(crate::Str, FieldValue)> = m
        .fields
        .iter()
        .filter(|(_, v)| !matches!(v, FieldValue::Float(f) if !f.is_finite()))
        .collect();
    if fields.is_empty() || m.name.is_empty() {
        return false;
    }
    escape(out, &m.name, &[',', ' ']);
    for (k, v) in &m.tags {
        // Empty tag keys or values are invalid in line protocol.
        if k.is_empty() || v.is_empty() {
            continue;
        }
        out.push(',');
        escape(out, k, &[',', '=', ' ']);
        out.push('=');
        escape(out, v, &[',', '=', ' ']);
    }
    out.push(' ');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        escape(out, k, &[',', '=', ' ']);
        out.push('=');
        match v {
            FieldValue::Int(x) => {
                let _ = write!(out, "{x}i");
            }
            FieldValue::Uint(x) => {
                let _ = write!(out, "{x}u");
            }
            FieldValue::Float(x) => {
                let _ = write!(out, "{x:?}");
            }
            FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            FieldValue::Str(s) => {
                out.push('"');
                escape(out, s, &['"', '\\']);
                out.push('"');
            }
        }
    }
    let _ = writeln!(out, " {}", m.timestamp_ns);
    true
}

fn json_value(v: &FieldValue) -> serde_json::Value {
    match v {
        FieldValue::Int(x) => (*x).into(),
        FieldValue::Uint(x) => (*x).into(),
        FieldValue::Float(x) => serde_json::Number::from_f64(*x)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        FieldValue::Bool(b) => (*b).into(),
        FieldValue::Str(s) => s.as_str().into(),
    }
}

/// Appends one metric as a JSON object line in Telegraf's shape:
/// `{"name","kind","timestamp" (seconds),"tags":{..},"fields":{..}}`.
pub(crate) fn json_line(m: &Metric, out: &mut String) {
    let tags: serde_json::Map<String, serde_json::Value> = m
        .tags
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_str().into()))
        .collect();
    let fields: serde_json::Map<String, serde_json::Value> = m
        .fields
        .iter()
        .map(|(k, v)| (k.to_string(), json_value(v)))
        .collect();
    let obj = serde_json::json!({
        "name": m.name.as_str(),
        "kind": m.kind.as_str(),
        "timestamp": m.timestamp_secs(),
        "tags": tags,
        "fields": fields,
    });
    out.push_str(&obj.to_string());
    out.push('\n');
}

/// Appends one metric in PyAgent's flat shape: `name`, `kind`, `timestamp`
/// (seconds), then tags and fields as top-level keys.
pub(crate) fn pyagent_line(m: &Metric, out: &mut String) {
    let mut obj = serde_json::Map::new();
    obj.insert("name".into(), m.name.as_str().into());
    obj.insert("kind".into(), m.kind.as_str().into());
    obj.insert("timestamp".into(), m.timestamp_secs().into());
    for (k, v) in &m.tags {
        obj.insert(k.to_string(), v.as_str().into());
    }
    for (k, v) in &m.fields {
        obj.insert(k.to_string(), json_value(v));
    }
    out.push_str(&serde_json::Value::Object(obj).to_string());
    out.push('\n');
}
