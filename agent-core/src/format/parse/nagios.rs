//! Nagios plugin output (the Nagios plugin API):
//!
//! ```text
//! DISK OK - free space: / 3326 MB (56%) | /=2643MB;5948;5958;0;5968
//! optional long text lines
//! | more perfdata
//! ```
//!
//! The exit status is the state (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
use super::ParseError;
use crate::metric::{FieldValue, Metric, Str};

/// Fills one metric from a Nagios plugin's output and exit status
/// (`None`: killed by a signal, read as UNKNOWN). Fields: `state`,
/// `service_output`, `long_service_output` (when there are more lines), and
/// per perfdata label `<label>_value`, `_warn`, `_crit`, `_min`, `_max`
/// (`_warn_lt`/`_warn_gt` for ranges) and `<label>_unit`.
/// Malformed perfdata items are skipped and reported after the metric is added.
pub fn parse_nagios(
    text: &str,
    exit_code: Option<i32>,
    template: &Metric,
    out: &mut Vec<Metric>,
) -> Result<(), ParseError> {
    let state = match exit_code {
        Some(c @ 0..=3) => c as i64,
        _ => 3,
    };
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    let (service_output, first_perf) = match first.split_once('|') {
        Some((t, p)) => (t.trim(), p),
        None => (first.trim(), ""),
    };
    let mut perf = vec![first_perf.to_string()];
    let mut long_text = Vec::new();
    let mut in_perf = false;
    for line in lines {
        if in_perf {
            perf.push(line.to_string());
        } else if let Some((t, p)) = line.split_once('|') {
            if !t.trim().is_empty() {
                long_text.push(t.trim_end());
            }
            perf.push(p.to_string());
            in_perf = true;
        } else {
            long_text.push(line.trim_end());
        }
    }
    let mut m = template.clone();
    m.push_field("state", state);
    m.push_field("service_output", service_output);
    if !long_text.is_empty() {
        m.push_field("long_service_output", long_text.join("\n"));
    }
    let mut bad = Vec::new();
    for chunk in &perf {
        for item in split_perf(chunk) {
            if let Err(e) = perf_item(&item, &mut m) {
                bad.push(e);
            }
        }
    }
    out.push(m);
    if bad.is_empty() {
        Ok(())
    } else {
        Err(ParseError::new(1, format!("perfdata: {}", bad.join("; "))))
    }
}

/// Splits perfdata on spaces, keeping `'quoted labels'` whole.
fn split_perf(s: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    items.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        items.push(cur);
    }
    items
}

/// `'label'=value[UOM];[warn];[crit];[min];[max]`
fn perf_item(item: &str, m: &mut Metric) -> Result<(), String> {
    let (label, rest) = item
        .rsplit_once('=')
        .filter(|(l, _)| !l.is_empty())
        .ok_or_else(|| format!("{:?} is not label=value", super::clip(item)))?;
    let label = label
        .trim_matches('\'')
        .replace("''", "'")
        .replace(' ', "_");
    let mut parts = rest.split(';');
    let raw_value = parts.next().unwrap_or("");
    // `U` is Nagios for "value unknown".
    if raw_value == "U" {
        return Ok(());
    }
    let num_end = raw_value
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(raw_value.len());
    let (num, unit) = raw_value.split_at(num_end);
    let value: f64 = num
        .parse()
        .ok()
        .filter(|f: &f64| f.is_finite())
        .ok_or_else(|| format!("{label}: invalid value {:?}", super::clip(raw_value)))?;
    m.push_field(Str::from(format!("{label}_value")), value);
    if !unit.is_empty() {
        m.push_field(Str::from(format!("{label}_unit")), unit);
    }
    for (suffix, raw) in ["warn", "crit", "min", "max"].into_iter().zip(parts) {
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        threshold(&label, suffix, raw, m)?;
    }
    Ok(())
}

/// A plain number, or a Nagios range `[@]start:end` (`~` = -infinity):
/// ranges become `<label>_<suffix>_lt` (start) and `_gt` (end), the bounds
/// outside which the plugin alerts.
fn threshold(label: &str, suffix: &str, raw: &str, m: &mut Metric) -> Result<(), String> {
    let bad = || format!("{label}: invalid {suffix} {:?}", super::clip(raw));
    let parse = |s: &str| s.parse::<f64>().ok().filter(|f| f.is_finite());
    let range = raw.trim_start_matches('@');
    match range.split_once(':') {
        None => {
            let v = parse(range).ok_or_else(bad)?;
            m.push_field(Str::from(format!("{label}_{suffix}")), FieldValue::Float(v));
        }
        Some((start, end)) => {
            if !start.is_empty() && start != "~" {
                let v = parse(start).ok_or_else(bad)?;
                m.push_field(Str::from(format!("{label}_{suffix}_lt")), v);
            }
            if !end.is_empty() {
                let v = parse(end).ok_or_else(bad)?;
                m.push_field(Str::from(format!("{label}_{suffix}_gt")), v);
            }
        }
    }
    Ok(())
}
