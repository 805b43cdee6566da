//! agent-core: a monitoring and metrics pipeline built from actix actors.
//!
//! # Map of the modules, bottom layer first
//!
//! - [`metric`]: what flows ([`Metric`], [`FieldValue`]).
//! - [`selfstat`]: the agent's own counters; the pipeline and the reloader
//!   write them, `agent status` and the `internal` input read them.
//! - [`rate_limit`], [`logging`], `blocking`: the one rate limiter for
//!   repeated log lines, the non-blocking logger, the worker threads that
//!   keep blocking calls off the event loop.
//! - [`fd_budget`]: `RLIMIT_NOFILE` raised at start, and the descriptors
//!   the probes of every input may hold, as permits.
//! - [`config`]: PyAgent's `etc/` folder, merged and validated into a
//!   [`Plan`] (`load` merges files, `plan` resolves pipelines, `value`
//!   holds the typed values, `unknown` reports unknown keys).
//! - [`plugin`]: the four small traits a plugin implements
//!   ([`Input`], [`Processor`], [`Aggregator`], [`Output`]); [`registry`]
//!   finds them by name.
//! - [`format`]: encoders and parsers (line protocol, JSON, Prometheus,
//!   console, PyAgent's human numbers), shared by plugins.
//! - [`plugins`]: the built-in plugins, one folder each under
//!   `plugins/<kind>/<name>/`, plus `plugins/common/` for what several
//!   plugins share. No plugin folder imports another
//!   (`tests/plugin_isolation.rs`).
//! - [`pipeline`]: the actors and the [`PipelineSupervisor`] that runs a
//!   plan: `input_actor`, `stage_actor`, `output_actor` (with its
//!   `Buffer`s: memory and the disk log), slots, supervision, and
//!   `diff` + `supervisor/apply.rs` for reloads.
//! - [`reload`]: watches `etc/` and `update_api`, and sends new plans to
//!   the supervisor; [`control`]: the status socket; [`opamp`]: the OpAMP
//!   client (fleet management: health, effective config, remote config
//!   written to `etc/` and applied through [`reload`]).
//!
//! # The path of one metric
//!
//! 1. An `InputActor`'s timer fires; it calls the plugin's
//!    [`Input::gather`] under `catch_unwind` with an [`Accumulator`], which
//!    stamps each [`Metric`] with the input's name, the gather time and the
//!    `info` tags.
//! 2. The batch goes into the `Slot` of the first `StageActor` (a bounded
//!    queue; the actor is woken once). Each stage runs its
//!    [`Processor::apply`] (converter, discard, the alarm rules, which may
//!    insert an ALARM metric before the one that raised it) or feeds its
//!    [`Aggregator`], and passes the batch to the next slot.
//! 3. After the last stage the batch is shared (`Arc`) between the slots
//!    of the pipeline's `OutputActor`s. Each output adds it to its buffer
//!    (memory, or the disk log with `disk_buffer`), which the supervisor
//!    owns so it outlives the actor.
//! 4. On `flush_interval` (or a full batch) the output begins a
//!    transaction of up to `batch_size` metrics, calls [`Output::write`],
//!    and ends the transaction accepted (the metrics are gone) or rejected
//!    (back to the front, retried with backoff).
//!
//! Embedding: build a [`Registry`] (add your own plugins), load an
//! [`AgentConfig`], make a [`Plan`], start a [`PipelineSupervisor`] inside an
//! actix `System`; see `examples/embed.rs`.
pub(crate) mod blocking;
pub mod config;
#[cfg(unix)]
pub mod control;
pub mod fd_budget;
pub mod format;
pub mod logging;
pub mod metric;
pub mod opamp;
pub mod pipeline;
pub mod plugin;
pub mod plugins;
pub mod rate_limit;
pub mod registry;
pub mod reload;
pub mod schema;
pub mod selfstat;
pub mod service_dirs;

pub use config::{AgentConfig, ConfigError, ConfigWarning, Plan, PluginConfig};
pub use metric::{FieldValue, Metric, MetricKind, Str};
pub use pipeline::{GatherOnce, PipelineSupervisor, Shutdown, Status, StatusReport};
pub use plugin::{Accumulator, Aggregator, Input, Output, PluginError, PluginResult, Processor};
pub use registry::{PluginKind, Registry};
