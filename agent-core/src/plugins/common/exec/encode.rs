//! What the execd processor and output write to a child, one metric per
//! line: line protocol and PyAgent's shape come from the shared encoders in
//! `format`; Telegraf's JSON shape (`tags`/`fields` objects) is here.
use crate::metric::{FieldValue, Metric};

/// Appends one metric as a line of line protocol, newline included (the
/// shared encoder, `format::line_protocol`). Metrics without fields cannot
/// be expressed and are skipped (false).
pub(crate) fn line_protocol(m: &Metric, out: &mut String) -> bool {
    crate::format::line_protocol::write_metric(m, &Default::default(), out)
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

/// Appends one metric in PyAgent's flat shape (the `es` output's objects:
/// `name`, `kind`, `time`, `timestamp`, then tags and fields as keys).
pub(crate) fn pyagent_line(m: &Metric, out: &mut String) {
    crate::format::json::Encoder::new(true).write_object(m, out);
    out.push('\n');
}
