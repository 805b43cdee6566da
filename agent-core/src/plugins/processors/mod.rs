//! Processor plugins (PyAgent's common sub-plugins, `use_plugin_<name>`).
pub mod alarm;
pub mod converter;
pub mod discard;
pub mod execd;
pub mod filter;
pub mod rename;

use crate::registry::Registry;

pub fn register(r: &mut Registry) {
    alarm::register(r);
    converter::register(r);
    discard::register(r);
    execd::register(r);
    filter::register(r);
    rename::register(r);
}
