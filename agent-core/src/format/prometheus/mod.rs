//! Prometheus text exposition format (version 0.0.4).
//!
//! Each numeric field of a metric becomes a sample of the family
//! `<metric name>_<field>`, tags become labels. Metrics of an input with a
//! schema ([`crate::schema`]) are reshaped first: identity fields (a
//! probe's `tag`, `address`, `url`) become labels, indexed keys series of
//! their own (`cpu_percpu_percent{cpu="0"}`). The schema also gives every
//! family its `# HELP` and `# TYPE`: counters are named `..._total`, units
//! are in the name in base units (`mem_total_bytes`, `telnet_response_seconds`,
//! milliseconds scaled to seconds). Fields of no schema (exec, execd,
//! processed metrics) are `untyped` with a generic help.
//!
//! Names are sanitized: any character outside `[a-zA-Z0-9_:]` (labels:
//! `[a-zA-Z0-9_]`) becomes `_`, and a leading digit gets a `_` prefix. Label
//! values keep any UTF-8, with `\`, `"` and newline escaped. Booleans are
//! 1/0. String fields are dropped, or (with `string_as_label`) added as
//! labels of every sample of that metric. Alarms are not exposed (they are
//! events, not series).
//!
//! [`SeriesStore`] keeps the latest value of every series and forgets
//! series not updated within the expiration, so a stopped NIC or process
//! disappears from the endpoint.
use crate::format::line_protocol::{fmt_i64, fmt_u64, push_f64};
use crate::metric::{FieldValue, Metric, MetricKind, Str};
use crate::schema::{lookup, tag_text, FieldSpec, Group, Schema};
mod store;
pub use store::SeriesStore;

/// How metrics become samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Expose string fields as labels instead of dropping them.
    pub string_as_label: bool,
}

fn sanitize(s: &str, out: &mut String, allow_colon: bool) {
    sanitize_at(s, out, allow_colon, true)
}

/// `at_start`: whether `s` begins the name (where a digit is not allowed).
fn sanitize_at(s: &str, out: &mut String, allow_colon: bool, at_start: bool) {
    if s.is_empty() {
        out.push('_');
        return;
    }
    let valid = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || (allow_colon && b == b':');
    let leading_digit = at_start && s.as_bytes()[0].is_ascii_digit();
    if leading_digit {
        out.push('_');
    }
    if s.bytes().all(valid) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || (allow_colon && c == ':') {
            out.push(c);
        } else {
            out.push('_');
        }
    }
}

/// Appends `s` as a valid metric name.
pub fn push_metric_name(out: &mut String, s: &str) {
    sanitize(s, out, true);
}

/// Appends `s` as a valid label name.
pub fn push_label_name(out: &mut String, s: &str) {
    sanitize(s, out, false);
}

/// Appends a label value with `\`, `"` and newline escaped.
pub fn push_label_value(out: &mut String, s: &str) {
    if !s.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value, kept exact for integers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SampleValue {
    Int(i64),
    Uint(u64),
    Float(f64),
}

impl SampleValue {
    fn from_field(v: &FieldValue) -> Option<SampleValue> {
        Some(match v {
            FieldValue::Int(i) => SampleValue::Int(*i),
            FieldValue::Uint(u) => SampleValue::Uint(*u),
            FieldValue::Float(f) => SampleValue::Float(*f),
            FieldValue::Bool(b) => SampleValue::Int(*b as i64),
            FieldValue::Str(_) => return None,
        })
    }

    pub fn write(self, out: &mut String) {
        let mut buf = [0u8; 20];
        match self {
            SampleValue::Int(i) => out.push_str(fmt_i64(&mut buf, i)),
            SampleValue::Uint(u) => out.push_str(fmt_u64(&mut buf, u)),
            SampleValue::Float(f) if f.is_nan() => out.push_str("NaN"),
            SampleValue::Float(f) if f == f64::INFINITY => out.push_str("+Inf"),
            SampleValue::Float(f) if f == f64::NEG_INFINITY => out.push_str("-Inf"),
            SampleValue::Float(f) => push_f64(out, f),
        }
    }

    pub fn as_f64(self) -> f64 {
        match self {
            SampleValue::Int(i) => i as f64,
            SampleValue::Uint(u) => u as f64,
            SampleValue::Float(f) => f,
        }
    }
}

/// Reusable buffers for [`for_each_sample`].
#[derive(Debug, Default)]
pub struct Scratch {
    family: String,
    labels: String,
    group_labels: String,
    indexes: Vec<Str>,
}

/// Where a sample's meaning comes from: resolved once per family by
/// [`SeriesStore`], not per sample.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// No schema: the measurement and the field key.
    Plain(&'a str, &'a str),
    Schema(&'static Schema, &'a str),
    Group(&'static Group, &'a str),
}

impl Source<'_> {
    fn spec(&self) -> Option<&'static FieldSpec> {
        match *self {
            Source::Plain(..) => None,
            Source::Schema(s, k) => s.spec(k),
            Source::Group(g, k) => g.spec(k),
        }
    }
}

/// Appends `k="v"` to a label list (inner text, no braces).
fn add_label(labels: &mut String, k: &str, v: &str) {
    if !labels.is_empty() {
        labels.push(',');
    }
    push_label_name(labels, k);
    labels.push_str("=\"");
    push_label_value(labels, v);
    labels.push('"');
}

/// Calls `f(family, labels, value, source)` for every numeric field of
/// `m`, where `family` is `<measurement>_<field>` (sanitized, before the
/// schema's unit and `_total`) and `labels` the rendered `k="v",...`
/// without braces (empty when there are none).
///
/// With `name_families` false, `family` is left empty: the caller knows
/// the families of this metric's shape already (the store caches them), and the
/// samples come in the same order as for any metric of that shape.
pub fn for_each_sample(
    m: &Metric,
    opts: &Options,
    scratch: &mut Scratch,
    name_families: bool,
    mut f: impl FnMut(&str, &str, SampleValue, Source<'_>),
) {
    if m.kind == MetricKind::Alarm {
        return;
    }
    let schema = lookup(&m.name);
    let is_tag = |k: &str| schema.is_some_and(|s| s.is_tag(k));
    let grouped = |k: &str| schema.is_some_and(|s| s.group_of(k).is_some());
    let labels = &mut scratch.labels;
    labels.clear();
    for (i, (k, v)) in m.tags.iter().enumerate() {
        if m.tags[..i].iter().any(|(p, _)| p == k) {
            continue;
        }
        add_label(labels, k, v);
    }
    let tagged = |k: &str| m.tags.iter().any(|(p, _)| p == k);
    if let Some(s) = schema {
        for (k, v) in &m.fields {
            if s.is_tag(k) && !tagged(k) {
                if let Some(text) = tag_text(v) {
                    add_label(labels, k, &text);
                }
            }
        }
    }
    if opts.string_as_label {
        for (k, v) in &m.fields {
            if let FieldValue::Str(s) = v {
                if !tagged(k) && !is_tag(k) && !grouped(k) {
                    add_label(labels, k, s);
                }
            }
        }
    }
    let family = &mut scratch.family;
    family.clear();
    if name_families {
        push_metric_name(family, &m.name);
        family.push('_');
    }
    let prefix = family.len();
    for (k, v) in &m.fields {
        if is_tag(k) || grouped(k) {
            continue;
        }
        let Some(value) = SampleValue::from_field(v) else {
            continue;
        };
        if name_families {
            family.truncate(prefix);
            sanitize_at(k, family, true, false);
        }
        let source = match schema {
            Some(s) => Source::Schema(s, k),
            None => Source::Plain(&m.name, k),
        };
        f(family, labels, value, source);
    }
    let Some(schema) = schema else { return };
    for g in schema.groups {
        let indexes = &mut scratch.indexes;
        indexes.clear();
        for (k, _) in &m.fields {
            if let Some((i, _)) = g.split(k) {
                if !indexes.iter().any(|p| p == i) {
                    indexes.push(Str::new(i));
                }
            }
        }
        for index in indexes.iter() {
            let members = m.fields.iter().filter_map(|(k, v)| match g.split(k) {
                Some((i, sub)) if i == index => Some((sub, v)),
                _ => None,
            });
            let gl = &mut scratch.group_labels;
            gl.clear();
            gl.push_str(labels);
            if g.index_is_tag {
                add_label(gl, g.index, index);
            }
            for (sub, v) in members.clone() {
                if g.tags.contains(&sub) {
                    if let Some(text) = tag_text(v) {
                        add_label(gl, sub, &text);
                    }
                }
            }
            family.clear();
            if name_families {
                push_metric_name(family, g.measurement);
                family.push('_');
            }
            let prefix = family.len();
            if !g.index_is_tag {
                if let Ok(rank) = index.parse::<i64>() {
                    if name_families {
                        family.push_str(g.index);
                    }
                    f(
                        family,
                        gl,
                        SampleValue::Int(rank),
                        Source::Group(g, g.index),
                    );
                }
            }
            for (sub, v) in members {
                if g.tags.contains(&sub) {
                    continue;
                }
                let Some(value) = SampleValue::from_field(v) else {
                    continue;
                };
                if name_families {
                    family.truncate(prefix);
                    sanitize_at(sub, family, true, false);
                }
                f(family, gl, value, Source::Group(g, sub));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn render(metrics: &[Metric], opts: Options) -> String {
        let mut store = SeriesStore::new(opts, Duration::ZERO);
        for m in metrics {
            store.add(m, Instant::now());
        }
        let mut out = String::new();
        store.render(&mut out);
        out
    }

    #[test]
    fn names_labels_and_values_without_a_schema() {
        let m = Metric::new("net-io", 0)
            .with_tag("host name", "we\"b\\1\n")
            .with_tag("9nic", "eth0")
            .with_field("bytes.recv", 10u64)
            .with_field("rate", 1.5)
            .with_field("up", true)
            .with_field("neg", -2i64)
            .with_field("mac", "aa:bb")
            .with_field("nan", f64::NAN);
        let labels = r#"{host_name="we\"b\\1\n",_9nic="eth0"}"#;
        let fam = |name: &str, field: &str, v: &str| {
            format!(
                "# HELP {name} Field {field} of net-io (no schema: exec, execd or processed metrics).\n\
                 # TYPE {name} untyped\n{name}{labels} {v}\n"
            )
        };
        let expected = [
            fam("net_io_bytes_recv", "bytes.recv", "10"),
            fam("net_io_nan", "nan", "NaN"),
            fam("net_io_neg", "neg", "-2"),
            fam("net_io_rate", "rate", "1.5"),
            fam("net_io_up", "up", "1"),
        ]
        .concat();
        assert_eq!(render(&[m], Options::default()), expected);
    }

    #[test]
    fn strings_as_labels_and_alarms_skipped() {
        let m = Metric::new("disk", 0)
            .with_tag("mountpoint", "/")
            .with_field("fstype", "ext4")
            .with_field("used", 3u64);
        let mut alarm = m.clone();
        alarm.kind = MetricKind::Alarm;
        alarm.name = "other".into();
        assert_eq!(
            render(
                &[m, alarm],
                Options {
                    string_as_label: true
                }
            ),
            "# HELP disk_used_bytes Used space.\n# TYPE disk_used_bytes gauge\n\
             disk_used_bytes{mountpoint=\"/\",fstype=\"ext4\"} 3\n"
        );
    }

    #[test]
    fn probe_targets_are_labels_with_escaped_utf8_values() {
        let target = |tag: &str, ms: f64| {
            Metric::new("telnet", 0)
                .with_tag("host_name", "h")
                .with_field("tag", tag)
                .with_field("address", "127.0.0.1:80")
                .with_field("yes", true)
                .with_field("response_ms", ms)
                .with_field("result", "success")
        };
        let out = render(
            &[
                target("百度80端口(IPv4)", 1.5),
                target("a \"b\", \\c\nd", 250.0),
            ],
            Options::default(),
        );
        assert_eq!(
            out,
            "# HELP telnet_response_seconds Time to resolve and connect.\n\
             # TYPE telnet_response_seconds gauge\n\
             telnet_response_seconds{host_name=\"h\",tag=\"百度80端口(IPv4)\",address=\"127.0.0.1:80\"} 0.0015\n\
             telnet_response_seconds{host_name=\"h\",tag=\"a \\\"b\\\", \\\\c\\nd\",address=\"127.0.0.1:80\"} 0.25\n\
             # HELP telnet_yes Whether the port accepted the connection (1) or not (0).\n\
             # TYPE telnet_yes gauge\n\
             telnet_yes{host_name=\"h\",tag=\"百度80端口(IPv4)\",address=\"127.0.0.1:80\"} 1\n\
             telnet_yes{host_name=\"h\",tag=\"a \\\"b\\\", \\\\c\\nd\",address=\"127.0.0.1:80\"} 1\n"
        );
    }

    #[test]
    fn counters_get_total_and_units_and_indexes_become_labels() {
        let net = Metric::new("network", 0)
            .with_tag("nic", "eth0")
            .with_field("bytes_recv", 10u64)
            .with_field("mtu", 1500u64);
        let cpu = Metric::new("cpu", 0)
            .with_field("times_user", 2.5)
            .with_field("percent_percpu_0", 4.0)
            .with_field("percent_percpu_1", 6.0)
            .with_field("process_top_1_pid", 812u64)
            .with_field("process_top_1_name", "java")
            .with_field("process_top_1_cpu_percent", 12.5);
        let out = render(&[net, cpu], Options::default());
        for line in [
            "# TYPE network_bytes_recv_total counter\nnetwork_bytes_recv_total{nic=\"eth0\"} 10\n",
            "# TYPE network_mtu_bytes gauge\nnetwork_mtu_bytes{nic=\"eth0\"} 1500\n",
            "# TYPE cpu_times_user_seconds_total counter\ncpu_times_user_seconds_total 2.5\n",
            "# TYPE cpu_percpu_percent gauge\ncpu_percpu_percent{cpu=\"0\"} 4.0\ncpu_percpu_percent{cpu=\"1\"} 6.0\n",
            "# TYPE cpu_process_top_rank gauge\ncpu_process_top_rank{pid=\"812\",name=\"java\"} 1\n",
            "cpu_process_top_cpu_percent{pid=\"812\",name=\"java\"} 12.5\n",
        ] {
            assert!(out.contains(line), "{line:?} missing from:\n{out}");
        }
        assert!(!out.contains("percpu_0"), "{out}");
        assert!(!out.contains("process_top_1"), "{out}");
        assert_eq!(
            out.matches("# HELP ").count(),
            out.matches("# TYPE ").count()
        );
    }

    #[test]
    fn updates_in_any_order_land_on_their_series() {
        let t0 = Instant::now();
        let mut store = SeriesStore::new(Options::default(), Duration::ZERO);
        let m = |k: &str, v: i64| Metric::new("a", 0).with_tag("k", k).with_field("v", v);
        for (k, v) in [("1", 1), ("2", 2), ("3", 3)] {
            store.add(&m(k, v), t0);
        }
        // Reverse order, a repeat, and a new series between known ones.
        for (k, v) in [("3", 30), ("3", 31), ("2", 20), ("4", 40), ("1", 10)] {
            store.add(&m(k, v), t0);
        }
        let mut out = String::new();
        store.render(&mut out);
        let body: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            body,
            [
                "a_v{k=\"1\"} 10",
                "a_v{k=\"2\"} 20",
                "a_v{k=\"3\"} 31",
                "a_v{k=\"4\"} 40"
            ]
        );
        assert_eq!(store.series_count(), 4);
    }

    #[test]
    fn latest_value_wins_and_series_expire() {
        let t0 = Instant::now();
        let mut store = SeriesStore::new(Options::default(), Duration::from_secs(10));
        store.add(
            &Metric::new("a", 0).with_tag("k", "1").with_field("v", 1i64),
            t0,
        );
        store.add(
            &Metric::new("a", 0).with_tag("k", "2").with_field("v", 2i64),
            t0,
        );
        store.add(
            &Metric::new("a", 0).with_tag("k", "1").with_field("v", 5i64),
            t0 + Duration::from_secs(6),
        );
        store.expire(t0 + Duration::from_secs(11));
        let head = "# HELP a_v Field v of a (no schema: exec, execd or processed metrics).\n# TYPE a_v untyped\n";
        let mut out = String::new();
        store.render(&mut out);
        assert_eq!(out, format!("{head}a_v{{k=\"1\"}} 5\n"));
        store.expire(t0 + Duration::from_secs(17));
        assert_eq!(store.series_count(), 0);
        assert!(
            store.label_ids.is_empty(),
            "label sets freed with their series"
        );
        store.add(
            &Metric::new("a", 0).with_tag("k", "3").with_field("v", 3i64),
            t0,
        );
        assert_eq!(store.label_text.len(), 2, "freed ids are reused");
        let mut out = String::new();
        store.render(&mut out);
        assert_eq!(out, format!("{head}a_v{{k=\"3\"}} 3\n"));
    }
}
