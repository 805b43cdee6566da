//! The process input's schema (see `crate::schema`).
use crate::schema::{gauge, text, Schema, Unit};

pub static SCHEMA: Schema = Schema {
    name: "process",
    tags: &[],
    own_tags: &["pid", "name"],
    fields: &[
        text("ppid", "Parent process id."),
        text("username", "Owner."),
        text("exe", "Executable path."),
        gauge("num_threads", Unit::None, "Threads of the process."),
        gauge(
            "cpu_percent",
            Unit::Percent,
            "CPU share since the last gather, 100 = one core.",
        ),
        gauge(
            "memory_percent",
            Unit::Percent,
            "Resident memory as a share of total memory.",
        ),
        gauge(
            "create_time",
            Unit::Timestamp,
            "Start time of the process since the Unix epoch.",
        ),
        gauge(
            "count",
            Unit::None,
            "Processes with this name in this gather.",
        )
        .exposed_as("instances"),
    ],
    groups: &[],
};
