//! InfluxDB line protocol:
//! `measurement[,tag=v...] field=v[,field=v...] [timestamp_ns]`.
//! Escapes: `\,` and `\ ` in measurements; `\,` `\=` `\ ` in tag keys,
//! tag values and field keys; `\"` and `\\` inside string field values.
use crate::metric::{FieldValue, Metric, Str};

/// Splits at the first unescaped `sep` outside double quotes (quotes count
/// only when `quotes` is set: in the field section).
fn split_unescaped(s: &str, sep: u8, quotes: bool) -> (&str, Option<&str>) {
    let b = s.as_bytes();
    let mut i = 0;
    let mut in_quotes = false;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'"' if quotes => in_quotes = !in_quotes,
            c if c == sep && !in_quotes => return (&s[..i], Some(&s[i + 1..])),
            _ => {}
        }
        i += 1;
    }
    (s, None)
}

/// Splits on every unescaped `sep` outside quotes.
fn split_all(s: &str, sep: u8, quotes: bool) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = s;
    loop {
        let (head, tail) = split_unescaped(rest, sep, quotes);
        parts.push(head);
        match tail {
            Some(t) => rest = t,
            None => return parts,
        }
    }
}

/// Removes backslashes before `,`, `=`, ` ` (and `\` itself).
fn unescape(s: &str) -> Str {
    if !s.contains('\\') {
        return Str::new(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&n) = chars.peek() {
                if matches!(n, ',' | '=' | ' ' | '\\' | '"') {
                    out.push(n);
                    chars.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    Str::from(out)
}

fn field_value(raw: &str) -> Result<FieldValue, String> {
    if let Some(inner) = raw.strip_prefix('"') {
        let inner = inner
            .strip_suffix('"')
            .ok_or_else(|| format!("unterminated string value {raw:?}"))?;
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some(n @ ('"' | '\\')) => out.push(n),
                    Some(n) => {
                        out.push('\\');
                        out.push(n);
                    }
                    None => out.push('\\'),
                }
            } else {
                out.push(c);
            }
        }
        return Ok(FieldValue::Str(Str::from(out)));
    }
    match raw {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(FieldValue::Bool(true)),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(FieldValue::Bool(false)),
        _ => {}
    }
    if let Some(n) = raw.strip_suffix('i') {
        return n
            .parse::<i64>()
            .map(FieldValue::Int)
            .map_err(|_| format!("invalid integer {raw:?}"));
    }
    if let Some(n) = raw.strip_suffix('u') {
        return n
            .parse::<u64>()
            .map(FieldValue::Uint)
            .map_err(|_| format!("invalid unsigned integer {raw:?}"));
    }
    match raw.parse::<f64>() {
        Ok(f) if f.is_finite() && !raw.is_empty() => Ok(FieldValue::Float(f)),
        _ => Err(format!("invalid field value {:?}", super::clip(raw))),
    }
}

/// Parses one non-empty, non-comment line. The template supplies the `info`
/// tags (line tags are added after them, replacing equal keys) and the
/// timestamp when the line has none.
pub(super) fn parse_line(line: &str, template: &Metric) -> Result<Metric, String> {
    let line = line.trim_start();
    // measurement+tags | fields | timestamp, separated by unescaped spaces.
    let (series, rest) = split_unescaped(line, b' ', false);
    let rest = rest.ok_or("missing fields")?;
    let rest = rest.trim_start_matches(' ');
    let (fields_part, ts_part) = split_unescaped(rest, b' ', true);
    let mut parts = split_all(series, b',', false).into_iter();
    let measurement = parts.next().unwrap_or_default();
    if measurement.is_empty() {
        return Err("missing measurement".into());
    }
    let mut m = Metric::new(unescape(measurement), template.timestamp_ns);
    m.kind = template.kind;
    m.tags = template.tags.clone();
    for tag in parts {
        let (k, v) = split_unescaped(tag, b'=', false);
        match v {
            Some(v) if !k.is_empty() && !v.is_empty() => m.set_tag(unescape(k), unescape(v)),
            _ => return Err(format!("invalid tag {:?}", super::clip(tag))),
        }
    }
    if fields_part.is_empty() {
        return Err("missing fields".into());
    }
    for field in split_all(fields_part, b',', true) {
        let (k, v) = split_unescaped(field, b'=', true);
        let v = match v {
            Some(v) if !k.is_empty() => v,
            _ => return Err(format!("invalid field {:?}", super::clip(field))),
        };
        let value = field_value(v).map_err(|e| format!("field {k:?}: {e}"))?;
        m.set_field(unescape(k), value);
    }
    if let Some(ts) = ts_part {
        let ts = ts.trim();
        if !ts.is_empty() {
            m.timestamp_ns = ts
                .parse::<i64>()
                .map_err(|_| format!("invalid timestamp {:?}", super::clip(ts)))?;
        }
    }
    Ok(m)
}
