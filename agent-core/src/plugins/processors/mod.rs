//! Processor plugins (PyAgent's common sub-plugins, `use_plugin_<name>`).
use crate::registry::Registry;

pub fn register(_r: &mut Registry) {}
