//! Aggregator plugins.
use crate::registry::Registry;

pub mod basicstats;

pub fn register(r: &mut Registry) {
    basicstats::register(r);
}
