//! [`PluginConfig`]: one plugin instance's part of the merged tree, with
//! typed reading and errors that name the file and key.
use super::deserialize::{deserialize_at, deserialize_recording, file_of};
use super::load::{self, MergedTree, Provenance};
use super::{unknown, ConfigError, Count, Seconds};
use crate::metric::Str;
use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn discard_logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

/// One plugin instance's merged configuration. Plugins read it with
/// [`PluginConfig::parse`], whose errors carry the file and key path.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub(super) node: Node,
    pub(super) path: String,
    pub(super) tree: Arc<MergedTree>,
    /// The instance name (for inputs, the metric name).
    pub instance: Str,
    /// The input whose pipeline this plugin serves.
    pub input: Str,
    /// `alarm.code` from main.yaml, for alarm-raising plugins.
    pub alarm_code: Str,
    /// For an input: the interval the core gathers it at (its own
    /// `interval`, else main.yaml's), set by the planner. A gather that
    /// outlives `max(interval, 1 s)` is abandoned and the plugin rebuilt, so
    /// a plugin that waits inside a gather bounds its wait by this.
    pub interval: Option<std::time::Duration>,
    /// The plugin's logger (its actor's, with the input and plugin names);
    /// a discarding one while configs are only validated.
    pub(super) log: slog::Logger,
}

/// Where a [`PluginConfig`]'s value lives. Section entries stay in the
/// shared tree: a plugin config is cloned for the plan, every actor and
/// every rebuild, and an input with a thousand targets must not be copied
/// each time.
#[derive(Debug, Clone)]
pub(super) enum Node {
    /// `tree.root[section][name]`; missing or null reads as an empty mapping.
    InTree {
        section: Str,
        name: Str,
    },
    Owned(Arc<Value>),
}

fn empty_mapping() -> &'static Value {
    static EMPTY: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Value::Mapping(Mapping::new()))
}

impl PluginConfig {
    /// A config not read from files: for tests and embedding programs.
    pub fn from_value(name: &str, value: Value) -> Self {
        let tree = MergedTree::new(
            Value::Mapping(Mapping::new()),
            Provenance::default(),
            Vec::new(),
        );
        PluginConfig {
            node: Node::Owned(Arc::new(value)),
            path: name.to_string(),
            tree: Arc::new(tree),
            instance: Str::new(name),
            input: Str::new(name),
            alarm_code: Str::new(super::d_code()),
            interval: None,
            log: discard_logger(),
        }
    }

    /// Parses the whole config into the plugin's config struct.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        deserialize_at(&self.tree, &self.path, &self.value())
    }

    /// [`PluginConfig::parse`] for a struct with `#[serde(flatten)]` fields,
    /// which hide the keys they skip: its top-level `keys` are declared
    /// instead (see [`PluginConfig::declare_keys`] and [`struct_fields`]).
    pub fn parse_with_keys<T: DeserializeOwned>(&self, keys: &[&str]) -> Result<T, ConfigError> {
        let parsed = deserialize_recording(&self.tree, &self.path, &self.value(), false)?;
        self.declare_keys(keys);
        Ok(parsed)
    }

    /// The plugin's part of the tree. Borrowed, except for a section the
    /// running agent keeps as text ([`MergedTree::compacted`]): that is
    /// parsed again, so read it once per build, not per gather.
    pub fn value(&self) -> Cow<'_, Value> {
        match &self.node {
            Node::InTree { .. } => {
                if let Some(text) = self.tree.section_text(&self.path) {
                    // The text was checked to parse back to the same tree
                    // when it was made, so this does not fail.
                    return Cow::Owned(
                        load::from_text(text).unwrap_or_else(|| Value::Mapping(Mapping::new())),
                    );
                }
                Cow::Borrowed(self.tree_value())
            }
            Node::Owned(v) => Cow::Borrowed(v),
        }
    }

    fn tree_value(&self) -> &Value {
        let Node::InTree { section, name } = &self.node else {
            return empty_mapping();
        };
        match self
            .tree
            .root
            .get(section.as_str())
            .and_then(|s| s.get(name.as_str()))
        {
            Some(v) if !v.is_null() => v,
            _ => empty_mapping(),
        }
    }

    /// Whether two configs hold the same value (a reload changes only the
    /// plugins whose value differs). Two compacted sections compare as
    /// text, without parsing.
    pub fn same_value(&self, other: &PluginConfig) -> bool {
        let text = |c: &PluginConfig| match c.node {
            Node::InTree { .. } => c.tree.section_text(&c.path).cloned(),
            Node::Owned(_) => None,
        };
        if let (Some(a), Some(b)) = (text(self), text(other)) {
            if a == b {
                return true;
            }
        }
        *self.value() == *other.value()
    }

    /// Where the plugin logs (rate-limit repeated lines with
    /// [`crate::plugin::RateLimitedLog`]).
    pub fn log(&self) -> &slog::Logger {
        &self.log
    }

    /// The same config with the logger the plugin should use.
    pub fn with_log(mut self, log: slog::Logger) -> Self {
        self.log = log;
        self
    }

    /// Dotted key path of this config in the merged tree.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The registered plugin of the input this config serves: the `plugin:`
    /// key of `input.<input>` when set, else the input's name. Alarm rules
    /// are chosen by it.
    pub fn input_plugin(&self) -> Str {
        match self
            .tree
            .root
            .get("input")
            .and_then(|s| s.get(self.input.as_str()))
            .and_then(|c| c.get("plugin"))
        {
            Some(Value::String(p)) => Str::new(p),
            _ => self.input.clone(),
        }
    }

    /// The keys of main.yaml's `info` (every metric carries them as tags),
    /// with `host_name` and `node_ip`, which are always filled in.
    pub fn info_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = match self.tree.root.get("info") {
            Some(Value::Mapping(m)) => m.keys().map(load::key_string).collect(),
            _ => Vec::new(),
        };
        for k in ["host_name", "node_ip"] {
            if !keys.iter().any(|x| x == k) {
                keys.push(k.to_string());
            }
        }
        keys
    }

    /// The keys of main.yaml's `info` (with `node_ip` and `host_name`,
    /// which are always filled): the tags every metric carries from the
    /// host rather than from its input. The otlp output makes them resource
    /// attributes.
    pub fn info_tags(&self) -> Vec<Str> {
        let mut keys = vec![Str::new("host_name"), Str::new("node_ip")];
        if let Some(Value::Mapping(info)) = self.tree.root.get("info") {
            for k in info.keys() {
                let k = Str::from(load::key_string(k));
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        keys
    }

    /// This host's name as metrics carry it: main.yaml's `info.host_name`
    /// when set, else the detected one.
    pub fn host_name(&self) -> String {
        match self.tree.root.get("info").and_then(|i| i.get("host_name")) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => super::host::detect_host_name(),
        }
    }

    /// An error about `key` (relative to this plugin) naming the right file.
    pub fn error(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        let full = load::join(&self.path, key);
        ConfigError::new(file_of(&self.tree, &full), full, reason)
    }

    /// A timeout or period `v` read from `key`: 1 ms to an hour.
    pub fn seconds(&self, key: &str, v: Seconds) -> Result<Duration, ConfigError> {
        v.within(0.001, 3600.0).map_err(|r| self.error(key, r))
    }

    /// A count `v` read from `key`, between `min` and `max`.
    pub fn count(&self, key: &str, v: Count, min: u64, max: u64) -> Result<Count, ConfigError> {
        v.within(min, max).map_err(|r| self.error(key, r))
    }

    /// Declares the keys of a block read by hand (a trailing `*` matches a
    /// prefix): while a plan is built, its other keys are reported unknown
    /// unless a parse of the same block reads them. `name[]` declares a list
    /// whose items a parse of the same block reads: the keys inside the
    /// items are left for that parse to judge.
    pub fn declare_keys(&self, keys: &[&str]) {
        unknown::record_declared(&self.path, &self.value(), keys);
    }

    /// The config of a nested key, e.g. `use_plugin_converter`.
    pub fn child(&self, key: &str, value: Value, instance: &str) -> PluginConfig {
        PluginConfig {
            node: Node::Owned(Arc::new(match value {
                Value::Null => Value::Mapping(Mapping::new()),
                v => v,
            })),
            path: load::join(&self.path, key),
            tree: self.tree.clone(),
            instance: Str::new(instance),
            input: self.input.clone(),
            alarm_code: self.alarm_code.clone(),
            interval: self.interval,
            log: self.log.clone(),
        }
    }
}
