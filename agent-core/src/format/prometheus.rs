//! Prometheus text exposition format (version 0.0.4).
//!
//! Each numeric field of a metric becomes a sample of the family
//! `<metric name>_<field>`; tags become labels. Names are sanitized: any
//! character outside `[a-zA-Z0-9_:]` (labels: `[a-zA-Z0-9_]`) becomes `_`,
//! and a leading digit gets a `_` prefix. Booleans are 1/0. String fields
//! are dropped, or (with `string_as_label`) added as labels of every sample
//! of that metric. Alarms are not exposed (they are events, not series).
//!
//! [`SeriesStore`] keeps the latest value of every series and forgets
//! series not updated within the expiration, so a stopped NIC or process
//! disappears from the endpoint.
use crate::format::line_protocol::{fmt_i64, fmt_u64, push_f64};
use crate::metric::{FieldValue, Metric, MetricKind};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

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
}

/// Calls `f(family, labels, value)` for every numeric field of `m`, where
/// `labels` is the rendered `{k="v",...}` (empty when there are none).
pub fn for_each_sample(
    m: &Metric,
    opts: &Options,
    scratch: &mut Scratch,
    mut f: impl FnMut(&str, &str, SampleValue),
) {
    if m.kind == MetricKind::Alarm {
        return;
    }
    let labels = &mut scratch.labels;
    labels.clear();
    let mut first = true;
    let mut add_label = |labels: &mut String, k: &str, v: &str| {
        labels.push(if first { '{' } else { ',' });
        first = false;
        push_label_name(labels, k);
        labels.push_str("=\"");
        push_label_value(labels, v);
        labels.push('"');
    };
    for (i, (k, v)) in m.tags.iter().enumerate() {
        if m.tags[..i].iter().any(|(p, _)| p == k) {
            continue;
        }
        add_label(labels, k, v);
    }
    if opts.string_as_label {
        for (k, v) in &m.fields {
            if let FieldValue::Str(s) = v {
                if !m.tags.iter().any(|(p, _)| p == k) {
                    add_label(labels, k, s);
                }
            }
        }
    }
    if !first {
        labels.push('}');
    }
    let family = &mut scratch.family;
    family.clear();
    push_metric_name(family, &m.name);
    family.push('_');
    let prefix = family.len();
    for (k, v) in &m.fields {
        let Some(value) = SampleValue::from_field(v) else {
            continue;
        };
        family.truncate(prefix);
        sanitize_at(k, family, true, false);
        f(family, labels, value);
    }
}

#[derive(Debug)]
struct Sample {
    value: SampleValue,
    seen: Instant,
}

/// The latest value of every series, with expiration.
///
/// Label sets are interned: every distinct rendered `{k="v",...}` gets a
/// small id (reference counted, freed when its last series expires), so the
/// per-field work of an update is an integer lookup, not a string compare.
#[derive(Debug)]
pub struct SeriesStore {
    /// Family name → label-set id → sample. Families render sorted by name,
    /// series within a family in the order they first appeared.
    families: BTreeMap<String, BTreeMap<u32, Sample>>,
    label_ids: HashMap<String, u32>,
    label_text: Vec<String>,
    label_refs: Vec<u32>,
    free_ids: Vec<u32>,
    expiration: Duration,
    scratch: Scratch,
    opts: Options,
}

impl SeriesStore {
    /// `expiration` zero keeps series forever.
    pub fn new(opts: Options, expiration: Duration) -> Self {
        SeriesStore {
            families: BTreeMap::new(),
            label_ids: HashMap::new(),
            label_text: Vec::new(),
            label_refs: Vec::new(),
            free_ids: Vec::new(),
            expiration,
            scratch: Scratch::default(),
            opts,
        }
    }

    fn intern(&mut self, labels: &str) -> u32 {
        if let Some(&id) = self.label_ids.get(labels) {
            return id;
        }
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.label_text[id as usize] = labels.to_string();
                id
            }
            None => {
                self.label_text.push(labels.to_string());
                self.label_refs.push(0);
                (self.label_text.len() - 1) as u32
            }
        };
        self.label_ids.insert(labels.to_string(), id);
        id
    }

    pub fn add(&mut self, m: &Metric, now: Instant) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut id: Option<u32> = None;
        let opts = self.opts;
        for_each_sample(m, &opts, &mut scratch, |family, labels, value| {
            // Same label set for every field of the metric: intern once.
            let id = *id.get_or_insert_with(|| self.intern(labels));
            // Look up by &str first: no allocation for a known family.
            let fam = match self.families.get_mut(family) {
                Some(f) => f,
                None => self.families.entry(family.to_string()).or_default(),
            };
            match fam.get_mut(&id) {
                Some(s) => {
                    s.value = value;
                    s.seen = now;
                }
                None => {
                    fam.insert(id, Sample { value, seen: now });
                    self.label_refs[id as usize] += 1;
                }
            }
        });
        self.scratch = scratch;
    }

    /// Drops series not updated within the expiration.
    pub fn expire(&mut self, now: Instant) {
        if self.expiration.is_zero() {
            return;
        }
        let exp = self.expiration;
        let refs = &mut self.label_refs;
        let mut freed = Vec::new();
        self.families.retain(|_, fam| {
            fam.retain(|id, s| {
                let keep = now.saturating_duration_since(s.seen) < exp;
                if !keep {
                    let r = &mut refs[*id as usize];
                    *r -= 1;
                    if *r == 0 {
                        freed.push(*id);
                    }
                }
                keep
            });
            !fam.is_empty()
        });
        for id in freed {
            let text = std::mem::take(&mut self.label_text[id as usize]);
            self.label_ids.remove(&text);
            self.free_ids.push(id);
        }
    }

    pub fn series_count(&self) -> usize {
        self.families.values().map(|f| f.len()).sum()
    }

    /// Renders every family, sorted by name, each with a `# TYPE` line.
    pub fn render(&self, out: &mut String) {
        for (name, fam) in &self.families {
            out.push_str("# TYPE ");
            out.push_str(name);
            out.push_str(" untyped\n");
            for (id, s) in fam {
                out.push_str(name);
                out.push_str(&self.label_text[*id as usize]);
                out.push(' ');
                s.value.write(out);
                out.push('\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_labels_and_values() {
        let m = Metric::new("net-io", 0)
            .with_tag("host name", "we\"b\\1\n")
            .with_tag("9nic", "eth0")
            .with_field("bytes.recv", 10u64)
            .with_field("rate", 1.5)
            .with_field("up", true)
            .with_field("neg", -2i64)
            .with_field("mac", "aa:bb")
            .with_field("nan", f64::NAN);
        let mut store = SeriesStore::new(Options::default(), Duration::ZERO);
        store.add(&m, Instant::now());
        let mut out = String::new();
        store.render(&mut out);
        let labels = r#"{host_name="we\"b\\1\n",_9nic="eth0"}"#;
        let expected = format!(
            "# TYPE net_io_bytes_recv untyped\nnet_io_bytes_recv{labels} 10\n\
             # TYPE net_io_nan untyped\nnet_io_nan{labels} NaN\n\
             # TYPE net_io_neg untyped\nnet_io_neg{labels} -2\n\
             # TYPE net_io_rate untyped\nnet_io_rate{labels} 1.5\n\
             # TYPE net_io_up untyped\nnet_io_up{labels} 1\n"
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn strings_as_labels_and_alarms_skipped() {
        let m = Metric::new("disk", 0)
            .with_tag("path", "/")
            .with_field("fstype", "ext4")
            .with_field("used", 3u64);
        let mut store = SeriesStore::new(
            Options {
                string_as_label: true,
            },
            Duration::ZERO,
        );
        store.add(&m, Instant::now());
        let mut alarm = m.clone();
        alarm.kind = MetricKind::Alarm;
        alarm.name = "other".into();
        store.add(&alarm, Instant::now());
        let mut out = String::new();
        store.render(&mut out);
        assert_eq!(
            out,
            "# TYPE disk_used untyped\ndisk_used{path=\"/\",fstype=\"ext4\"} 3\n"
        );
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
        let mut out = String::new();
        store.render(&mut out);
        assert_eq!(out, "# TYPE a_v untyped\na_v{k=\"1\"} 5\n");
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
        assert_eq!(out, "# TYPE a_v untyped\na_v{k=\"3\"} 3\n");
    }
}
