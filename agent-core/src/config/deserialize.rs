//! Typed reading of a node of the merged tree: errors carry the full key
//! path and the file that set it, and the keys a struct skipped are
//! recorded as unknown (see [`super::unknown`]).
use super::load::{self, MergedTree};
use super::{unknown, ConfigError, ConfigWarning};
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};

pub(crate) fn file_of(tree: &MergedTree, key: &str) -> PathBuf {
    tree.provenance
        .file_of(key)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("main.yaml"))
}

/// Warnings for unknown keys (key path, nearest known key).
pub(crate) fn warnings_for(
    tree: &MergedTree,
    unknown_keys: impl IntoIterator<Item = (String, Option<String>)>,
) -> Vec<ConfigWarning> {
    unknown_keys
        .into_iter()
        .map(|(key, near)| ConfigWarning {
            file: file_of(tree, &key).display().to_string(),
            message: match near {
                Some(k) => format!("unknown key; did you mean `{k}`?"),
                None => "unknown key".to_string(),
            },
            key,
        })
        .collect()
}

/// Deserializes `value` (found at `base` in the tree) into `T`; errors name
/// the full key path and the file that set it. While a plan is built, the
/// keys `T` skipped are recorded (see [`unknown`]).
pub(crate) fn deserialize_at<T: DeserializeOwned>(
    tree: &MergedTree,
    base: &str,
    value: &Value,
) -> Result<T, ConfigError> {
    deserialize_recording::<T>(tree, base, value, true)
}

pub(crate) fn deserialize_recording<T: DeserializeOwned>(
    tree: &MergedTree,
    base: &str,
    value: &Value,
    record: bool,
) -> Result<T, ConfigError> {
    let result = if record && unknown::is_collecting() {
        let mut skipped = std::collections::BTreeSet::new();
        let mut on_skip = |p: serde_ignored::Path| {
            skipped.insert(unknown::path_string(&p));
        };
        let d = serde_ignored::Deserializer::new(value, &mut on_skip);
        let result = serde_path_to_error::deserialize(d);
        if result.is_ok() {
            unknown::record_parse(base, skipped, unknown::struct_fields::<T>());
        }
        result
    } else {
        serde_path_to_error::deserialize(value)
    };
    result.map_err(|e| {
        let sub = e.path().to_string();
        let key = match (base.is_empty(), sub.as_str()) {
            (_, ".") => base.to_string(),
            (true, s) => s.to_string(),
            (false, s) => format!("{base}.{s}"),
        };
        let reason = e.into_inner().to_string();
        // serde reports a missing field at its parent: name the field itself.
        let (key, reason) = match reason.strip_prefix("missing field ") {
            Some(field) => (
                load::join(&key, field.trim_matches('`')),
                format!("required key {field} is missing"),
            ),
            None => (key, reason),
        };
        ConfigError::new(file_of(tree, &key), key, reason)
    })
}
