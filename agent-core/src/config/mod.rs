//! PyAgent-compatible configuration: `etc/main.yaml` and friends, merged
//! deeply (see [`load`]), then resolved into a [`Plan`]: one pipeline per
//! open input, each a chain of stages ending in outputs.
pub mod load;
mod plan;

pub use load::{MergedTree, Provenance};
pub use plan::{
    DiskBufferSettings, OutputPlan, OutputSettings, PipelinePlan, Plan, StageKind, StagePlan,
};

use crate::metric::Str;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
        if self.key.is_empty() {
            format!("{}: {}", self.file, self.reason)
        } else {
            format!("{}: key `{}`: {}", self.file, self.key, self.reason)
        }
    }
}

fn d_true() -> bool {
    true
}
fn d_reload() -> u64 {
    300
}
fn d_delay() -> f64 {
    1.0
}
fn d_interval() -> f64 {
    60.0
}
fn d_key_env() -> String {
    "AGENT_API_KEY".into()
}
fn d_update_timeout() -> f64 {
    10.0
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
    pub reload_sec: u64,
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
    pub update_api_timeout: f64,
    /// Unix socket of the status endpoint (`agent status`), relative to the
    /// folder holding etc/.
    #[serde(default = "d_control_socket")]
    pub control_socket: String,
    #[serde(default = "d_delay")]
    pub delay_sec: f64,
    #[serde(default)]
    pub info: Mapping,
    pub open: Vec<String>,
    #[serde(default = "d_interval")]
    pub interval: f64,
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
                while m
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
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
    pub rotation: Value,
    /// How many rotated files to keep: a count, or loguru's `10 days`
    /// (read as 10 files: one rotation a day is the usual case).
    #[serde(default = "LogConfig::d_retention")]
    pub retention: Value,
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
    fn d_rotation() -> Value {
        Value::String("50 MB".into())
    }
    fn d_retention() -> Value {
        Value::Number(10.into())
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: Self::d_level(),
            colorize: true,
            file: Self::d_file(),
            rotation: Self::d_rotation(),
            retention: Self::d_retention(),
            compression: None,
            format: None,
        }
    }
}

/// Parses a size such as `50 MB`, `10MiB`, `512 kb` or a plain number of bytes.
pub fn parse_size(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let s = s.trim();
            let split = s
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let num: f64 = num.trim().parse().ok()?;
            let mult = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1.0,
                "k" | "kb" | "kib" => 1024.0,
                "m" | "mb" | "mib" => 1024.0 * 1024.0,
                "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
                _ => return None,
            };
            Some((num * mult) as u64)
        }
        _ => None,
    }
}

/// Parses a retention: a count, or `N days` / `N files`.
pub fn parse_count(v: &Value) -> Option<usize> {
    match v {
        Value::Number(n) => n.as_u64().map(|n| n as usize),
        Value::String(s) => s.split_whitespace().next()?.parse().ok(),
        _ => None,
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
}

impl AgentConfig {
    /// Reads, merges and checks `dir`. Plugin names and plugin keys are
    /// checked by [`Plan::new`], which needs the registry.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let tree = load::load_tree(dir)?;
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
        let main: MainConfig = deserialize_at(&tree, "", &tree.root)?;
        let err = |key: &str, reason: String| {
            ConfigError::new(file_of(&tree, key), key.to_string(), reason)
        };
        if main.reload_sec < 10 {
            return Err(err(
                "reload_sec",
                format!("must be at least 10 seconds, got {}", main.reload_sec),
            ));
        }
        if !(0.0..=30.0).contains(&main.delay_sec) {
            return Err(err(
                "delay_sec",
                format!("must be between 0 and 30 seconds, got {}", main.delay_sec),
            ));
        }
        check_interval(main.interval).map_err(|r| err("interval", r))?;
        if parse_size(&main.log.rotation).is_none() {
            return Err(err(
                "log.rotation",
                "expected a size such as `50 MB` or a number of bytes".into(),
            ));
        }
        if parse_count(&main.log.retention).is_none() {
            return Err(err(
                "log.retention",
                "expected a number of files such as `10` or `10 days`".into(),
            ));
        }
        let info = resolve_info(&main.info).map_err(|(k, r)| err(&format!("info.{k}"), r))?;
        Ok(AgentConfig {
            dir: dir.to_path_buf(),
            main,
            info,
            tree,
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
            log: discard_logger(),
        }
    }
}

/// Intervals are seconds, fractional allowed, from 1 ms to a day.
pub fn check_interval(secs: f64) -> Result<Duration, String> {
    if secs.is_finite() && (0.001..=86_400.0).contains(&secs) {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!(
            "must be a number of seconds between 0.001 and 86400, got {secs}"
        ))
    }
}

fn file_of(tree: &MergedTree, key: &str) -> PathBuf {
    tree.provenance
        .file_of(key)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("main.yaml"))
}

/// Deserializes `value` (found at `base` in the tree) into `T`; errors name
/// the full key path and the file that set it.
fn deserialize_at<T: DeserializeOwned>(
    tree: &MergedTree,
    base: &str,
    value: &Value,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
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
            log: discard_logger(),
        }
    }

    /// Parses the whole config into the plugin's config struct.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        deserialize_at(&self.tree, &self.path, self.value())
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

    /// A timeout or period `v` (seconds, fractions allowed) read from `key`:
    /// above 0 and at most an hour.
    pub fn seconds(&self, key: &str, v: f64) -> Result<Duration, ConfigError> {
        if !v.is_finite() || v <= 0.0 || v > 3600.0 {
            return Err(self.error(
                key,
                format!("must be a number of seconds above 0 and at most 3600, got {v}"),
            ));
        }
        Ok(Duration::from_secs_f64(v))
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
            log: self.log.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_counts() {
        assert_eq!(parse_size(&Value::String("50 MB".into())), Some(50 << 20));
        assert_eq!(parse_size(&Value::String("1.5KB".into())), Some(1536));
        assert_eq!(parse_size(&Value::Number(10.into())), Some(10));
        assert_eq!(parse_size(&Value::String("lots".into())), None);
        assert_eq!(parse_count(&Value::String("10 days".into())), Some(10));
        assert_eq!(parse_count(&Value::Number(3.into())), Some(3));
    }

    #[test]
    fn interval_range() {
        assert!(check_interval(0.5).is_ok());
        assert!(check_interval(0.0).is_err());
        assert!(check_interval(f64::NAN).is_err());
        assert!(check_interval(100_000.0).is_err());
    }
}
