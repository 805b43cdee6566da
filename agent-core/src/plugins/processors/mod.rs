//! Processor plugins (PyAgent's common sub-plugins, `use_plugin_<name>`).
pub mod execd;

use crate::registry::Registry;

pub fn register(r: &mut Registry) {
    execd::register(r);
}
