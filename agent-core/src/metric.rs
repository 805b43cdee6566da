//! The metric model: what flows through every pipeline.
//!
//! Representation, chosen for a million metrics a second:
//! - Names, tag keys/values, field keys and string values are [`SmolStr`]:
//!   strings up to 23 bytes (almost every name and key) live inline, so
//!   building and cloning them never touches the allocator; longer strings
//!   are reference counted, so a clone is one atomic increment. A plugin can
//!   also build keys from `&'static str` with no allocation at all.
//! - Tags and fields are small `Vec`s of pairs, not hash maps: a metric has
//!   a handful to a few dozen entries, a linear scan beats hashing at that
//!   size, and insertion order is kept (PyAgent's console shows fields in the
//!   order the plugin produced them).
//! - A metric is therefore three allocations at most (tags, fields, and
//!   nothing else), and batches fan out to several outputs as one shared
//!   `Arc<Vec<Metric>>`, so an extra output costs a refcount, not a copy,
//!   until that output has to buffer.
use smol_str::SmolStr;
use std::fmt;

/// Shared, cheap-to-clone string used for names, keys and string values.
pub type Str = SmolStr;

/// What a metric is: a measurement, or an alarm raised about one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MetricKind {
    Metric,
    Alarm,
}

impl MetricKind {
    /// The word PyAgent prints: `METRIC` or `ALARM`.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Metric => "METRIC",
            MetricKind::Alarm => "ALARM",
        }
    }
}

/// A typed field value.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum FieldValue {
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
    Str(Str),
}

impl FieldValue {
    /// The value as a float, when it is numeric (bools count as 0/1).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FieldValue::Int(v) => Some(*v as f64),
            FieldValue::Uint(v) => Some(*v as f64),
            FieldValue::Float(v) => Some(*v),
            FieldValue::Bool(v) => Some(if *v { 1.0 } else { 0.0 }),
            FieldValue::Str(_) => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Formats like Python's `str()` did in PyAgent: floats keep a `.0`
/// (`5000.0`), booleans are `True`/`False`.
impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Int(v) => write!(f, "{v}"),
            FieldValue::Uint(v) => write!(f, "{v}"),
            // Debug formatting of f64 is the shortest round-trip form and keeps `.0`.
            FieldValue::Float(v) => write!(f, "{v:?}"),
            FieldValue::Bool(true) => f.write_str("True"),
            FieldValue::Bool(false) => f.write_str("False"),
            FieldValue::Str(s) => f.write_str(s),
        }
    }
}

macro_rules! from_value {
    ($($t:ty => $variant:ident as $conv:ty),* $(,)?) => {
        $(impl From<$t> for FieldValue {
            fn from(v: $t) -> Self { FieldValue::$variant(v as $conv) }
        })*
    };
}
from_value!(i64 => Int as i64, i32 => Int as i64, u64 => Uint as u64, u32 => Uint as u64,
    usize => Uint as u64, f64 => Float as f64, f32 => Float as f64);

impl From<bool> for FieldValue {
    fn from(v: bool) -> Self {
        FieldValue::Bool(v)
    }
}
impl From<&str> for FieldValue {
    fn from(v: &str) -> Self {
        FieldValue::Str(Str::new(v))
    }
}
impl From<String> for FieldValue {
    fn from(v: String) -> Self {
        FieldValue::Str(Str::from(v))
    }
}
impl From<Str> for FieldValue {
    fn from(v: Str) -> Self {
        FieldValue::Str(v)
    }
}

/// One metric (or alarm): name, kind, time, tags and fields.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Metric {
    /// The input plugin's name (PyAgent: `name=`), or a measurement name.
    pub name: Str,
    pub kind: MetricKind,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// Identifying key/value pairs: the `info` keys first, then the plugin's
    /// own (e.g. `nic`, `tag`). Order is kept.
    pub tags: Vec<(Str, Str)>,
    /// Measured values in the order the plugin produced them.
    pub fields: Vec<(Str, FieldValue)>,
}

impl Metric {
    pub fn new(name: impl Into<Str>, timestamp_ns: i64) -> Self {
        Metric {
            name: name.into(),
            kind: MetricKind::Metric,
            timestamp_ns,
            tags: Vec::new(),
            fields: Vec::new(),
        }
    }

    /// Builder: add a tag (replacing an existing one with the same key).
    pub fn with_tag(mut self, key: impl Into<Str>, value: impl Into<Str>) -> Self {
        self.set_tag(key, value);
        self
    }

    /// Builder: add a field (replacing an existing one with the same key).
    pub fn with_field(mut self, key: impl Into<Str>, value: impl Into<FieldValue>) -> Self {
        self.set_field(key, value);
        self
    }

    pub fn set_tag(&mut self, key: impl Into<Str>, value: impl Into<Str>) {
        let key = key.into();
        let value = value.into();
        match self.tags.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.tags.push((key, value)),
        }
    }

    pub fn set_field(&mut self, key: impl Into<Str>, value: impl Into<FieldValue>) {
        let key = key.into();
        let value = value.into();
        match self.fields.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((key, value)),
        }
    }

    /// Appends a field without checking for an existing key: for inputs that
    /// know their keys are distinct (the hot path).
    pub fn push_field(&mut self, key: impl Into<Str>, value: impl Into<FieldValue>) {
        self.fields.push((key.into(), value.into()));
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn field(&self, key: &str) -> Option<&FieldValue> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn remove_field(&mut self, key: &str) -> Option<FieldValue> {
        let pos = self.fields.iter().position(|(k, _)| k == key)?;
        Some(self.fields.remove(pos).1)
    }

    /// Seconds since the epoch (PyAgent's `timestamp`).
    pub fn timestamp_secs(&self) -> i64 {
        self.timestamp_ns.div_euclid(1_000_000_000)
    }
}

/// Current time in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_python_str() {
        assert_eq!(FieldValue::Float(5000.0).to_string(), "5000.0");
        assert_eq!(FieldValue::Float(33.1).to_string(), "33.1");
        assert_eq!(FieldValue::Bool(true).to_string(), "True");
        assert_eq!(FieldValue::Bool(false).to_string(), "False");
        assert_eq!(FieldValue::Int(-3).to_string(), "-3");
        assert_eq!(FieldValue::from("a b").to_string(), "a b");
    }

    #[test]
    fn set_replaces_and_keeps_order() {
        let mut m = Metric::new("mem", 0)
            .with_field("a", 1i64)
            .with_field("b", 2.5)
            .with_tag("host", "x");
        m.set_field("a", 3i64);
        assert_eq!(m.fields[0], (Str::new("a"), FieldValue::Int(3)));
        assert_eq!(m.fields.len(), 2);
        assert_eq!(m.tag("host"), Some("x"));
        assert_eq!(m.remove_field("a"), Some(FieldValue::Int(3)));
        assert!(m.field("a").is_none());
    }

    #[test]
    fn short_strings_are_inline() {
        // The representation choice above relies on this.
        assert!(!Str::new("bytes_recv_per_second").is_heap_allocated());
    }
}
