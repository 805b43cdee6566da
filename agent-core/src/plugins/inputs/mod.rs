//! Input plugins.
pub mod cpu;
pub mod demo;
pub mod disk;
pub mod internal;
pub mod mem;
pub mod network;
pub mod process;

use crate::registry::Registry;

pub fn register(r: &mut Registry) {
    demo::register(r);
    cpu::register(r);
    mem::register(r);
    disk::register(r);
    network::register(r);
    process::register(r);
    internal::register(r);
}
