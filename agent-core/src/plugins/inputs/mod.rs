//! Input plugins.
pub mod cpu;
pub mod curl;
pub mod demo;
pub mod disk;
pub mod exec;
pub mod execd;
pub mod internal;
pub mod mem;
pub mod network;
pub mod ping;
pub mod process;
pub mod telnet;

use crate::registry::Registry;

pub fn register(r: &mut Registry) {
    curl::register(r);
    demo::register(r);
    cpu::register(r);
    mem::register(r);
    disk::register(r);
    network::register(r);
    process::register(r);
    internal::register(r);
    ping::register(r);
    telnet::register(r);
    exec::register(r);
    execd::register(r);
}
