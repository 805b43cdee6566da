//! Output plugins.
pub mod console;

use crate::registry::Registry;

pub fn register(r: &mut Registry) {
    console::register(r);
}
