//! What an input's metrics mean: which keys identify a series (tags), which
//! are measured values (fields), and for numeric fields whether they are
//! gauges or counters, their unit and a one-line help text.
//!
//! Metrics keep PyAgent's flat shape in the pipeline (alarms, processors,
//! the console and es outputs see exactly what PyAgent produced). The
//! dimensional encoders (line protocol for influxdb/http/file, the
//! Prometheus exposition) derive their view from the schema at encode time:
//! - identity keys that PyAgent carried as fields (a probe's `tag`,
//!   `address`, `url`, `method`) become tags;
//! - indexed keys ([`Group`]: `percent_percpu_0`, `process_top_1_pid`)
//!   become their own series, the index a tag (`cpu="0"`) or a field
//!   (`rank`), instead of being part of the field name.
//!
//! Each input declares its schema in its folder (`schema.rs`, next to the
//! README whose fields table a test checks against it). Metrics of no known
//! schema (exec/execd, whose line protocol already separates tags and
//! fields, renamed or aggregated metrics) pass through as they are.
use crate::metric::FieldValue;

/// How a numeric field behaves over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A cumulative count that only goes up (until a reset).
    Counter,
    /// A string (or a number that is not a measurement): exposed to
    /// Prometheus only as a label, when asked.
    Text,
}

/// The unit of a numeric field. Prometheus names carry base units
/// (`_bytes`, `_seconds`); values in milliseconds are scaled to seconds
/// there. Line protocol keeps the field's own name and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    None,
    Percent,
    Bytes,
    Seconds,
    Milliseconds,
    Microseconds,
    /// Seconds since the Unix epoch.
    Timestamp,
    BitsPerSecond,
    KilobitsPerSecond,
    MegabitsPerSecond,
    PacketsPerSecond,
    Packets,
    Characters,
}

impl Unit {
    /// The unit as written in the README fields tables.
    pub fn readme(self) -> &'static str {
        match self {
            Unit::None => "",
            Unit::Percent => "%",
            Unit::Bytes => "bytes",
            Unit::Seconds | Unit::Timestamp => "s",
            Unit::Milliseconds => "ms",
            Unit::Microseconds => "µs",
            Unit::BitsPerSecond => "bit/s",
            Unit::KilobitsPerSecond => "kbit/s",
            Unit::MegabitsPerSecond => "Mbit/s",
            Unit::PacketsPerSecond => "packets/s",
            Unit::Packets => "packets",
            Unit::Characters => "chars",
        }
    }

    /// The suffix of a Prometheus metric name (before `_total`), if any.
    pub fn prometheus_suffix(self) -> Option<&'static str> {
        match self {
            Unit::Percent => Some("percent"),
            Unit::Bytes => Some("bytes"),
            Unit::Seconds | Unit::Milliseconds | Unit::Microseconds | Unit::Timestamp => {
                Some("seconds")
            }
            Unit::Packets => Some("packets"),
            _ => None,
        }
    }

    /// The abbreviation a field name may end with (`response_ms`), which the
    /// Prometheus name replaces with the base unit.
    pub fn abbreviation(self) -> Option<&'static str> {
        match self {
            Unit::Milliseconds => Some("_ms"),
            Unit::Microseconds => Some("_us"),
            _ => None,
        }
    }

    /// Factor from the field's value to the Prometheus base unit.
    pub fn prometheus_scale(self) -> f64 {
        match self {
            Unit::Milliseconds => 1e-3,
            Unit::Microseconds => 1e-6,
            _ => 1.0,
        }
    }
}

/// One field (or a family of fields: a key with a `<placeholder>`, such as
/// `times_<t>`, matches any non-empty text in its place).
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    pub key: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub help: &'static str,
    /// The field's name in Prometheus family names, when the key would
    /// break its conventions (`count` is reserved for summaries).
    pub prometheus: Option<&'static str>,
}

impl FieldSpec {
    /// Builder: the name Prometheus sees instead of the key.
    pub const fn exposed_as(self, name: &'static str) -> FieldSpec {
        FieldSpec {
            prometheus: Some(name),
            ..self
        }
    }

    /// Whether `key` is this field (or one of this family of fields).
    pub fn matches(&self, key: &str) -> bool {
        match self.key.find('<') {
            None => self.key == key,
            Some(open) => {
                let close = self.key[open..]
                    .find('>')
                    .map_or(self.key.len(), |c| open + c + 1);
                let (prefix, suffix) = (&self.key[..open], &self.key[close..]);
                key.len() > prefix.len() + suffix.len()
                    && key.starts_with(prefix)
                    && key.ends_with(suffix)
            }
        }
    }
}

/// Shorthands for schema tables.
pub const fn gauge(key: &'static str, unit: Unit, help: &'static str) -> FieldSpec {
    FieldSpec {
        key,
        kind: Kind::Gauge,
        unit,
        help,
        prometheus: None,
    }
}
pub const fn counter(key: &'static str, unit: Unit, help: &'static str) -> FieldSpec {
    FieldSpec {
        key,
        kind: Kind::Counter,
        unit,
        help,
        prometheus: None,
    }
}
pub const fn text(key: &'static str, help: &'static str) -> FieldSpec {
    FieldSpec {
        key,
        kind: Kind::Text,
        unit: Unit::None,
        help,
        prometheus: None,
    }
}

/// Indexed keys `<prefix><index>` or `<prefix><index>_<sub>` that become
/// one series per index in the measurement `measurement`.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    pub prefix: &'static str,
    /// How the README writes the index (`<i>`, `<rank>`).
    pub placeholder: &'static str,
    pub measurement: &'static str,
    /// Name of the index in the series.
    pub index: &'static str,
    /// The index is a tag (`cpu="0"`); otherwise a field (`rank=1`).
    pub index_is_tag: bool,
    /// The field a key with no `_<sub>` becomes (`percent_percpu_0` →
    /// `percent`); empty when every key has a sub-key.
    pub whole: &'static str,
    /// Sub-keys that identify the series (tags).
    pub tags: &'static [&'static str],
    /// Specs of the whole field, the sub-keys and (when a field) the index.
    pub fields: &'static [FieldSpec],
}

impl Group {
    /// Splits `key` into (index, field name) when it belongs to the group.
    pub fn split<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = key.strip_prefix(self.prefix)?;
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let (index, tail) = rest.split_at(digits);
        if tail.is_empty() {
            (!self.whole.is_empty()).then_some((index, self.whole))
        } else {
            tail.strip_prefix('_').map(|sub| (index, sub))
        }
    }

    pub fn spec(&self, field: &str) -> Option<&'static FieldSpec> {
        self.fields.iter().find(|s| s.matches(field))
    }
}

/// An input's schema.
#[derive(Debug)]
pub struct Schema {
    /// The input (and measurement) name.
    pub name: &'static str,
    /// Field keys that identify the series: tags in dimensional outputs.
    pub tags: &'static [&'static str],
    /// Keys the input already sets as tags (for the README check and help).
    pub own_tags: &'static [&'static str],
    pub fields: &'static [FieldSpec],
    pub groups: &'static [Group],
}

impl Schema {
    pub fn is_tag(&self, key: &str) -> bool {
        self.tags.contains(&key)
    }

    pub fn spec(&self, key: &str) -> Option<&'static FieldSpec> {
        self.fields.iter().find(|s| s.matches(key))
    }

    /// The group an indexed key belongs to, with its index and field name.
    pub fn group_of<'k>(&self, key: &'k str) -> Option<(&'static Group, &'k str, &'k str)> {
        self.groups
            .iter()
            .find_map(|g| g.split(key).map(|(i, f)| (g, i, f)))
    }

    /// Whether dimensional encoders must reshape this schema's metrics (the
    /// fast path skips the ones that need nothing).
    pub fn reshapes(&self) -> bool {
        !self.tags.is_empty() || !self.groups.is_empty()
    }
}

/// The schema of metrics named `name`, if an input declares one.
pub fn lookup(name: &str) -> Option<&'static Schema> {
    crate::plugins::inputs::SCHEMAS
        .iter()
        .copied()
        .find(|s| s.name == name)
}

/// A field value as a string tag value (numbers and booleans as the line
/// protocol would write them, strings as they are).
pub fn tag_text(v: &FieldValue) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    Some(match v {
        FieldValue::Str(s) => Cow::Borrowed(s.as_str()),
        FieldValue::Int(i) => Cow::Owned(i.to_string()),
        FieldValue::Uint(u) => Cow::Owned(u.to_string()),
        FieldValue::Float(f) if f.is_finite() => Cow::Owned(f.to_string()),
        FieldValue::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        FieldValue::Float(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_match_a_non_empty_part() {
        let s = gauge("times_<t>", Unit::Seconds, "x");
        assert!(s.matches("times_user"));
        assert!(!s.matches("times_"));
        assert!(!s.matches("stats_user"));
        let s = gauge("loadavg_<n>_x", Unit::None, "x");
        assert!(s.matches("loadavg_1_x"));
        assert!(!s.matches("loadavg_1"));
        assert!(gauge("percent", Unit::Percent, "x").matches("percent"));
        assert!(!gauge("percent", Unit::Percent, "x").matches("percent_1"));
    }

    #[test]
    fn groups_split_indexed_keys() {
        let cpu = lookup("cpu").expect("cpu declares a schema");
        let (g, i, f) = cpu.group_of("percent_percpu_12").expect("per-cpu key");
        assert_eq!((g.measurement, i, f), ("cpu_percpu", "12", "percent"));
        let (g, i, f) = cpu.group_of("process_top_3_cpu_percent").expect("top key");
        assert_eq!(
            (g.measurement, i, f),
            ("cpu_process_top", "3", "cpu_percent")
        );
        assert!(cpu.group_of("process_top").is_none());
        assert!(cpu.group_of("percent").is_none());
        assert!(cpu.group_of("percent_percpu_x").is_none());
    }

    /// The first-column names of the README's fields table (the first table
    /// whose header starts with `field` or `name`), with the `kind` column
    /// when there is one.
    fn readme_rows(readme: &str) -> Vec<(Vec<String>, Option<String>)> {
        let mut rows = Vec::new();
        let mut kind_col = None;
        let mut in_table = false;
        for line in readme.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if !in_table {
                if line.starts_with('|') && matches!(cells.get(1), Some(&"field") | Some(&"name")) {
                    in_table = true;
                    kind_col = cells.iter().position(|c| *c == "kind");
                }
                continue;
            }
            if !line.starts_with('|') {
                break;
            }
            if line.starts_with("|---") {
                continue;
            }
            let names = cells[1]
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect();
            rows.push((names, kind_col.map(|c| cells[c].to_string())));
        }
        rows
    }

    /// Each input's README documents exactly its schema's keys, and says
    /// which are tags where it has a `kind` column.
    #[test]
    fn readme_fields_tables_match_the_schemas() {
        for schema in crate::plugins::inputs::SCHEMAS {
            let path = format!(
                "{}/src/plugins/inputs/{}/README.md",
                env!("CARGO_MANIFEST_DIR"),
                schema.name
            );
            let readme = std::fs::read_to_string(&path).expect("README readable");
            let mut expected: Vec<String> = schema
                .tags
                .iter()
                .chain(schema.own_tags)
                .map(|t| t.to_string())
                .chain(schema.fields.iter().map(|f| f.key.to_string()))
                .collect();
            for g in schema.groups {
                if !g.whole.is_empty() {
                    expected.push(format!("{}{}", g.prefix, g.placeholder));
                }
                for sub in g.tags.iter().copied().chain(
                    g.fields
                        .iter()
                        .map(|f| f.key)
                        .filter(|k| *k != g.whole && *k != g.index),
                ) {
                    expected.push(format!("{}{}_{sub}", g.prefix, g.placeholder));
                }
            }
            let rows = readme_rows(&readme);
            if schema.name == "internal" {
                // Its table is by kind of metric; every key must be named.
                for key in &expected {
                    assert!(
                        readme.contains(&format!("`{key}`")),
                        "{path}: `{key}` undocumented"
                    );
                }
                continue;
            }
            assert!(!rows.is_empty(), "{path}: no fields table");
            let documented: Vec<&String> = rows.iter().flat_map(|(n, _)| n).collect();
            for key in &expected {
                assert!(
                    documented.contains(&key),
                    "{path}: `{key}` is in the schema, not the README table"
                );
            }
            for name in &documented {
                assert!(
                    expected.contains(name),
                    "{path}: `{name}` is in the README table, not the schema"
                );
            }
            for (names, kind) in &rows {
                let Some(kind) = kind else { continue };
                for name in names {
                    let is_tag = schema.is_tag(name) || schema.own_tags.contains(&name.as_str());
                    assert_eq!(kind == "tag", is_tag, "{path}: kind of `{name}`");
                }
            }
        }
    }
}
