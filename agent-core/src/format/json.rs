//! Flat JSON objects, PyAgent's shape for the `es` output:
//!
//! ```json
//! {"name":"mem","time":"2021-11-08T16:58:55+08:00","timestamp":1636361935,
//!  "node_ip":"10.0.0.5","host_name":"web1","total":8348397568,"percent":33.1}
//! ```
//!
//! Keys in order: `name`, (`kind` when asked for: `METRIC` or `ALARM`),
//! `time` (ISO-8601 seconds with the host's UTC offset), `timestamp` (epoch
//! seconds), the tags (the `info` keys first), then the fields. Numbers and
//! booleans are real JSON numbers and booleans; NaN and infinities, which
//! JSON cannot carry, become `null`. A tag or field whose key repeats one
//! already written (`name`, `time`, `timestamp`, `kind` or an earlier tag)
//! is left out, so a plugin's data can never overwrite the metric's identity
//! (a PyAgent bug).
use crate::format::line_protocol::{fmt_i64, fmt_u64, push_f64};
use crate::metric::{FieldValue, Metric};
use chrono::{Local, TimeZone};

/// Encodes metrics as JSON objects; caches the formatted `time`, which is
/// the same for every metric of a gather.
#[derive(Debug, Default)]
pub struct Encoder {
    /// Write a `kind` key (`METRIC`/`ALARM`).
    pub with_kind: bool,
    cached_secs: Option<i64>,
    cached_time: String,
}

impl Encoder {
    pub fn new(with_kind: bool) -> Self {
        Encoder {
            with_kind,
            ..Default::default()
        }
    }

    fn time(&mut self, secs: i64) -> &str {
        if self.cached_secs != Some(secs) {
            self.cached_time = match Local.timestamp_opt(secs, 0).single() {
                Some(t) => t.format("%Y-%m-%dT%H:%M:%S%:z").to_string(),
                None => secs.to_string(),
            };
            self.cached_secs = Some(secs);
        }
        &self.cached_time
    }

    /// Appends one JSON object (no separator) to `out`.
    pub fn write_object(&mut self, m: &Metric, out: &mut String) {
        let secs = m.timestamp_secs();
        out.push_str("{\"name\":");
        push_str(out, &m.name);
        if self.with_kind {
            out.push_str(",\"kind\":\"");
            out.push_str(m.kind.as_str());
            out.push('"');
        }
        out.push_str(",\"time\":\"");
        let with_kind = self.with_kind;
        out.push_str(self.time(secs));
        out.push_str("\",\"timestamp\":");
        let mut buf = [0u8; 20];
        out.push_str(fmt_i64(&mut buf, secs));
        let reserved =
            |k: &str| matches!(k, "name" | "time" | "timestamp") || (with_kind && k == "kind");
        for (i, (k, v)) in m.tags.iter().enumerate() {
            if reserved(k) || m.tags[..i].iter().any(|(p, _)| p == k) {
                continue;
            }
            out.push(',');
            push_str(out, k);
            out.push(':');
            push_str(out, v);
        }
        for (i, (k, v)) in m.fields.iter().enumerate() {
            if reserved(k)
                || m.tags.iter().any(|(p, _)| p == k)
                || m.fields[..i].iter().any(|(p, _)| p == k)
            {
                continue;
            }
            out.push(',');
            push_str(out, k);
            out.push(':');
            push_value(out, v);
        }
        out.push('}');
    }

    /// Appends a JSON array of objects.
    pub fn write_array(&mut self, batch: &[Metric], out: &mut String) {
        out.push('[');
        for (i, m) in batch.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            self.write_object(m, out);
        }
        out.push(']');
    }
}

/// A JSON string literal with the escapes RFC 8259 requires.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, hence a char boundary.
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

pub fn push_value(out: &mut String, v: &FieldValue) {
    let mut buf = [0u8; 20];
    match v {
        FieldValue::Int(i) => out.push_str(fmt_i64(&mut buf, *i)),
        FieldValue::Uint(u) => out.push_str(fmt_u64(&mut buf, *u)),
        // Whole floats keep `.0`, so they stay floats for the reader; an
        // exponent may appear, which JSON allows.
        FieldValue::Float(f) if f.is_finite() => push_f64(out, *f),
        FieldValue::Float(_) => out.push_str("null"),
        FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        FieldValue::Str(s) => push_str(out, s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::MetricKind;

    #[test]
    fn pyagent_shape_and_types() {
        std::env::set_var("TZ", "UTC");
        let m = Metric::new("mem", 1_636_361_935_500_000_000)
            .with_tag("node_ip", "10.0.0.5")
            .with_tag("host_name", "web1")
            .with_field("total", 8_348_397_568u64)
            .with_field("neg", -3i64)
            .with_field("percent", 33.1)
            .with_field("whole", 5000.0)
            .with_field("isup", true)
            .with_field("bad", f64::NAN)
            .with_field("human", "7.8 GB");
        let mut out = String::new();
        Encoder::new(false).write_object(&m, &mut out);
        assert_eq!(
            out,
            r#"{"name":"mem","time":"2021-11-08T08:58:55+00:00","timestamp":1636361935,"node_ip":"10.0.0.5","host_name":"web1","total":8348397568,"neg":-3,"percent":33.1,"whole":5000.0,"isup":true,"bad":null,"human":"7.8 GB"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["total"], 8_348_397_568u64);
    }

    #[test]
    fn escapes_and_reserved_keys() {
        std::env::set_var("TZ", "UTC");
        let mut m = Metric::new("we\"ird\\", 0)
            .with_tag("host", "a\nb\u{1}测")
            .with_field("name", "overwrite attempt")
            .with_field("host", "dup")
            .with_field("kind", "x");
        m.kind = MetricKind::Alarm;
        let mut out = String::new();
        Encoder::new(true).write_array(&[m.clone(), m], &mut out);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let o = v[1].as_object().unwrap();
        assert_eq!(o["name"], "we\"ird\\");
        assert_eq!(o["kind"], "ALARM");
        assert_eq!(o["host"], "a\nb\u{1}测");
        assert_eq!(o.len(), 5, "{out}");
        assert!(out.contains("\\u0001"));
    }
}
