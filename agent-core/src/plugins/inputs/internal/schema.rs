//! The internal input's schema (see `crate::schema`).
use crate::schema::{counter, gauge, Schema, Unit};

pub static SCHEMA: Schema = Schema {
    name: "internal",
    tags: &[],
    own_tags: &["kind", "pipeline", "plugin"],
    fields: &[
        counter("calls", Unit::None, "Gathers, applied batches or writes."),
        counter("errors", Unit::None, "Calls that failed."),
        counter("panics", Unit::None, "Calls that panicked."),
        counter("restarts", Unit::None, "Plugin rebuilds."),
        counter("metrics_in", Unit::None, "Metrics received."),
        counter("metrics_out", Unit::None, "Metrics passed on or written."),
        counter(
            "dropped",
            Unit::None,
            "Metrics dropped (outputs) or ticks skipped (inputs).",
        ),
        gauge(
            "buffered",
            Unit::None,
            "Metrics waiting in an output's buffer.",
        ),
        gauge(
            "last_duration_us",
            Unit::Microseconds,
            "Duration of the last call.",
        ),
        gauge("rss_bytes", Unit::Bytes, "Resident memory of the agent."),
        counter(
            "cpu_seconds",
            Unit::Seconds,
            "CPU time of the agent (user + system).",
        ),
        gauge("threads", Unit::None, "Threads of the agent."),
        gauge("pid", Unit::None, "Process id of the agent."),
        counter("log_errors", Unit::None, "Log writes that failed."),
        counter("log_dropped", Unit::None, "Log records dropped."),
        gauge("generation", Unit::None, "Configuration generation."),
        counter("attempts", Unit::None, "Reload attempts."),
        counter(
            "unchanged",
            Unit::None,
            "Reloads that found nothing changed.",
        ),
        counter("file_events", Unit::None, "Configuration file events."),
        gauge(
            "last_ok",
            Unit::None,
            "Whether the last reload succeeded (1) or not (0).",
        ),
    ],
    groups: &[],
};
