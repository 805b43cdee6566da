//! The ping input's schema (see `crate::schema`): the target's `tag` and
//! `address` identify its series.
use crate::schema::{gauge, text, Schema, Unit};

pub static SCHEMA: Schema = Schema {
    name: "ping",
    tags: &["tag", "address"],
    own_tags: &[],
    fields: &[
        gauge("loss", Unit::Percent, "Echoes without a reply."),
        gauge("minimum", Unit::Milliseconds, "Fastest round trip."),
        gauge("maximum", Unit::Milliseconds, "Slowest round trip."),
        gauge("average", Unit::Milliseconds, "Mean round trip."),
        gauge(
            "stddev",
            Unit::Milliseconds,
            "Standard deviation of the round trips.",
        ),
        gauge(
            "jitter",
            Unit::Milliseconds,
            "Mean difference of consecutive round trips.",
        ),
        text("error", "Why the ping failed, other than silence."),
    ],
    groups: &[],
};
