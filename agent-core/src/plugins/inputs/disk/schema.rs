//! The disk input's schema (see `crate::schema`).
use crate::schema::{gauge, text, Schema, Unit};

pub static SCHEMA: Schema = Schema {
    name: "disk",
    tags: &[],
    own_tags: &["device", "mountpoint"],
    fields: &[
        text("fstype", "Filesystem type."),
        text("opts", "Mount options."),
        gauge("maxfile", Unit::Characters, "Longest file name."),
        gauge("maxpath", Unit::Characters, "Longest path."),
        gauge("total", Unit::Bytes, "Filesystem size."),
        gauge("used", Unit::Bytes, "Used space."),
        gauge("free", Unit::Bytes, "Space free for non-root users."),
        gauge(
            "percent",
            Unit::Percent,
            "Used space, used / (used + free).",
        ),
        text("human_total", "Size in human form."),
        text("human_used", "Used space in human form."),
        text("human_free", "Free space in human form."),
        text("error", "Why the filesystem could not be read."),
    ],
    groups: &[],
};
