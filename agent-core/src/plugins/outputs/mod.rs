//! Output plugins.
pub mod console;
pub mod execd;

use crate::registry::Registry;

pub fn register(r: &mut Registry) {
    console::register(r);
    execd::register(r);
}
