//! The four plugin traits. They are plain Rust: no actix types, no timers,
//! no restart logic. The core wraps each plugin in an actor
//! ([`crate::pipeline`]) that owns scheduling, panics, backoff and
//! reconfiguration, in the spirit of Telegraf's `Gather(acc)`, `Apply`,
//! `Add/Push/Reset` and `Connect/Write/Close`.
//!
//! Async methods are declared as `fn .. -> impl Future + Send`, so an
//! implementation simply writes `async fn gather(..)`.
use crate::metric::{now_ns, Metric, Str};
use std::future::Future;
use std::sync::Arc;

/// What a plugin reports when a call fails. The core logs it, counts it and
/// rebuilds the plugin with backoff.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{0}")]
    Message(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{context}: {source}")]
    Context {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl PluginError {
    pub fn msg(m: impl Into<String>) -> Self {
        PluginError::Message(m.into())
    }

    pub fn context(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        PluginError::Context {
            context: context.into(),
            source: Box::new(source),
        }
    }
}

pub type PluginResult<T = ()> = Result<T, PluginError>;

pub use crate::rate_limit::RateLimitedLog;

/// Collects what an input gathers. Metrics made with [`Accumulator::metric`]
/// carry the input's name, the gather's timestamp and the `info` tags.
///
/// In the agent, the core hands metrics on while the gather still runs, in
/// chunks of [`STREAM_CHUNK`], in the order they were added: an input of
/// 10,000 targets does not hold 10,000 metrics until its last target
/// answers. [`Accumulator::len`] and [`Accumulator::take`] see only what
/// was not handed on yet.
#[derive(Debug)]
pub struct Accumulator {
    name: Str,
    timestamp_ns: i64,
    info: Arc<[(Str, Str)]>,
    metrics: Vec<Metric>,
    errors: Vec<String>,
    stream: Option<Stream>,
}

/// Metrics an input's accumulator hands on at a time during a gather.
pub const STREAM_CHUNK: usize = 1000;

/// Where a streaming accumulator hands its chunks.
struct Stream(Box<dyn FnMut(Vec<Metric>) + Send>);

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stream")
    }
}

impl Accumulator {
    pub fn new(name: impl Into<Str>, info: Arc<[(Str, Str)]>) -> Self {
        Accumulator {
            name: name.into(),
            timestamp_ns: now_ns(),
            info,
            metrics: Vec::new(),
            errors: Vec::new(),
            stream: None,
        }
    }

    /// Hands every [`STREAM_CHUNK`] metrics added to `to` as they come
    /// (the core's input actor; what is left is taken at the end).
    pub(crate) fn streaming(mut self, to: impl FnMut(Vec<Metric>) + Send + 'static) -> Self {
        self.stream = Some(Stream(Box::new(to)));
        self
    }

    /// The input instance's name: the `name=` of every metric it makes.
    pub fn name(&self) -> &Str {
        &self.name
    }

    /// The time of this gather, in nanoseconds since the epoch.
    pub fn timestamp_ns(&self) -> i64 {
        self.timestamp_ns
    }

    /// A new metric named after the input, stamped with the gather time and
    /// carrying the `info` tags. Fill it and pass it to [`Accumulator::add`].
    pub fn metric(&self) -> Metric {
        let mut m = Metric::new(self.name.clone(), self.timestamp_ns);
        m.tags.reserve(self.info.len() + 2);
        m.tags.extend(self.info.iter().cloned());
        m
    }

    pub fn add(&mut self, metric: Metric) {
        self.metrics.push(metric);
        if self.metrics.len() >= STREAM_CHUNK {
            if let Some(Stream(to)) = &mut self.stream {
                to(std::mem::take(&mut self.metrics));
            }
        }
    }

    /// Reports a problem with part of a gather (one command of several, one
    /// malformed line) without failing it, like Telegraf's `AddError`: the
    /// core logs it (rate-limited) and counts it, and the plugin keeps
    /// running. Return `Err` from `gather` only when the plugin itself is
    /// broken and should be rebuilt.
    pub fn add_error(&mut self, error: impl Into<String>) {
        self.errors.push(error.into());
    }

    /// Takes the reported errors, leaving none.
    pub fn take_errors(&mut self) -> Vec<String> {
        std::mem::take(&mut self.errors)
    }

    /// Tests: the reported errors as one `Err` (joined with `; `), or `Ok`.
    #[cfg(test)]
    pub(crate) fn errors_as_result(&mut self) -> PluginResult {
        let errors = self.take_errors();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(PluginError::msg(errors.join("; ")))
        }
    }

    pub fn len(&self) -> usize {
        self.metrics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    /// Takes the gathered metrics, leaving the accumulator empty.
    pub fn take(&mut self) -> Vec<Metric> {
        std::mem::take(&mut self.metrics)
    }

    /// Starts a new gather: a fresh timestamp, no metrics.
    pub fn reset(&mut self) {
        self.timestamp_ns = now_ns();
        self.metrics.clear();
        self.errors.clear();
    }
}

/// An input gathers metrics once per interval.
pub trait Input: Send + 'static {
    /// Gather once into `acc`. Per-target failures (an unreachable host)
    /// belong in the metrics; return an error only when the whole gather
    /// failed, and the core will rebuild the plugin with backoff.
    fn gather(&mut self, acc: &mut Accumulator) -> impl Future<Output = PluginResult> + Send;
}

/// A processor transforms a batch in place: change, drop, add metrics.
/// Alarms are added as metrics of kind [`crate::MetricKind::Alarm`] just
/// before the metric that raised them.
pub trait Processor: Send + 'static {
    fn apply(&mut self, batch: &mut Vec<Metric>) -> PluginResult;

    /// Whether `apply` may block its thread for long: it waits on a child
    /// process, the network or a lock held elsewhere. The core then calls
    /// it on a thread of its own, one batch at a time and in order (later
    /// batches wait in a bounded queue), so it cannot stall other actors;
    /// such an `apply` should still bound its own wait (execd has
    /// `batch_timeout`). The default, `false`, means `apply` only computes
    /// and returns quickly: it runs on the event loop, with no thread hop.
    fn blocks(&self) -> bool {
        false
    }
}

/// An aggregator sees every metric of a period and emits summaries.
/// The core calls `add` for each metric, then `push` and `reset` once per
/// period.
pub trait Aggregator: Send + 'static {
    fn add(&mut self, metric: &Metric);
    fn push(&mut self, acc: &mut Accumulator);
    fn reset(&mut self);
}

/// An output delivers batches to a backend. The core buffers, batches and
/// retries: `write` either takes the whole batch or returns an error, and
/// the same batch is offered again later.
pub trait Output: Send + 'static {
    fn connect(&mut self) -> impl Future<Output = PluginResult> + Send {
        async { Ok(()) }
    }
    fn write(&mut self, batch: &[Metric]) -> impl Future<Output = PluginResult> + Send;
    fn close(&mut self) -> impl Future<Output = PluginResult> + Send {
        async { Ok(()) }
    }
}

pub(crate) type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Object-safe forms of the traits, used by the core to hold plugins behind
/// `Box<dyn ..>`. Implemented for every plugin automatically.
pub(crate) trait DynInput: Send {
    fn gather_boxed<'a>(&'a mut self, acc: &'a mut Accumulator) -> BoxFuture<'a, PluginResult>;
}

impl<T: Input> DynInput for T {
    fn gather_boxed<'a>(&'a mut self, acc: &'a mut Accumulator) -> BoxFuture<'a, PluginResult> {
        Box::pin(self.gather(acc))
    }
}

pub(crate) trait DynOutput: Send {
    fn connect_boxed(&mut self) -> BoxFuture<'_, PluginResult>;
    fn write_boxed<'a>(&'a mut self, batch: &'a [Metric]) -> BoxFuture<'a, PluginResult>;
    fn close_boxed(&mut self) -> BoxFuture<'_, PluginResult>;
}

impl<T: Output> DynOutput for T {
    fn connect_boxed(&mut self) -> BoxFuture<'_, PluginResult> {
        Box::pin(self.connect())
    }
    fn write_boxed<'a>(&'a mut self, batch: &'a [Metric]) -> BoxFuture<'a, PluginResult> {
        Box::pin(self.write(batch))
    }
    fn close_boxed(&mut self) -> BoxFuture<'_, PluginResult> {
        Box::pin(self.close())
    }
}
