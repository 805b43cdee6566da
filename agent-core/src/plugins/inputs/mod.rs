//! Input plugins.
pub mod demo;
pub mod exec;

use crate::registry::Registry;

pub fn register(r: &mut Registry) {
    demo::register(r);
    exec::register(r);
}
