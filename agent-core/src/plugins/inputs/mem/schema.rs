//! The mem input's schema (see `crate::schema`).
use crate::schema::{gauge, text, Schema, Unit};

pub static SCHEMA: Schema = Schema {
    name: "mem",
    tags: &[],
    own_tags: &[],
    fields: &[
        gauge("total", Unit::Bytes, "Total memory."),
        gauge(
            "available",
            Unit::Bytes,
            "Memory available without swapping.",
        ),
        gauge(
            "percent",
            Unit::Percent,
            "Memory in use, (total - available) / total.",
        ),
        gauge(
            "used",
            Unit::Bytes,
            "Used memory (total - free - cached - buffers).",
        ),
        gauge("free", Unit::Bytes, "Free memory."),
        gauge("active", Unit::Bytes, "Active memory."),
        gauge("inactive", Unit::Bytes, "Inactive memory."),
        gauge("buffers", Unit::Bytes, "Buffer memory."),
        gauge("cached", Unit::Bytes, "Page cache and reclaimable slab."),
        gauge("shared", Unit::Bytes, "Shared memory."),
        gauge("slab", Unit::Bytes, "Kernel slab memory."),
        text("human_<field>", "A byte field in human form."),
    ],
    groups: &[],
};
