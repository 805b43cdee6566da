//! Processor plugins (PyAgent's common sub-plugins, `use_plugin_<name>`).
use crate::registry::Registry;

pub mod alarm;
pub mod converter;
pub mod discard;
pub mod filter;
pub mod rename;

pub fn register(r: &mut Registry) {
    alarm::register(r);
    converter::register(r);
    discard::register(r);
    filter::register(r);
    rename::register(r);
}
