//! From merged config to the pipelines to run.
//!
//! For each input named in `open`:
//! input → `processor.<input>` stages → `common_processor` stages →
//! `aggs.<input>` (`befor`/`before` stages, the alarm rules, its own
//! `use_plugin_*` stages, `after` stages) → `common_aggs` stages → outputs
//! (the input's `output:` list, else `common_output`).
//!
//! A stage block is a mapping whose `use_plugin_<name>` keys name a
//! registered processor or aggregator, in order; other keys are left to the
//! block's owner.
use super::value::{Count, Seconds, Size};
use super::{check_interval, unknown, AgentConfig, ConfigError, ConfigWarning, PluginConfig};
use crate::metric::Str;
use crate::registry::{build_error, PluginKind, Registry};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    Processor,
    Aggregator,
}

/// One processor or aggregator in a pipeline.
#[derive(Debug, Clone)]
pub struct StagePlan {
    pub kind: StageKind,
    /// The registered plugin name (`converter`, `alarm`, `basicstats`).
    pub plugin: String,
    pub config: PluginConfig,
}

/// One input and everything its metrics pass through.
#[derive(Debug, Clone)]
pub struct PipelinePlan {
    /// Instance name: the metric name and the key under `input:`.
    pub name: Str,
    /// Registered input plugin (the `plugin:` key, else the name).
    pub plugin: String,
    pub config: PluginConfig,
    pub interval: Duration,
    pub stages: Vec<StagePlan>,
    /// Output instance names.
    pub outputs: Vec<String>,
}

fn d_batch() -> usize {
    1000
}
fn d_buffer() -> usize {
    10_000
}
fn d_retry_max() -> Seconds {
    Seconds::from_secs(60)
}

/// Largest `batch_size` and `buffer_limit` (metrics held in memory).
const MAX_BATCH: u64 = 1_000_000;
const MAX_BUFFER: u64 = 100_000_000;

/// A [`Count`] read into a `usize` field.
fn count_usize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    Count::deserialize(d).map(Count::as_usize)
}

/// Buffering and delivery settings every output accepts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OutputSettings {
    /// Metrics per write, 1 to 1,000,000.
    #[serde(default = "d_batch", deserialize_with = "count_usize")]
    pub batch_size: usize,
    /// Seconds between flushes; PyAgent's `interval` is read when absent.
    #[serde(default)]
    pub flush_interval: Option<Seconds>,
    #[serde(default)]
    pub interval: Option<Seconds>,
    /// Random extra delay up to this many seconds (at most 3600), so
    /// thousands of agents do not flush in the same instant.
    #[serde(default)]
    pub flush_jitter: Seconds,
    /// Metrics held while the output cannot deliver, at least `batch_size`.
    #[serde(default = "d_buffer", deserialize_with = "count_usize")]
    pub buffer_limit: usize,
    /// Cap of the retry backoff, seconds (1 ms to a day).
    #[serde(default = "d_retry_max")]
    pub retry_max_sec: Seconds,
    /// Write-ahead log on disk for metrics not yet delivered.
    #[serde(default)]
    pub disk_buffer: Option<DiskBufferSettings>,
}

/// `disk_buffer: {path, max_bytes}` of an output.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DiskBufferSettings {
    /// Directory of the segment log; relative paths are taken from the
    /// folder that holds `etc/`.
    pub path: std::path::PathBuf,
    /// A size such as `512 MB` or a number of bytes (default 256 MB).
    #[serde(default = "d_disk_max")]
    pub max_bytes: Size,
}

fn d_disk_max() -> Size {
    Size::from_bytes(256 << 20)
}

impl DiskBufferSettings {
    /// The size cap, when above 0 (the planner refuses 0).
    pub fn max_bytes(&self) -> Option<u64> {
        Some(self.max_bytes.bytes()).filter(|n| *n > 0)
    }
}

impl OutputSettings {
    pub fn flush_every(&self) -> Duration {
        self.flush_interval
            .or(self.interval)
            .unwrap_or(Seconds::from_secs(10))
            .as_duration()
    }
}

fn d_period() -> Seconds {
    Seconds::from_secs(30)
}

/// Keys every aggregator accepts (Telegraf's names); read by the stage
/// actor, checked here.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct AggregatorSettings {
    /// Seconds between two emissions, 1 ms to a day.
    #[serde(default = "d_period")]
    pub period: Seconds,
    #[serde(default)]
    pub drop_original: bool,
}

impl Default for AggregatorSettings {
    fn default() -> Self {
        AggregatorSettings {
            period: d_period(),
            drop_original: false,
        }
    }
}

impl AggregatorSettings {
    /// Parses and range-checks the settings of an aggregator stage.
    pub fn parse(cfg: &PluginConfig) -> Result<AggregatorSettings, ConfigError> {
        let settings: AggregatorSettings = cfg.parse()?;
        settings
            .period
            .within(0.001, 86_400.0)
            .map_err(|r| cfg.error("period", r))?;
        Ok(settings)
    }
}

/// One output instance.
#[derive(Debug, Clone)]
pub struct OutputPlan {
    pub name: String,
    pub plugin: String,
    pub config: PluginConfig,
    pub settings: OutputSettings,
}

/// Everything to run, validated against the registry.
#[derive(Debug, Clone)]
pub struct Plan {
    pub pipelines: Vec<PipelinePlan>,
    pub outputs: Vec<OutputPlan>,
    /// Delay between starting two inputs (`delay_sec`).
    pub start_delay: Duration,
    /// Unknown keys (main.yaml's and every planned plugin's), probably
    /// typos: `agent validate` prints them, `--strict` refuses them, `agent
    /// run` logs them at start and on every reload.
    pub warnings: Vec<ConfigWarning>,
}

#[derive(Deserialize, Default)]
struct InputCommon {
    #[serde(default)]
    plugin: Option<String>,
    #[serde(default)]
    interval: Option<Seconds>,
    #[serde(default)]
    output: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
struct OutputCommon {
    #[serde(default)]
    plugin: Option<String>,
}

fn unknown(kind: PluginKind, name: &str, registry: &Registry) -> String {
    format!(
        "unknown {kind} plugin `{name}`; registered {kind}s: {}",
        registry.names(kind).join(", ")
    )
}

impl Plan {
    /// Resolves and validates every pipeline: plugin names exist, every
    /// plugin's config parses and builds.
    pub fn new(config: &AgentConfig, registry: &Registry) -> Result<Plan, ConfigError> {
        let collecting = unknown::Collecting::start();
        let main = &config.main;
        let mut outputs: Vec<OutputPlan> = Vec::new();
        let mut pipelines = Vec::new();
        for (i, name) in main.open.iter().enumerate() {
            if pipelines
                .iter()
                .any(|p: &PipelinePlan| p.name == name.as_str())
            {
                continue;
            }
            let mut cfg = config.section("input", name);
            let common: InputCommon = cfg.parse()?;
            let plugin = common.plugin.clone().unwrap_or_else(|| name.clone());
            let Some(entry) = registry.inputs.get(plugin.as_str()) else {
                let key = if common.plugin.is_some() {
                    format!("input.{name}.plugin")
                } else {
                    format!("open[{i}]")
                };
                return Err(config_error(
                    config,
                    &key,
                    unknown(PluginKind::Input, &plugin, registry),
                ));
            };
            let secs = common.interval.unwrap_or(main.interval);
            let interval = check_interval(secs).map_err(|r| cfg.error("interval", r))?;
            cfg.interval = Some(interval);
            (entry.factory)(&cfg).map_err(|e| build_error(&cfg, e))?;

            let mut stages = Vec::new();
            let proc_cfg = config.section("processor", name);
            stage_block(&proc_cfg, registry, &mut stages)?;
            for common_name in &main.common_processor {
                stage_block(
                    &config.section("processor", common_name).for_input(name),
                    registry,
                    &mut stages,
                )?;
            }
            aggs_block(&config.section("aggs", name), registry, &mut stages)?;
            for common_name in &main.common_aggs {
                aggs_block(
                    &config.section("aggs", common_name).for_input(name),
                    registry,
                    &mut stages,
                )?;
            }

            let out_names = common
                .output
                .clone()
                .unwrap_or_else(|| main.common_output.clone());
            for out in &out_names {
                if outputs.iter().any(|o| &o.name == out) {
                    continue;
                }
                let key = if common.output.is_some() {
                    format!("input.{name}.output")
                } else {
                    "common_output".to_string()
                };
                outputs.push(output_plan(config, registry, out, &key)?);
            }
            pipelines.push(PipelinePlan {
                name: Str::new(name),
                plugin,
                config: cfg,
                interval,
                stages,
                outputs: out_names,
            });
        }
        let mut warnings = config.warnings.clone();
        warnings.extend(super::warnings_for(&config.tree, collecting.finish()));
        Ok(Plan {
            pipelines,
            outputs,
            start_delay: main.delay_sec.as_duration(),
            warnings,
        })
    }
}

fn config_error(config: &AgentConfig, key: &str, reason: String) -> ConfigError {
    let file = config
        .tree
        .provenance
        .file_of(key)
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| config.dir.join("main.yaml"));
    ConfigError::new(file, key, reason)
}

/// The console's flush interval when none is configured.
pub const CONSOLE_FLUSH_SECS: f64 = 0.1;

fn output_plan(
    config: &AgentConfig,
    registry: &Registry,
    name: &str,
    referenced_at: &str,
) -> Result<OutputPlan, ConfigError> {
    let cfg = config.section("output", name);
    let common: OutputCommon = cfg.parse()?;
    let plugin = common.plugin.clone().unwrap_or_else(|| name.to_string());
    let Some(entry) = registry.outputs.get(plugin.as_str()) else {
        let key = if common.plugin.is_some() {
            format!("output.{name}.plugin")
        } else {
            referenced_at.to_string()
        };
        return Err(config_error(
            config,
            &key,
            unknown(PluginKind::Output, &plugin, registry),
        ));
    };
    let mut settings: OutputSettings = cfg.parse()?;
    if plugin == "console" && settings.flush_interval.is_none() && settings.interval.is_none() {
        // PyAgent printed each metric as it was made: without a configured
        // interval the console flushes what reached it within 0.1 s.
        settings.flush_interval = Seconds::new(CONSOLE_FLUSH_SECS).ok();
    }
    if let Some(disk) = settings.disk_buffer.as_mut() {
        if disk.path.as_os_str().is_empty() {
            return Err(cfg.error("disk_buffer.path", "must name a directory"));
        }
        if disk.max_bytes().is_none() {
            return Err(cfg.error(
                "disk_buffer.max_bytes",
                "expected a positive size such as `512 MB` or a number of bytes",
            ));
        }
        if disk.path.is_relative() {
            disk.path = config.state_path(&disk.path);
        }
    }
    Count::new(settings.batch_size as u64)
        .and_then(|c| c.within(1, MAX_BATCH))
        .map_err(|r| cfg.error("batch_size", r))?;
    Count::new(settings.buffer_limit as u64)
        .and_then(|c| c.within(1, MAX_BUFFER))
        .map_err(|r| cfg.error("buffer_limit", r))?;
    if settings.buffer_limit < settings.batch_size {
        return Err(cfg.error(
            "buffer_limit",
            format!(
                "must be at least batch_size ({}), got {}",
                settings.batch_size, settings.buffer_limit
            ),
        ));
    }
    let flush_key = if settings.flush_interval.is_some() || settings.interval.is_none() {
        "flush_interval"
    } else {
        "interval"
    };
    check_interval(
        settings
            .flush_interval
            .or(settings.interval)
            .unwrap_or(Seconds::from_secs(10)),
    )
    .map_err(|r| cfg.error(flush_key, r))?;
    settings
        .flush_jitter
        .within(0.0, 3600.0)
        .map_err(|r| cfg.error("flush_jitter", r))?;
    settings
        .retry_max_sec
        .within(0.001, 86_400.0)
        .map_err(|r| cfg.error("retry_max_sec", r))?;
    (entry.factory)(&cfg).map_err(|e| build_error(&cfg, e))?;
    Ok(OutputPlan {
        name: name.to_string(),
        plugin,
        config: cfg,
        settings,
    })
}

/// Reads the `use_plugin_<name>` keys of a block, in order.
fn stage_block(
    block: &PluginConfig,
    registry: &Registry,
    stages: &mut Vec<StagePlan>,
) -> Result<(), ConfigError> {
    let value = block.value();
    let Value::Mapping(map) = &*value else {
        return Err(block.error("", "expected a mapping of `use_plugin_<name>` keys"));
    };
    block.declare_keys(&["use_plugin_*"]);
    for (k, v) in map {
        let key = super::load::key_string(k);
        let Some(plugin) = key.strip_prefix("use_plugin_") else {
            continue;
        };
        stages.push(stage(block, registry, &key, plugin, v.clone())?);
    }
    Ok(())
}

fn stage(
    block: &PluginConfig,
    registry: &Registry,
    key: &str,
    plugin: &str,
    value: Value,
) -> Result<StagePlan, ConfigError> {
    resolve_stage(block.child(key, value, plugin), registry, plugin)
}

fn resolve_stage(
    cfg: PluginConfig,
    registry: &Registry,
    plugin: &str,
) -> Result<StagePlan, ConfigError> {
    let (kind, factory_ok) = if let Some(e) = registry.processors.get(plugin) {
        (StageKind::Processor, (e.factory)(&cfg).map(|_| ()))
    } else if let Some(e) = registry.aggregators.get(plugin) {
        AggregatorSettings::parse(&cfg)?;
        (StageKind::Aggregator, (e.factory)(&cfg).map(|_| ()))
    } else {
        return Err(cfg.error(
            "",
            format!(
                "unknown processor or aggregator `{plugin}`; registered: {}",
                registry
                    .names(PluginKind::Processor)
                    .into_iter()
                    .chain(registry.names(PluginKind::Aggregator))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    factory_ok.map_err(|e| build_error(&cfg, e))?;
    Ok(StagePlan {
        kind,
        plugin: plugin.to_string(),
        config: cfg,
    })
}

/// `aggs.<input>`: `befor`/`before` stages, the alarm rules (the `alarm`
/// processor, given the whole block when it has `alarm:` or `threshold:`),
/// the block's own stages, `after`.
fn aggs_block(
    block: &PluginConfig,
    registry: &Registry,
    stages: &mut Vec<StagePlan>,
) -> Result<(), ConfigError> {
    let value = block.value();
    let Value::Mapping(map) = &*value else {
        return Err(block.error("", "expected a mapping"));
    };
    block.declare_keys(&[
        "befor",
        "before",
        "after",
        "alarm",
        "threshold[]",
        "use_plugin_*",
    ]);
    for hook in ["befor", "before"] {
        if let Some(v) = map.get(hook) {
            stage_block(&block.child(hook, v.clone(), hook), registry, stages)?;
        }
    }
    if map.contains_key("alarm") || map.contains_key("threshold") {
        let mut cfg = block.clone();
        cfg.instance = Str::new("alarm");
        stages.push(resolve_stage(cfg, registry, "alarm")?);
    }
    stage_block(block, registry, stages)?;
    if let Some(v) = map.get("after") {
        stage_block(&block.child("after", v.clone(), "after"), registry, stages)?;
    }
    Ok(())
}

impl PluginConfig {
    /// The same block, applied to another input's pipeline (`common_*`).
    fn for_input(mut self, input: &str) -> Self {
        self.input = Str::new(input);
        self
    }
}

impl Plan {
    /// Keeps only the pipeline of input `name` (for `agent test --input`).
    pub fn only_input(mut self, name: &str) -> Option<Plan> {
        self.pipelines.retain(|p| p.name == name);
        if self.pipelines.is_empty() {
            return None;
        }
        let used: Vec<String> = self
            .pipelines
            .iter()
            .flat_map(|p| p.outputs.clone())
            .collect();
        self.outputs.retain(|o| used.contains(&o.name));
        Some(self)
    }

    /// Sends every pipeline to one `console` output on stdout instead of
    /// its configured outputs (for `agent test`): nothing is written
    /// anywhere else.
    pub fn print_only(
        mut self,
        config: &AgentConfig,
        registry: &Registry,
    ) -> Result<Plan, ConfigError> {
        let mut console = output_plan(config, registry, "console", "common_output")?;
        console.name = "console (test)".to_string();
        console.config = PluginConfig::from_value("console", Value::Mapping(Default::default()));
        console.settings.flush_interval = Seconds::new(CONSOLE_FLUSH_SECS).ok();
        for p in &mut self.pipelines {
            p.outputs = vec![console.name.clone()];
        }
        self.outputs = vec![console];
        Ok(self)
    }
}
