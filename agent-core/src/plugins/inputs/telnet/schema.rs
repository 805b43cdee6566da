//! The telnet input's schema (see `crate::schema`): the target's `tag` and
//! `address` identify its series.
use crate::schema::{gauge, text, Schema, Unit};

pub static SCHEMA: Schema = Schema {
    name: "telnet",
    tags: &["tag", "address"],
    own_tags: &[],
    fields: &[
        gauge(
            "as_ipv6",
            Unit::None,
            "Whether the connection used IPv6 (1) or IPv4 (0).",
        ),
        gauge("timeout", Unit::Seconds, "Timeout used for the check."),
        gauge(
            "yes",
            Unit::None,
            "Whether the port accepted the connection (1) or not (0).",
        ),
        gauge(
            "errcode",
            Unit::None,
            "OS errno of the connect, 0 when open.",
        ),
        gauge(
            "response_ms",
            Unit::Milliseconds,
            "Time to resolve and connect.",
        ),
        text(
            "result",
            "success, timeout, connection_failed or string_mismatch.",
        ),
        text("error", "Why the check failed."),
    ],
    groups: &[],
};
