//! agent-core: a monitoring and metrics pipeline built from actix actors.
//!
//! - [`metric`]: what flows ([`Metric`], [`FieldValue`]).
//! - [`plugin`]: the four small traits a plugin implements
//!   ([`Input`], [`Processor`], [`Aggregator`], [`Output`]).
//! - [`registry`]: plugins by name.
//! - [`config`]: PyAgent's `etc/` folder, merged and validated into a [`Plan`].
//! - [`pipeline`]: the actors and the [`PipelineSupervisor`] that runs a plan.
//! - [`plugins`]: the built-in plugins, one folder each.
//!
//! Embedding: build a [`Registry`] (add your own plugins), load an
//! [`AgentConfig`], make a [`Plan`], start a [`PipelineSupervisor`] inside an
//! actix `System`; see `examples/embed.rs`.
pub(crate) mod blocking;
pub mod config;
#[cfg(unix)]
pub mod control;
pub mod format;
pub mod logging;
pub mod metric;
pub mod pipeline;
pub mod plugin;
pub mod plugins;
pub mod rate_limit;
pub mod registry;
pub mod reload;
pub mod schema;
pub mod selfstat;

pub use config::{AgentConfig, ConfigError, ConfigWarning, Plan, PluginConfig};
pub use metric::{FieldValue, Metric, MetricKind, Str};
pub use pipeline::{GatherOnce, PipelineSupervisor, Shutdown, Status, StatusReport};
pub use plugin::{Accumulator, Aggregator, Input, Output, PluginError, PluginResult, Processor};
pub use registry::{PluginKind, Registry};
