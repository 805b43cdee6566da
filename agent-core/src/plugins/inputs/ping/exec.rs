//! `method: exec`: run the system `ping` and parse what it prints.
//! Linux iputils and Windows formats; the Windows parser keys on `=`
//! signs and `TTL=` rather than English words, so localised output parses.
use super::{Outcome, Params};
use std::process::Stdio;
use std::time::Duration;

/// The argument list for one target.
pub(crate) fn args(address: &str, p: Params) -> Vec<String> {
    let address = address
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if cfg!(windows) {
        let wait_ms = p.timeout.as_millis().max(1);
        vec![
            "-n".into(),
            p.count.to_string(),
            "-w".into(),
            wait_ms.to_string(),
            address,
        ]
    } else {
        vec![
            "-n".into(),
            "-c".into(),
            p.count.to_string(),
            "-i".into(),
            format!("{:.3}", p.interval.as_secs_f64()),
            "-W".into(),
            format!("{:.3}", p.timeout.as_secs_f64()),
            address,
        ]
    }
}

/// Runs the system ping against one target and parses its output.
pub(crate) async fn ping_exec(binary: &str, address: &str, p: Params) -> Outcome {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(args(address, p))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Bound the child: all echoes, the last reply's wait, name lookup.
    let deadline = p.interval * p.count + p.timeout + p.resolve_timeout + Duration::from_secs(2);
    let output = match tokio::time::timeout(deadline, cmd.output()).await {
        Err(_) => {
            return Outcome::failed(
                p.count,
                format!(
                    "{binary} did not finish within {:.1}s",
                    deadline.as_secs_f64()
                ),
            )
        }
        Ok(Err(e)) => return Outcome::failed(p.count, format!("cannot run {binary}: {e}")),
        Ok(Ok(o)) => o,
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let parsed = if cfg!(windows) {
        parse_windows(&text)
    } else {
        parse_unix(&text)
    };
    match parsed {
        Some(mut o) => {
            if o.rtts_ms.is_empty() && !output.status.success() {
                let err = String::from_utf8_lossy(&output.stderr).trim().to_string();
                if !err.is_empty() {
                    o.error = Some(err);
                }
            }
            o
        }
        None => {
            let err = String::from_utf8_lossy(&output.stderr).trim().to_string();
            let why = if err.is_empty() {
                text.trim().to_string()
            } else {
                err
            };
            Outcome::failed(
                p.count,
                format!("{binary} failed ({}): {why}", output.status),
            )
        }
    }
}

/// The number right after `key` in `line`, e.g. `time=` → `0.044`.
fn number_after(line: &str, key: &str) -> Option<f64> {
    let rest = &line[line.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Parses iputils (and BSD/busybox) output: reply lines `... time=0.044 ms`
/// and the `N packets transmitted, M received` summary.
pub(crate) fn parse_unix(text: &str) -> Option<Outcome> {
    let mut rtts = Vec::new();
    let mut sent = None;
    for line in text.lines() {
        if line.contains("bytes from") {
            if let Some(t) = number_after(line, "time=") {
                rtts.push(t);
            }
        } else if line.contains("packets transmitted") {
            let first = line.split_whitespace().next()?;
            sent = first.parse::<u32>().ok();
        }
    }
    Some(Outcome {
        sent: sent?,
        rtts_ms: rtts,
        error: None,
    })
}

/// Every integer that follows an `=` (or `<`, as in `time<1ms`) in `line`.
fn numbers_after_equals(line: &str) -> Vec<f64> {
    let mut out = Vec::new();
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' || b[i] == b'<' {
            let mut j = i + 1;
            while j < b.len() && b[j] == b' ' {
                j += 1;
            }
            let start = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j > start {
                if let Ok(v) = line[start..j].parse() {
                    out.push(v);
                }
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Parses Windows `ping` output in any language: reply lines carry `TTL=`
/// and their time is the number before `ms`; the statistics line is the
/// first with three `= N` counts (sent, received, lost).
pub(crate) fn parse_windows(text: &str) -> Option<Outcome> {
    let mut rtts = Vec::new();
    let mut sent = None;
    for line in text.lines() {
        if line.to_ascii_uppercase().contains("TTL=") {
            // `bytes=32 time=52ms TTL=43`: the value followed by `ms`.
            let b = line.as_bytes();
            let value = line.match_indices("ms").find_map(|(ms, _)| {
                let mut s = ms;
                while s > 0 && b[s - 1].is_ascii_digit() {
                    s -= 1;
                }
                line[s..ms].parse::<f64>().ok()
            });
            if let Some(v) = value {
                rtts.push(v);
            }
        } else if sent.is_none() && !line.contains("ms") {
            let n = numbers_after_equals(line);
            if n.len() >= 3 {
                sent = Some(n[0] as u32);
            }
        }
    }
    Some(Outcome {
        sent: sent?,
        rtts_ms: rtts,
        error: None,
    })
}
