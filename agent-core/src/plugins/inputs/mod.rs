//! Input plugins.
pub mod demo;
pub mod exec;
pub mod execd;

use crate::registry::Registry;

pub fn register(r: &mut Registry) {
    demo::register(r);
    exec::register(r);
    execd::register(r);
}
