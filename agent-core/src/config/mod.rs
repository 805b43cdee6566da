//! PyAgent-compatible configuration: `etc/main.yaml` and friends, merged
//! deeply (see [`load`]), then resolved into a [`Plan`]: one pipeline per
//! open input, each a chain of stages ending in outputs.
mod deserialize;
mod error;
mod host;
pub mod load;
mod plan;
mod plugin_config;
mod unknown;
pub mod value;

pub use error::ConfigError;
pub use host::InfoTags;
pub use plugin_config::PluginConfig;

pub use load::{MergedTree, Provenance};
pub use plan::{
    AggregatorSettings, DiskBufferSettings, OutputPlan, OutputSettings, PipelinePlan, Plan,
    StageKind, StagePlan,
};

use crate::metric::Str;
use deserialize::{deserialize_at, file_of, warnings_for};
use host::resolve_info;
use plugin_config::{discard_logger, Node};
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
pub use unknown::{struct_fields, ConfigWarning};
pub use value::{Address, Count, Finite, Retention, Seconds, Size, Url};

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
fn d_dns_cache() -> Seconds {
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
fn d_opamp_poll() -> Seconds {
    Seconds::from_secs(30)
}
fn d_opamp_retry_max() -> Seconds {
    Seconds::from_secs(300)
}
pub(crate) fn d_code() -> String {
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
    /// Accept a plain `http://` update_api (a warning at every fetch):
    /// anyone on the path could push a config that runs programs.
    #[serde(default)]
    pub update_api_insecure: bool,
    /// CA certificate file (PEM) for a private CA of update_api's server,
    /// relative to the folder holding etc/.
    #[serde(default)]
    pub update_api_ca_file: Option<String>,
    /// Unix socket of the status endpoint (`agent status`), relative to the
    /// folder holding etc/.
    #[serde(default = "d_control_socket")]
    pub control_socket: String,
    /// OpAMP client (fleet management, `crate::opamp`); off when absent
    /// or its `endpoint` is empty.
    #[serde(default)]
    pub opamp: Option<OpampConfig>,
    #[serde(default = "d_delay")]
    pub delay_sec: Seconds,
    /// Seconds the probes' shared DNS cache keeps an answer (0 to 86400;
    /// 0 keeps none, look-ups of one name at once are still shared).
    #[serde(default = "d_dns_cache")]
    pub dns_cache_sec: Seconds,
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

/// `opamp:` of main.yaml: where the OpAMP server is and how to reach it.
#[derive(Debug, Clone, Deserialize)]
pub struct OpampConfig {
    /// `https://host/v1/opamp`; empty = off.
    #[serde(default)]
    pub endpoint: String,
    /// CA certificate (PEM) of a private CA, relative to the folder holding etc/.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// HTTP headers sent with every request (`Authorization: Bearer ...`);
    /// values are never logged and are masked in the effective config.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// A YAML file of more headers (`Name: value`), relative to the folder
    /// holding etc/, read at every (re)start of the client: keeps tokens
    /// out of the config folder.
    #[serde(default)]
    pub headers_file: Option<String>,
    /// Seconds between two polls (0.1 to 86400), each spread by ±10 %.
    #[serde(default = "d_opamp_poll")]
    pub poll_sec: Seconds,
    /// Accept a plain `http://` endpoint.
    #[serde(default)]
    pub insecure: bool,
    /// Cap of the retry backoff after errors (0.1 to 86400 s).
    #[serde(default = "d_opamp_retry_max")]
    pub retry_max_sec: Seconds,
    /// Seconds one request may take (0.001 to 300).
    #[serde(default = "d_update_timeout")]
    pub timeout_sec: Seconds,
}

impl Default for OpampConfig {
    fn default() -> Self {
        OpampConfig {
            endpoint: String::new(),
            ca_file: None,
            headers: Default::default(),
            headers_file: None,
            poll_sec: d_opamp_poll(),
            insecure: false,
            retry_max_sec: d_opamp_retry_max(),
            timeout_sec: d_update_timeout(),
        }
    }
}

impl OpampConfig {
    /// True when both say the same (an absent block is the defaults):
    /// whether a remote offer would change the OpAMP settings.
    pub fn same_settings(a: Option<&OpampConfig>, b: Option<&OpampConfig>) -> bool {
        let d = OpampConfig::default();
        let (a, b) = (a.unwrap_or(&d), b.unwrap_or(&d));
        a.endpoint.trim() == b.endpoint.trim()
            && a.ca_file == b.ca_file
            && a.headers == b.headers
            && a.headers_file == b.headers_file
            && a.poll_sec.as_secs_f64() == b.poll_sec.as_secs_f64()
            && a.insecure == b.insecure
            && a.retry_max_sec.as_secs_f64() == b.retry_max_sec.as_secs_f64()
            && a.timeout_sec.as_secs_f64() == b.timeout_sec.as_secs_f64()
    }

    /// Checks every key; `err(key, reason)` builds the error naming the file.
    fn check(&self, err: impl Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        let endpoint = self.endpoint.trim();
        if !endpoint.is_empty() {
            Url::parse(endpoint).map_err(|r| err("opamp.endpoint", r))?;
            if !is_https(endpoint) && !self.insecure {
                return Err(err(
                    "opamp.endpoint",
                    format!(
                        "must be an https:// URL, got {endpoint:?}: over plain http anyone on the \
                         path can push a configuration; set `opamp.insecure: true` to accept it anyway"
                    ),
                ));
            }
        }
        self.poll_sec
            .within(0.1, 86_400.0)
            .map_err(|r| err("opamp.poll_sec", r))?;
        self.retry_max_sec
            .within(0.1, 86_400.0)
            .map_err(|r| err("opamp.retry_max_sec", r))?;
        self.timeout_sec
            .within(0.001, 300.0)
            .map_err(|r| err("opamp.timeout_sec", r))?;
        for (name, value) in &self.headers {
            // The value is a secret: the reason never quotes it.
            check_header(name, value).map_err(|r| err(&format!("opamp.headers.{name}"), r))?;
        }
        if let Some(f) = &self.headers_file {
            if f.trim().is_empty() {
                return Err(err("opamp.headers_file", "must not be empty".into()));
            }
        }
        if let Some(f) = &self.ca_file {
            if f.trim().is_empty() {
                return Err(err("opamp.ca_file", "must not be empty".into()));
            }
        }
        Ok(())
    }
}

/// An HTTP header name is a token; a value has no control characters
/// (a newline would start another header). The value is never quoted.
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!("{name:?} is not a valid HTTP header name"));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err("the header value contains a control character (newline?)".into());
    }
    Ok(())
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

/// `https://` (any case), the only scheme update_api may use by default.
pub fn is_https(url: &str) -> bool {
    url.trim()
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

fn base_dir_of(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn resolve(base: &Path, file: &str) -> PathBuf {
    let p = Path::new(file);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
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
    /// systemd's state, logs and runtime folders, when the agent runs as a
    /// service: relative socket, log and disk-buffer paths go there.
    pub service_dirs: crate::service_dirs::ServiceDirs,
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
        let tree = MergedTree::new(merged, provenance, vec![path.to_path_buf()]);
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
        main.dns_cache_sec
            .within(0.0, 86_400.0)
            .map_err(|r| err("dns_cache_sec", r))?;
        check_interval(main.interval).map_err(|r| err("interval", r))?;
        if let Some(url) = main.update_api.as_deref().filter(|u| !u.trim().is_empty()) {
            Url::parse(url).map_err(|r| err("update_api", r))?;
            if !is_https(url) && !main.update_api_insecure {
                return Err(err(
                    "update_api",
                    format!(
                        "must be an https:// URL, got {:?}: over plain http anyone on the path \
                         can push a configuration (and run programs through `exec`); \
                         set `update_api_insecure: true` to accept it anyway",
                        url.trim()
                    ),
                ));
            }
        }
        if let Some(ca) = &main.update_api_ca_file {
            let path = resolve(&base_dir_of(dir), ca);
            if ca.trim().is_empty() || !path.is_file() {
                return Err(err(
                    "update_api_ca_file",
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        main.update_api_timeout
            .within(0.001, 300.0)
            .map_err(|r| err("update_api_timeout", r))?;
        if let Some(opamp) = &main.opamp {
            opamp.check(err)?;
        }
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
            service_dirs: crate::service_dirs::ServiceDirs::from_env(),
        })
    }

    /// The folder that holds `etc/`: relative log paths start there.
    pub fn base_dir(&self) -> PathBuf {
        base_dir_of(&self.dir)
    }

    /// `update_api_ca_file`, resolved from the folder holding etc/.
    pub fn update_api_ca_file(&self) -> Option<PathBuf> {
        self.main
            .update_api_ca_file
            .as_deref()
            .map(|f| resolve(&self.base_dir(), f))
    }

    /// `control_socket`, in `$RUNTIME_DIRECTORY` (else `$STATE_DIRECTORY`)
    /// when set, else beside `etc/` (see [`crate::service_dirs`]).
    pub fn control_socket(&self) -> PathBuf {
        self.service_dirs
            .control_socket(&self.main.control_socket, &self.base_dir())
    }

    /// `log.file`, in `$LOGS_DIRECTORY` when set, else beside `etc/`.
    pub fn log_file(&self) -> PathBuf {
        self.service_dirs
            .log_file(&self.main.log.file, &self.base_dir())
    }

    /// A relative state path (`disk_buffer.path`): in `$STATE_DIRECTORY`
    /// when set, else beside `etc/`.
    pub fn state_path(&self, configured: &Path) -> PathBuf {
        self.service_dirs.state_path(configured, &self.base_dir())
    }

    /// The merged config of one plugin section entry (`input.cpu`), as a
    /// [`PluginConfig`] whose errors name the right file.
    /// It refers to the shared tree rather than copying the entry.
    /// Call once `plan` is built from this config and validated: the big
    /// plugin sections are kept as JSON text from then on (see
    /// [`MergedTree::compacted`]) and the plan's configs move onto that
    /// tree, so the parsed tree is freed. `agent run` holds its config for
    /// its whole life; 30,000 probe targets parsed cost 12 MB.
    pub fn compact(&mut self, plan: &mut Plan) {
        self.compact_above(plan, load::COMPACT_MIN_BYTES);
    }

    pub(crate) fn compact_above(&mut self, plan: &mut Plan, min_bytes: usize) {
        let tree = Arc::new(self.tree.compacted_above(min_bytes));
        let old = std::mem::replace(&mut self.tree, tree.clone());
        let mut configs: Vec<&mut PluginConfig> = Vec::new();
        for p in &mut plan.pipelines {
            configs.push(&mut p.config);
            configs.extend(p.stages.iter_mut().map(|s| &mut s.config));
        }
        configs.extend(plan.outputs.iter_mut().map(|o| &mut o.config));
        for c in configs {
            if Arc::ptr_eq(&c.tree, &old) {
                c.tree = tree.clone();
            }
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_range() {
        let s = |v: f64| Seconds::new(v).unwrap();
        assert!(check_interval(s(0.5)).is_ok());
        assert!(check_interval(s(0.0)).is_err());
        assert!(check_interval(s(100_000.0)).is_err());
        assert!(Seconds::new(f64::NAN).is_err());
    }

    /// main.yaml with `n` telnet targets on `input.telnet`.
    fn telnet_config(n: usize, changed: Option<usize>) -> String {
        let targets: String = (0..n)
            .map(|i| {
                let port = if Some(i) == changed { 9 } else { 1000 + i };
                format!("      T{i}: {{address: '127.0.0.1:{port}'}}\n")
            })
            .collect();
        format!(
            "open: [telnet]\ninfo: {{node_ip: 127.0.0.1, host_name: h}}\n\
             common_output: [console]\noutput: {{console: {{}}}}\n\
             input:\n  telnet:\n    interval: 30\n    timeout: 2\n    target:\n{targets}"
        )
    }

    fn planned(yaml: &str) -> (AgentConfig, Plan) {
        let config = AgentConfig::from_yaml("main.yaml", yaml).unwrap();
        let plan = Plan::new(&config, &crate::Registry::with_builtins()).unwrap();
        (config, plan)
    }

    #[test]
    fn a_compacted_section_reads_back_the_same_and_leaves_the_parsed_tree() {
        let (mut config, mut plan) = planned(&telnet_config(300, None));
        let before = plan.pipelines[0].config.value().into_owned();
        let parsed_tree = Arc::downgrade(&config.tree);
        config.compact(&mut plan);
        assert!(
            parsed_tree.upgrade().is_none(),
            "nothing holds the parsed tree any more"
        );
        let cfg = &plan.pipelines[0].config;
        assert!(Arc::ptr_eq(&cfg.tree, &config.tree));
        assert!(
            matches!(cfg.value(), std::borrow::Cow::Owned(_)),
            "read from text"
        );
        assert_eq!(*cfg.value(), before);
        // The scalars stay in the tree (`plugin:`, `interval:` are read
        // there); the 300 targets do not.
        let kept = config.tree.root["input"]["telnet"].clone();
        assert_eq!(kept.get("interval"), Some(&Value::from(30)));
        assert!(kept.get("target").is_none(), "{kept:?}");
        assert_eq!(cfg.input_plugin(), "telnet");
        // The plugin builds from the text, with all its targets.
        let registry = crate::Registry::with_builtins();
        let entry = registry.inputs.get("telnet").unwrap();
        assert!((entry.factory)(cfg).is_ok());
        let text = config.tree.section_text("input.telnet").unwrap().clone();
        assert_eq!(text.matches("127.0.0.1:").count(), 300);
        // Errors still name the key and file.
        let err = cfg.error("target.T7.address", "bad");
        assert_eq!(
            err.to_string(),
            ConfigError::new(
                std::path::PathBuf::from("main.yaml"),
                "input.telnet.target.T7.address",
                "bad"
            )
            .to_string()
        );
        // Compacting again changes nothing.
        let again = config.tree.compacted();
        assert_eq!(again.section_text("input.telnet"), Some(&text));
        assert_eq!(again.root, config.tree.root);
        // A small section (the console's `{}`) stays parsed: no parse per read.
        assert!(matches!(
            plan.outputs[0].config.value(),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn the_shipped_etc_reads_the_same_compacted() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc");
        let mut config = AgentConfig::load(&dir).unwrap();
        let mut plan = Plan::new(&config, &crate::Registry::with_builtins()).unwrap();
        let values = |plan: &Plan| -> Vec<Value> {
            let mut v: Vec<Value> = Vec::new();
            for p in &plan.pipelines {
                v.push(p.config.value().into_owned());
                v.extend(p.stages.iter().map(|s| s.config.value().into_owned()));
            }
            v.extend(plan.outputs.iter().map(|o| o.config.value().into_owned()));
            v
        };
        let before = values(&plan);
        // Every section as text, whatever its size: each plugin's config
        // in the shipped etc/ survives the round trip.
        config.compact_above(&mut plan, 0);
        assert!(
            config.tree.sections.len() >= 3,
            "the shipped etc/ has big sections: {:?}",
            config.tree.sections.keys()
        );
        assert_eq!(values(&plan), before);
    }

    #[test]
    fn a_reload_compares_compacted_sections_by_text() {
        use crate::pipeline::ConfigDiff;
        let compacted = |yaml: &str| {
            let (mut config, mut plan) = planned(yaml);
            config.compact(&mut plan);
            (config, plan)
        };
        let (a, pa) = compacted(&telnet_config(300, None));
        let (b, pb) = compacted(&telnet_config(300, None));
        assert!(pa.pipelines[0].config.same_value(&pb.pipelines[0].config));
        assert!(ConfigDiff::new(&pa, &a.info, &pb, &b.info).is_empty());
        let (c, pc) = compacted(&telnet_config(300, Some(250)));
        assert!(!pa.pipelines[0].config.same_value(&pc.pipelines[0].config));
        let d = ConfigDiff::new(&pa, &a.info, &pc, &c.info);
        assert_eq!(d.pipelines.to_change, [Str::new("telnet")]);
        assert!(d.changes[0].input_config && !d.changes[0].interval, "{d:?}");
        // A compacted plan against one that is not (an embedding program's).
        let (_, plain) = planned(&telnet_config(300, None));
        assert!(pa.pipelines[0]
            .config
            .same_value(&plain.pipelines[0].config));
    }
}
