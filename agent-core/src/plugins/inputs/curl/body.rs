//! Request bodies (`data` as JSON or a form) and JSON response bodies
//! merged into the metric as fields.
use super::PROTECTED;
use crate::metric::{FieldValue, Metric, Str};

/// `application/x-www-form-urlencoded` encoding of one key or value.
fn form_encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

fn yaml_scalar_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The request body and its content type from `data` and `type`.
pub(super) fn encode_body(
    data: &serde_yaml_ng::Value,
    kind: &str,
) -> Result<(Vec<u8>, &'static str), String> {
    if let serde_yaml_ng::Value::String(s) = data {
        let ct = if kind == "form" {
            "application/x-www-form-urlencoded"
        } else {
            "application/json"
        };
        return Ok((s.clone().into_bytes(), ct));
    }
    let json = serde_json::to_value(data).map_err(|e| format!("cannot be sent as JSON: {e}"))?;
    match kind {
        "json" => Ok((json.to_string().into_bytes(), "application/json")),
        "form" => {
            let serde_json::Value::Object(map) = json else {
                return Err("must be a mapping (or a string) for type: form".into());
            };
            let mut out = String::new();
            for (k, v) in map {
                if !out.is_empty() {
                    out.push('&');
                }
                form_encode(&k, &mut out);
                out.push('=');
                form_encode(&yaml_scalar_text(&v), &mut out);
            }
            Ok((out.into_bytes(), "application/x-www-form-urlencoded"))
        }
        other => Err(format!("unknown type `{other}`: use json or form")),
    }
}

/// Flattens a JSON value into `prefix_key` pairs.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, FieldValue)>) {
    use serde_json::Value as J;
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}_{k}")
        }
    };
    match v {
        J::Object(m) => {
            for (k, v) in m {
                flatten(&join(k), v, out);
            }
        }
        J::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten(&join(&i.to_string()), v, out);
            }
        }
        J::Null => {}
        J::Bool(b) => out.push((prefix.to_string(), FieldValue::Bool(*b))),
        J::Number(n) => out.push((
            prefix.to_string(),
            match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => FieldValue::Int(i),
                (_, Some(u), _) => FieldValue::Uint(u),
                (_, _, Some(f)) => FieldValue::Float(f),
                _ => FieldValue::Str(Str::from(n.to_string())),
            },
        )),
        J::String(s) => out.push((prefix.to_string(), FieldValue::Str(Str::from(s.as_str())))),
    }
}

/// Merges a JSON object body into `m`; keys that would overwrite a
/// protected key, a tag or a field already set get a `response_` prefix.
pub(super) fn merge_json(m: &mut Metric, body: &[u8]) {
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return;
    };
    let mut flat = Vec::new();
    flatten("", &serde_json::Value::Object(obj), &mut flat);
    for (k, v) in flat {
        let clash = |k: &str| PROTECTED.contains(&k) || m.field(k).is_some() || m.tag(k).is_some();
        let mut key = k;
        while clash(&key) {
            key = format!("response_{key}");
        }
        m.push_field(key, v);
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub(super) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
