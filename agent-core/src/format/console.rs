//! PyAgent's console line:
//! `>>> METRIC, name=mem time=2021-11-08T16:58:55+08:00 timestamp=1636361935 node_ip=… k=v …`
//! The time carries the host's real UTC offset (PyAgent always printed
//! `+08:00`); values print as Python's `str()` did.
use crate::metric::{FieldValue, Metric, MetricKind};
use chrono::{Local, TimeZone};
use std::fmt::Write;

/// Appends one console line (with a trailing newline) to `out`.
pub fn write_line(m: &Metric, out: &mut String) {
    let secs = m.timestamp_secs();
    let time = match Local.timestamp_opt(secs, 0).single() {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%:z").to_string(),
        None => secs.to_string(),
    };
    let _ = write!(
        out,
        ">>> {}, name={} time={} timestamp={}",
        m.kind.as_str(),
        m.name,
        time,
        secs
    );
    for (k, v) in &m.tags {
        let _ = write!(out, " {k}={v}");
    }
    for (k, v) in &m.fields {
        // An alarm's empty fields (`tag=`, `flag=` with no value) are left
        // out: PyAgent's alarm carried only `code`, `info`, `more`.
        if m.kind == MetricKind::Alarm && matches!(v, FieldValue::Str(s) if s.is_empty()) {
            continue;
        }
        let _ = write!(out, " {k}={v}");
    }
    out.push('\n');
}

/// One console line, without the newline.
pub fn line(m: &Metric) -> String {
    let mut s = String::with_capacity(256);
    write_line(m, &mut s);
    s.pop();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_alarm_line_in_utc() {
        // chrono reads TZ; force UTC for a stable golden line.
        std::env::set_var("TZ", "UTC");
        let mut m = Metric::new("ping", 1_636_361_935_000_000_000)
            .with_tag("node_ip", "0.0.0.1")
            .with_tag("host", "Host001")
            .with_field("code", "monitor_metric_alarm")
            .with_field("info", "测试网络不通 丢包比例过高(%): 100>=100.0")
            .with_field("tag", "")
            .with_field("flag", "")
            .with_field("more", "123.0.0.45");
        m.kind = MetricKind::Alarm;
        assert_eq!(
            line(&m),
            ">>> ALARM, name=ping time=2021-11-08T08:58:55+00:00 timestamp=1636361935 node_ip=0.0.0.1 host=Host001 code=monitor_metric_alarm info=测试网络不通 丢包比例过高(%): 100>=100.0 more=123.0.0.45"
        );
    }

    #[test]
    fn golden_metric_line_types() {
        std::env::set_var("TZ", "UTC");
        let m = Metric::new("mem", 0)
            .with_field("total", 8_348_397_568u64)
            .with_field("percent", 33.1)
            .with_field("loss", 100.0)
            .with_field("isup", true)
            .with_field("human_total", "7.8 GB")
            .with_field("empty", "");
        assert_eq!(
            line(&m),
            ">>> METRIC, name=mem time=1970-01-01T00:00:00+00:00 timestamp=0 total=8348397568 percent=33.1 loss=100.0 isup=True human_total=7.8 GB empty="
        );
    }
}
