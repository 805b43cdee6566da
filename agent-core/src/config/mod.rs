//! PyAgent-compatible configuration: `etc/main.yaml` and friends, merged
//! deeply (see [`load`]), then resolved into a [`Plan`]: one pipeline per
//! open input, each a chain of stages ending in outputs.
pub mod load;
mod plan;
mod unknown;
pub mod value;

pub use load::{MergedTree, Provenance};
pub use plan::{
    AggregatorSettings, DiskBufferSettings, OutputPlan, OutputSettings, PipelinePlan, Plan,
    StageKind, StagePlan,
};

use crate::metric::Str;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
pub use unknown::{struct_fields, ConfigWarning};
pub use value::{Address, Count, Finite, Retention, Seconds, Size, Url};

/// A configuration problem: which file, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    pub file: String,
    /// Dotted key path (`input.cpu.interval`); empty for whole-file problems.
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(file: impl AsRef<Path>, key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            file: file.as_ref().display().to_string(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    pub fn file(file: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        Self::new(file, "", reason)
    }

    fn render(&self) -> String {
        let reason = shorten(&self.reason);
        if self.key.is_empty() {
            format!("{}: {}", self.file, reason)
        } else {
            format!("{}: key `{}`: {}", self.file, self.key, reason)
        }
    }
}

/// Longest reason shown in full; serde quotes the offending value, and a
/// 1 MB string would make a 1 MB error line.
const MAX_REASON_CHARS: usize = 500;

fn shorten(reason: &str) -> std::borrow::Cow<'_, str> {
    match reason.char_indices().nth(MAX_REASON_CHARS) {
        None => reason.into(),
        Some((cut, _)) => format!("{}… ({} bytes in all)", &reason[..cut], reason.len()).into(),
    }
}

fn d_true() -> bool {
    true
}
fn d_reload() -> Seconds {
    Seconds::from_secs(300)
}
fn d_delay() -> Seconds {
    Seconds::from_secs(1)
}
fn d_interval() -> Seconds {
    Seconds::from_secs(60)
}
fn d_key_env() -> String {
    "AGENT_API_KEY".into()
}
fn d_update_timeout() -> Seconds {
    Seconds::from_secs(10)
}
fn d_control_socket() -> String {
    "run/agent.sock".into()
}
fn d_code() -> String {
    "monitor_metric_alarm".into()
}

/// The keys of `main.yaml` (after merging), with PyAgent's defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct MainConfig {
    #[serde(default)]
    pub debug: bool,
    #[serde(default = "d_reload")]
    pub reload_sec: Seconds,
    #[serde(default)]
    pub update_api: Option<String>,
    /// Environment variable that holds the update_api key.
    #[serde(default = "d_key_env")]
    pub update_api_key_env: String,
    /// Or a file that holds it (relative to the folder holding etc/).
    #[serde(default)]
    pub update_api_key_file: Option<String>,
    /// Seconds the whole update_api request may take.
    #[serde(default = "d_update_timeout")]
    pub update_api_timeout: Seconds,
    /// Unix socket of the status endpoint (`agent status`), relative to the
    /// folder holding etc/.
    #[serde(default = "d_control_socket")]
    pub control_socket: String,
    #[serde(default = "d_delay")]
    pub delay_sec: Seconds,
    #[serde(default)]
    pub info: Mapping,
    pub open: Vec<String>,
    #[serde(default = "d_interval")]
    pub interval: Seconds,
    #[serde(default)]
    pub common_output: Vec<String>,
    #[serde(default)]
    pub common_processor: Vec<String>,
    #[serde(default)]
    pub common_aggs: Vec<String>,
    #[serde(default)]
    pub alarm: AlarmMain,
    #[serde(default)]
    pub log: LogConfig,
    // The plugin sections are read from the tree by the planner; here they
    // are only checked to be mappings (a copy of a thousand probe targets
    // would stay in memory for nothing).
    #[serde(default)]
    pub input: Section,
    #[serde(default)]
    pub processor: Section,
    #[serde(default)]
    pub aggs: Section,
    #[serde(default)]
    pub output: Section,
}

/// A plugin section of main.yaml (`input:`, `processor:`, ...): must be a
/// mapping (or empty); its entries are not copied (see [`AgentConfig::section`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Section;

impl<'de> Deserialize<'de> for Section {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Section;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a YAML mapping")
            }
            fn visit_unit<E>(self) -> Result<Section, E> {
                Ok(Section)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Section, A::Error> {
                // Keys are read (not ignored) so the unknown-key walk sees
                // plain keys; the plugin entries themselves are skipped.
                while m.next_entry::<Value, serde::de::IgnoredAny>()?.is_some() {}
                Ok(Section)
            }
        }
        d.deserialize_map(Visit)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct AlarmMain {
    #[serde(default = "d_code")]
    pub code: String,
}

impl Default for AlarmMain {
    fn default() -> Self {
        AlarmMain { code: d_code() }
    }
}

/// PyAgent's `log:` block (loguru style values are accepted).
#[derive(Debug, Clone, Deserialize)]
pub struct LogConfig {
    #[serde(default = "LogConfig::d_level")]
    pub level: String,
    #[serde(default = "d_true")]
    pub colorize: bool,
    /// Relative paths are taken from the folder that holds `etc/`.
    #[serde(default = "LogConfig::d_file")]
    pub file: String,
    /// Size at which the file rotates: `50 MB`, `500 KB`, or bytes.
    #[serde(default = "LogConfig::d_rotation")]
    pub rotation: Size,
    /// How many rotated files to keep: a count, or loguru's `10 days`
    /// (read as 10 files: one rotation a day is the usual case).
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub compression: Option<String>,
    #[serde(default)]
    pub format: Option<String>,
}

impl LogConfig {
    fn d_level() -> String {
        "INFO".into()
    }
    fn d_file() -> String {
        "log/agent.log".into()
    }
    fn d_rotation() -> Size {
        Size::from_bytes(50 << 20)
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: Self::d_level(),
            colorize: true,
            file: Self::d_file(),
            rotation: Self::d_rotation(),
            retention: Retention::default(),
            compression: None,
            format: None,
        }
    }
}

/// A validated configuration, ready to be planned into pipelines.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The `etc/` folder it was read from.
    pub dir: PathBuf,
    pub main: MainConfig,
    /// `info` as tags, with `node_ip` and `host_name` filled in.
    pub info: InfoTags,
    pub tree: Arc<MergedTree>,
    /// Unknown keys of main.yaml itself (the plugin sections' are found by
    /// [`Plan::new`], which also repeats these in [`Plan::warnings`]).
    pub warnings: Vec<ConfigWarning>,
}

impl AgentConfig {
    /// Reads, merges and checks `dir`. Plugin names and plugin keys are
    /// checked by [`Plan::new`], which needs the registry.
    /// Environment overrides (`AGENT__INPUT__PING__TIMEOUT=2`) are applied
    /// last.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let tree = load::load_tree(dir)?;
        Self::from_tree(dir, tree)
    }

    /// [`AgentConfig::load`] with the environment given as a list instead
    /// of the process's (tests, embedding programs).
    pub fn load_with_env<K, V>(
        dir: &Path,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError>
    where
        K: Into<std::ffi::OsString>,
        V: Into<std::ffi::OsString>,
    {
        let tree = load::load_tree_with_env(dir, env)?;
        Self::from_tree(dir, tree)
    }

    /// A configuration given as one main.yaml text, for programs that embed
    /// the core; `label` names it in errors.
    pub fn from_yaml(label: &str, text: &str) -> Result<Self, ConfigError> {
        let path = Path::new(label);
        let root = load::parse_yaml(path, text)?;
        let mut provenance = Provenance::default();
        let mut merged = Value::Mapping(Mapping::new());
        load::merge_into(&mut merged, root, "", &Arc::from(path), &mut provenance);
        let tree = MergedTree {
            root: merged,
            provenance,
            files: vec![path.to_path_buf()],
        };
        Self::from_tree(Path::new("."), tree)
    }

    pub fn from_tree(dir: &Path, tree: MergedTree) -> Result<Self, ConfigError> {
        let tree = Arc::new(tree);
        let collecting = unknown::Collecting::start();
        let main: MainConfig = deserialize_at(&tree, "", &tree.root)?;
        // The plugin sections are nodes of their own, checked by the planner.
        let unknown_keys = collecting.finish().into_iter().filter(|(key, _)| {
            !load::SECTIONS
                .iter()
                .any(|s| key.strip_prefix(s).is_some_and(|r| r.starts_with('.')))
        });
        let warnings = warnings_for(&tree, unknown_keys);
        let err = |key: &str, reason: String| {
            ConfigError::new(file_of(&tree, key), key.to_string(), reason)
        };
        main.reload_sec
            .within(10.0, 86_400.0)
            .map_err(|r| err("reload_sec", r))?;
        main.delay_sec
            .within(0.0, 30.0)
            .map_err(|r| err("delay_sec", r))?;
        check_interval(main.interval).map_err(|r| err("interval", r))?;
        if let Some(url) = main.update_api.as_deref().filter(|u| !u.trim().is_empty()) {
            Url::parse(url).map_err(|r| err("update_api", r))?;
        }
        main.update_api_timeout
            .within(0.001, 300.0)
            .map_err(|r| err("update_api_timeout", r))?;
        if main.log.rotation.bytes() == 0 {
            return Err(err(
                "log.rotation",
                "must be a size above 0 such as `50 MB`".into(),
            ));
        }
        let info = resolve_info(&main.info).map_err(|(k, r)| err(&format!("info.{k}"), r))?;
        Ok(AgentConfig {
            dir: dir.to_path_buf(),
            main,
            info,
            tree,
            warnings,
        })
    }

    /// The folder that holds `etc/`: relative log paths start there.
    pub fn base_dir(&self) -> PathBuf {
        match self.dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    pub fn control_socket(&self) -> PathBuf {
        let p = Path::new(&self.main.control_socket);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir().join(p)
        }
    }

    pub fn log_file(&self) -> PathBuf {
        let p = Path::new(&self.main.log.file);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir().join(p)
        }
    }

    /// The merged config of one plugin section entry (`input.cpu`), as a
    /// [`PluginConfig`] whose errors name the right file.
    /// It refers to the shared tree rather than copying the entry.
    pub fn section(&self, section: &str, name: &str) -> PluginConfig {
        PluginConfig {
            node: Node::InTree {
                section: Str::new(section),
                name: Str::new(name),
            },
            path: format!("{section}.{name}"),
            tree: self.tree.clone(),
            instance: Str::new(name),
            input: Str::new(name),
            alarm_code: Str::new(&self.main.alarm.code),
            interval: None,
            log: discard_logger(),
        }
    }
}

/// Intervals are seconds, fractional allowed, from 1 ms to a day.
pub fn check_interval(secs: Seconds) -> Result<Duration, String> {
    secs.within(0.001, 86_400.0)
}

fn file_of(tree: &MergedTree, key: &str) -> PathBuf {
    tree.provenance
        .file_of(key)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("main.yaml"))
}

/// Warnings for unknown keys (key path, nearest known key).
fn warnings_for(
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
fn deserialize_at<T: DeserializeOwned>(
    tree: &MergedTree,
    base: &str,
    value: &Value,
) -> Result<T, ConfigError> {
    deserialize_recording::<T>(tree, base, value, true)
}

fn deserialize_recording<T: DeserializeOwned>(
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

/// The `info` tags shared by every metric.
pub type InfoTags = Arc<[(Str, Str)]>;

fn resolve_info(info: &Mapping) -> Result<InfoTags, (String, String)> {
    let mut out: Vec<(Str, Str)> = Vec::with_capacity(info.len() + 2);
    for (k, v) in info {
        let key = load::key_string(k);
        let val = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
            // An empty value means "fill it in" for the shipped keys.
            Value::Null => String::new(),
            _ => return Err((key, "info values must be plain strings or numbers".into())),
        };
        out.push((Str::new(key), Str::from(val)));
    }
    for (key, fill) in [
        ("node_ip", detect_node_ip as fn() -> String),
        ("host_name", detect_host_name),
    ] {
        match out.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) if v.is_empty() => *v = Str::from(fill()),
            Some(_) => {}
            None => out.push((Str::new(key), Str::from(fill()))),
        }
    }
    Ok(out.into())
}

/// The first non-loopback IPv4 address of the host, by interface name.
fn detect_node_ip() -> String {
    let Ok(nets) = sysinfo::Networks::new_with_refreshed_list() else {
        return "127.0.0.1".to_string();
    };
    let mut names: Vec<&std::ffi::OsString> = nets.keys().collect();
    names.sort();
    for name in names {
        for ip in nets[name].ip_networks() {
            if let std::net::IpAddr::V4(v4) = ip.addr {
                if !v4.is_loopback() && !v4.is_unspecified() && !v4.is_link_local() {
                    return v4.to_string();
                }
            }
        }
    }
    "127.0.0.1".to_string()
}

fn detect_host_name() -> String {
    sysinfo::System::host_name()
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn discard_logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

/// One plugin instance's merged configuration. Plugins read it with
/// [`PluginConfig::parse`], whose errors carry the file and key path.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    node: Node,
    path: String,
    tree: Arc<MergedTree>,
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
    pub interval: Option<Duration>,
    /// The plugin's logger (its actor's, with the input and plugin names);
    /// a discarding one while configs are only validated.
    log: slog::Logger,
}

/// Where a [`PluginConfig`]'s value lives. Section entries stay in the
/// shared tree: a plugin config is cloned for the plan, every actor and
/// every rebuild, and an input with a thousand targets must not be copied
/// each time.
#[derive(Debug, Clone)]
enum Node {
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
        let tree = MergedTree {
            root: Value::Mapping(Mapping::new()),
            provenance: Provenance::default(),
            files: Vec::new(),
        };
        PluginConfig {
            node: Node::Owned(Arc::new(value)),
            path: name.to_string(),
            tree: Arc::new(tree),
            instance: Str::new(name),
            input: Str::new(name),
            alarm_code: Str::new(d_code()),
            interval: None,
            log: discard_logger(),
        }
    }

    /// Parses the whole config into the plugin's config struct.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        deserialize_at(&self.tree, &self.path, self.value())
    }

    /// [`PluginConfig::parse`] for a struct with `#[serde(flatten)]` fields,
    /// which hide the keys they skip: its top-level `keys` are declared
    /// instead (see [`PluginConfig::declare_keys`] and [`struct_fields`]).
    pub fn parse_with_keys<T: DeserializeOwned>(&self, keys: &[&str]) -> Result<T, ConfigError> {
        let parsed = deserialize_recording(&self.tree, &self.path, self.value(), false)?;
        self.declare_keys(keys);
        Ok(parsed)
    }

    pub fn value(&self) -> &Value {
        match &self.node {
            Node::InTree { section, name } => match self
                .tree
                .root
                .get(section.as_str())
                .and_then(|s| s.get(name.as_str()))
            {
                Some(v) if !v.is_null() => v,
                _ => empty_mapping(),
            },
            Node::Owned(v) => v,
        }
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
    /// unless a parse of the same block reads them.
    pub fn declare_keys(&self, keys: &[&str]) {
        unknown::record_declared(&self.path, self.value(), keys);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_value_in_an_error_is_cut_short() {
        let long = format!("unknown input plugin `{}`", "x".repeat(1 << 20));
        let shown = ConfigError::new("etc/main.yaml", "open[0]", long).to_string();
        assert!(shown.len() < 1000, "{} bytes", shown.len());
        assert!(shown.starts_with("etc/main.yaml: key `open[0]`: unknown input plugin `xxx"));
        assert!(
            shown.ends_with(&format!("… ({} bytes in all)", (1 << 20) + 23)),
            "{shown}"
        );
        let short = ConfigError::new("etc/main.yaml", "interval", "must be positive");
        assert_eq!(
            short.to_string(),
            "etc/main.yaml: key `interval`: must be positive"
        );
    }

    #[test]
    fn interval_range() {
        let s = |v: f64| Seconds::new(v).unwrap();
        assert!(check_interval(s(0.5)).is_ok());
        assert!(check_interval(s(0.0)).is_err());
        assert!(check_interval(s(100_000.0)).is_err());
        assert!(Seconds::new(f64::NAN).is_err());
    }
}
