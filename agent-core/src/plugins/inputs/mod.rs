//! Input plugins.
pub mod demo;

use crate::registry::Registry;

pub fn register(r: &mut Registry) {
    demo::register(r);
}
