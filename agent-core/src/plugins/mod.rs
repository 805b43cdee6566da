//! Every built-in plugin, one folder each. A new plugin is its own folder
//! plus one line in the `register` function of its kind.
pub mod aggregators;
pub mod common;
pub mod inputs;
pub mod outputs;
pub mod processors;

use crate::registry::Registry;

/// Registers every built-in plugin.
pub fn register_all(r: &mut Registry) {
    inputs::register(r);
    processors::register(r);
    aggregators::register(r);
    outputs::register(r);
}
