//! The `tag` a probe metric carries (PyAgent's per-target name).
use crate::metric::{FieldValue, Metric};

/// The metric's `tag`: a tag first, else a string field.
pub fn metric_tag(m: &Metric) -> Option<&str> {
    m.tag("tag").or_else(|| match m.field("tag") {
        Some(FieldValue::Str(s)) => Some(s.as_str()),
        _ => None,
    })
}
