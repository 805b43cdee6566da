//! InfluxDB line protocol:
//! `measurement,tag=v field=1i,f=2.5,s="x" 1636361935000000000`.
//!
//! Escaping follows the protocol (and Telegraf's serializer):
//! - measurement: `,` and space escaped with `\`;
//! - tag keys, tag values, field keys: `,`, `=` and space escaped;
//! - in all three, tab/newline/CR/form feed (which the protocol cannot carry)
//!   become the two-character sequences `\t`, `\n`, `\r`, `\f`;
//! - string field values are quoted; `"` and `\` are escaped.
//!
//! A trailing backslash in a name, tag or field key would escape the
//! separator after it, and no escape makes it acceptable to InfluxDB 1.x
//! (it answers 400 for the whole batch), so trailing backslashes are
//! removed there; a backslash anywhere else is written as is (both InfluxDB
//! and VictoriaMetrics read it literally). Tags with an empty key or value are left out
//! (the protocol has no empty tag value); NaN and infinite floats are left
//! out (no representation); a metric left with no field is skipped entirely.
//! Alarms are written to the measurement `<name>_alarm`, so their string
//! fields (`code`, `info`, `more`) do not mix with the metric's own series.
use crate::metric::{FieldValue, Metric, MetricKind};
use crate::schema::{tag_text, Schema};

/// Timestamp precision of the written lines (InfluxDB's `precision`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub enum Precision {
    #[default]
    #[serde(alias = "n", rename = "ns")]
    Nanos,
    #[serde(alias = "u", rename = "us")]
    Micros,
    #[serde(rename = "ms")]
    Millis,
    #[serde(rename = "s")]
    Seconds,
}

impl Precision {
    fn divisor(self) -> i64 {
        match self {
            Precision::Nanos => 1,
            Precision::Micros => 1_000,
            Precision::Millis => 1_000_000,
            Precision::Seconds => 1_000_000_000,
        }
    }

    /// The query-string value InfluxDB 1.x expects (`n`, `u`, `ms`, `s`).
    pub fn v1_param(self) -> &'static str {
        match self {
            Precision::Nanos => "n",
            Precision::Micros => "u",
            Precision::Millis => "ms",
            Precision::Seconds => "s",
        }
    }

    /// The query-string value InfluxDB 2.x expects (`ns`, `us`, `ms`, `s`).
    pub fn v2_param(self) -> &'static str {
        match self {
            Precision::Nanos => "ns",
            Precision::Micros => "us",
            Precision::Millis => "ms",
            Precision::Seconds => "s",
        }
    }
}

/// How to encode.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub precision: Precision,
    /// Write unsigned integers with the `u` suffix. InfluxDB 1.x rejects
    /// them; without this they are written as `i`, clamped to `i64::MAX`.
    pub uint_support: bool,
    /// Reshape metrics by their input's schema ([`crate::schema`]):
    /// identity fields become tags, indexed keys their own series. Off for
    /// exec plugins, which must get back the metric they were given.
    pub dimensional: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            precision: Precision::Nanos,
            uint_support: true,
            dimensional: false,
        }
    }
}

impl Options {
    /// Defaults, with metrics reshaped by their schema (the dimensional
    /// outputs: influxdb, http and file in line protocol).
    pub fn dimensional() -> Self {
        Options {
            dimensional: true,
            ..Options::default()
        }
    }
}

/// Bytes that need escaping, as a lookup table (the hot path).
const fn table(specials: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    t[b'\t' as usize] = true;
    t[b'\n' as usize] = true;
    t[b'\r' as usize] = true;
    t[0x0c] = true;
    let mut i = 0;
    while i < specials.len() {
        t[specials[i] as usize] = true;
        i += 1;
    }
    t
}

static MEASUREMENT_TABLE: [bool; 256] = table(MEASUREMENT);
static KEY_TABLE: [bool; 256] = table(KEY);

#[inline]
fn push_escaped(out: &mut String, s: &str, specials: &[u8]) {
    let bytes = s.as_bytes();
    let t = if specials == MEASUREMENT {
        &MEASUREMENT_TABLE
    } else {
        &KEY_TABLE
    };
    let needs = bytes.iter().any(|&b| t[b as usize]);
    if !needs {
        out.push_str(s);
    } else {
        for c in s.chars() {
            match c {
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\u{0c}' => out.push_str("\\f"),
                c if c.is_ascii() && specials.contains(&(c as u8)) => {
                    out.push('\\');
                    out.push(c);
                }
                c => out.push(c),
            }
        }
    }
}

/// Names, tags and field keys lose trailing backslashes (see above).
fn trim(s: &str) -> &str {
    s.trim_end_matches('\\')
}

const MEASUREMENT: &[u8] = b", ";
const KEY: &[u8] = b",= ";

fn push_int(out: &mut String, v: i64) {
    let mut buf = itoa_buf();
    out.push_str(fmt_i64(&mut buf, v));
}

fn itoa_buf() -> [u8; 20] {
    [0u8; 20]
}

/// Formats an integer without going through `fmt` (the hot path).
pub(crate) fn fmt_u64(buf: &mut [u8; 20], mut v: u64) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

pub(crate) fn fmt_i64(buf: &mut [u8; 20], v: i64) -> &str {
    if v >= 0 {
        return fmt_u64(buf, v as u64);
    }
    // 20 bytes hold u64::MAX's digits; i64::MIN has 19 digits plus the sign.
    let digits = fmt_u64(buf, v.unsigned_abs()).len();
    let start = buf.len() - digits - 1;
    buf[start] = b'-';
    std::str::from_utf8(&buf[start..]).unwrap_or("0")
}

/// Shortest round-trip form of a finite float (`33.1`, `5000.0`, `1e21`).
pub(crate) fn push_f64(out: &mut String, f: f64) {
    let mut b = ryu::Buffer::new();
    out.push_str(b.format_finite(f));
}

fn push_u64(out: &mut String, v: u64) {
    let mut buf = itoa_buf();
    out.push_str(fmt_u64(&mut buf, v));
}

fn push_field_value(out: &mut String, v: &FieldValue, opts: &Options) -> bool {
    match v {
        FieldValue::Int(i) => {
            push_int(out, *i);
            out.push('i');
        }
        FieldValue::Uint(u) => {
            if opts.uint_support {
                push_u64(out, *u);
                out.push('u');
            } else {
                push_int(out, (*u).min(i64::MAX as u64) as i64);
                out.push('i');
            }
        }
        FieldValue::Float(f) => {
            if !f.is_finite() {
                return false;
            }
            push_f64(out, *f);
        }
        FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        FieldValue::Str(s) => {
            out.push('"');
            if s.bytes().any(|b| b == b'"' || b == b'\\') {
                for c in s.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
            } else {
                out.push_str(s);
            }
            out.push('"');
        }
    }
    true
}

fn push_tag(out: &mut String, k: &str, v: &str) {
    let (k, v) = (trim(k), trim(v));
    if k.is_empty() || v.is_empty() {
        return;
    }
    out.push(',');
    push_escaped(out, k, KEY);
    out.push('=');
    push_escaped(out, v, KEY);
}

/// Appends ` k=v` (first field) or `,k=v`; `sep` becomes `,` once a field
/// was written.
fn push_field(out: &mut String, sep: &mut char, k: &str, v: &FieldValue, opts: &Options) {
    let k = trim(k);
    if k.is_empty() {
        return;
    }
    let mark = out.len();
    out.push(*sep);
    push_escaped(out, k, KEY);
    out.push('=');
    if push_field_value(out, v, opts) {
        *sep = ',';
    } else {
        out.truncate(mark);
    }
}

/// Ends the line started at `start` with the timestamp, or removes it when
/// no field was written.
fn finish_line(out: &mut String, start: usize, sep: char, m: &Metric, opts: &Options) -> bool {
    if sep == ' ' {
        out.truncate(start);
        return false;
    }
    out.push(' ');
    push_int(out, m.timestamp_ns.div_euclid(opts.precision.divisor()));
    out.push('\n');
    true
}

/// Appends one line (with `\n`) to `out`; returns false (and appends
/// nothing) when the metric has no name or no writable field. With
/// [`Options::dimensional`], a metric of an input with a reshaping schema
/// may give several lines (see [`write_dimensional`]).
pub fn write_metric(m: &Metric, opts: &Options, out: &mut String) -> bool {
    if opts.dimensional && m.kind == MetricKind::Metric {
        if let Some(schema) = crate::schema::lookup(&m.name).filter(|s| s.reshapes()) {
            return write_dimensional(m, schema, opts, out) > 0;
        }
    }
    let name = trim(&m.name);
    if name.is_empty() {
        return false;
    }
    let start = out.len();
    push_escaped(out, name, MEASUREMENT);
    if m.kind == MetricKind::Alarm {
        out.push_str("_alarm");
    }
    for (k, v) in &m.tags {
        push_tag(out, k, v);
    }
    let mut sep = ' ';
    for (k, v) in &m.fields {
        push_field(out, &mut sep, k, v, opts);
    }
    finish_line(out, start, sep, m, opts)
}

/// Writes `m` as its schema's series: the metric's identity fields as
/// tags, then one line per index of each group (`cpu_percpu,cpu=0
/// percent=4.8`, `cpu_process_top,pid=812,name=java rank=1i,...`).
/// Returns the number of lines written.
pub fn write_dimensional(m: &Metric, schema: &Schema, opts: &Options, out: &mut String) -> usize {
    let mut lines = 0;
    let start = out.len();
    let name = trim(&m.name);
    if name.is_empty() {
        return 0;
    }
    push_escaped(out, name, MEASUREMENT);
    for (k, v) in &m.tags {
        push_tag(out, k, v);
    }
    for (k, v) in &m.fields {
        if schema.is_tag(k) {
            if let Some(text) = tag_text(v) {
                push_tag(out, k, &text);
            }
        }
    }
    let mut sep = ' ';
    let mut grouped = false;
    for (k, v) in &m.fields {
        if schema.is_tag(k) {
            continue;
        }
        if schema.group_of(k).is_some() {
            grouped = true;
            continue;
        }
        push_field(out, &mut sep, k, v, opts);
    }
    lines += finish_line(out, start, sep, m, opts) as usize;
    if !grouped {
        return lines;
    }
    for g in schema.groups {
        // Indexes in the order they first appear.
        let mut indexes: Vec<&str> = Vec::new();
        for (k, _) in &m.fields {
            if let Some((i, _)) = g.split(k) {
                if !indexes.contains(&i) {
                    indexes.push(i);
                }
            }
        }
        for index in indexes {
            let start = out.len();
            push_escaped(out, g.measurement, MEASUREMENT);
            for (k, v) in &m.tags {
                push_tag(out, k, v);
            }
            if g.index_is_tag {
                push_tag(out, g.index, index);
            }
            let members = m.fields.iter().filter_map(|(k, v)| match g.split(k) {
                Some((i, sub)) if i == index => Some((sub, v)),
                _ => None,
            });
            for (sub, v) in members.clone() {
                if g.tags.contains(&sub) {
                    if let Some(text) = tag_text(v) {
                        push_tag(out, sub, &text);
                    }
                }
            }
            let mut sep = ' ';
            if !g.index_is_tag {
                if let Ok(rank) = index.parse::<i64>() {
                    push_field(out, &mut sep, g.index, &FieldValue::Int(rank), opts);
                }
            }
            for (sub, v) in members {
                if !g.tags.contains(&sub) {
                    push_field(out, &mut sep, sub, v, opts);
                }
            }
            lines += finish_line(out, start, sep, m, opts) as usize;
        }
    }
    lines
}

/// Encodes a batch; returns how many metrics were written.
pub fn write_batch(batch: &[Metric], opts: &Options, out: &mut String) -> usize {
    batch.iter().filter(|m| write_metric(m, opts, out)).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(m: &Metric, opts: &Options) -> String {
        let mut s = String::new();
        write_metric(m, opts, &mut s);
        s
    }

    #[test]
    fn types_and_suffixes() {
        let m = Metric::new("mem", 1_636_361_935_123_456_789)
            .with_tag("host", "web1")
            .with_field("i", -5i64)
            .with_field("u", 18_446_744_073_709_551_615u64)
            .with_field("f", 33.1)
            .with_field("whole", 5000.0)
            .with_field("b", true)
            .with_field("s", "7.8 GB");
        assert_eq!(
            line(&m, &Options::default()),
            "mem,host=web1 i=-5i,u=18446744073709551615u,f=33.1,whole=5000.0,b=true,s=\"7.8 GB\" 1636361935123456789\n"
        );
        let v1 = Options {
            precision: Precision::Seconds,
            uint_support: false,
            ..Options::default()
        };
        assert_eq!(
            line(&m, &v1),
            "mem,host=web1 i=-5i,u=9223372036854775807i,f=33.1,whole=5000.0,b=true,s=\"7.8 GB\" 1636361935\n"
        );
    }

    #[test]
    fn escaping_of_every_part() {
        let m = Metric::new("my meas,ure=x", 1)
            .with_tag("tag key,=", "v a,l=ue")
            .with_tag("uni", "测试 ü")
            .with_field("f ,=k", "say \"hi\" \\ back, x=1")
            .with_field("nl", "a\nb");
        assert_eq!(
            line(&m, &Options::default()),
            "my\\ meas\\,ure=x,tag\\ key\\,\\==v\\ a\\,l\\=ue,uni=测试\\ ü f\\ \\,\\=k=\"say \\\"hi\\\" \\\\ back, x=1\",nl=\"a\nb\" 1\n"
        );
        let m = Metric::new("a\tb", 1)
            .with_tag("k", "x\ny\\")
            .with_field("v", 1i64);
        assert_eq!(line(&m, &Options::default()), "a\\tb,k=x\\ny v=1i 1\n");
        let m = Metric::new("m\\", 1)
            .with_tag("only", "\\\\")
            .with_tag("mid", "a\\b")
            .with_field("k\\", "v\\");
        assert_eq!(line(&m, &Options::default()), "m,mid=a\\b k=\"v\\\\\" 1\n");
    }

    #[test]
    fn skips_what_cannot_be_written() {
        let m = Metric::new("m", 1)
            .with_tag("empty", "")
            .with_field("nan", f64::NAN)
            .with_field("ok", 1.5)
            .with_field("inf", f64::INFINITY);
        assert_eq!(line(&m, &Options::default()), "m ok=1.5 1\n");
        let only_nan = Metric::new("m", 1).with_field("nan", f64::NAN);
        let mut out = String::from("keep\n");
        assert!(!write_metric(&only_nan, &Options::default(), &mut out));
        assert_eq!(out, "keep\n");
        assert!(!write_metric(
            &Metric::new("", 1).with_field("a", 1i64),
            &Options::default(),
            &mut out
        ));
    }

    #[test]
    fn alarms_get_their_own_measurement_and_negative_times_floor() {
        let mut m = Metric::new("ping", -1_500_000_000).with_field("info", "lost");
        m.kind = MetricKind::Alarm;
        let opts = Options {
            precision: Precision::Seconds,
            uint_support: true,
            ..Options::default()
        };
        assert_eq!(line(&m, &opts), "ping_alarm info=\"lost\" -2\n");
    }

    #[test]
    fn integer_formatting_extremes() {
        let mut b = [0u8; 20];
        assert_eq!(fmt_i64(&mut b, i64::MIN), "-9223372036854775808");
        assert_eq!(fmt_i64(&mut b, 0), "0");
        assert_eq!(fmt_u64(&mut b, u64::MAX), "18446744073709551615");
    }

    fn dimensional() -> Options {
        Options {
            precision: Precision::Seconds,
            dimensional: true,
            ..Options::default()
        }
    }

    #[test]
    fn probe_identity_becomes_escaped_tags() {
        let m = Metric::new("telnet", 2_000_000_000)
            .with_tag("host_name", "h1")
            .with_field("tag", "百度 80,端口=\"v4\"")
            .with_field("address", "127.0.0.1:80")
            .with_field("yes", true)
            .with_field("errcode", 0i64)
            .with_field("result", "success");
        assert_eq!(
            line(&m, &dimensional()),
            "telnet,host_name=h1,tag=百度\\ 80\\,端口\\=\"v4\",address=127.0.0.1:80 yes=true,errcode=0i,result=\"success\" 2\n"
        );
        // Flat (exec plugins, dimensional off): unchanged.
        assert_eq!(
            line(&m, &Options { dimensional: false, ..dimensional() }),
            "telnet,host_name=h1 tag=\"百度 80,端口=\\\"v4\\\"\",address=\"127.0.0.1:80\",yes=true,errcode=0i,result=\"success\" 2\n"
        );
    }

    #[test]
    fn indexed_keys_become_series() {
        let m = Metric::new("cpu", 1_000_000_000)
            .with_tag("host_name", "h1")
            .with_field("percent", 4.5)
            .with_field("percent_percpu_0", 4.0)
            .with_field("percent_percpu_1", 5.0)
            .with_field("process_top", "812.java(12.5%)")
            .with_field("process_top_1_pid", 812u64)
            .with_field("process_top_1_name", "java vm")
            .with_field("process_top_1_cpu_percent", 12.5)
            .with_field("process_top_2_pid", 1u64)
            .with_field("process_top_2_name", "systemd")
            .with_field("process_top_2_cpu_percent", 0.0);
        assert_eq!(
            line(&m, &dimensional()),
            "cpu,host_name=h1 percent=4.5,process_top=\"812.java(12.5%)\" 1\n\
             cpu_percpu,host_name=h1,cpu=0 percent=4.0 1\n\
             cpu_percpu,host_name=h1,cpu=1 percent=5.0 1\n\
             cpu_process_top,host_name=h1,pid=812,name=java\\ vm rank=1i,cpu_percent=12.5 1\n\
             cpu_process_top,host_name=h1,pid=1,name=systemd rank=2i,cpu_percent=0.0 1\n"
        );
    }

    #[test]
    fn metrics_without_a_reshaping_schema_pass_through() {
        let exec = Metric::new("my_exec", 1_000_000_000)
            .with_tag("tag", "x")
            .with_field("tag_like", "y")
            .with_field("v", 1i64);
        assert_eq!(
            line(&exec, &dimensional()),
            "my_exec,tag=x tag_like=\"y\",v=1i 1\n"
        );
        let mut alarm = Metric::new("telnet", 1_000_000_000).with_field("tag", "t");
        alarm.kind = MetricKind::Alarm;
        assert_eq!(line(&alarm, &dimensional()), "telnet_alarm tag=\"t\" 1\n");
    }
}
