//! The demo input's schema (see `crate::schema`).
use crate::schema::{counter, gauge, text, Schema, Unit};

pub static SCHEMA: Schema = Schema {
    name: "demo",
    tags: &[],
    own_tags: &[],
    fields: &[
        gauge("x", Unit::None, "Random value from 6 to 30."),
        counter("total", Unit::None, "Gathers since the plugin started."),
        text("testin", "Always demo."),
        gauge("test_float", Unit::None, "Random value from 0 to 100."),
        text("demo_discard", "A field meant to be discarded."),
    ],
    groups: &[],
};
