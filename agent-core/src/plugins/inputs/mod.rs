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
use crate::schema::Schema;

/// Every input's schema (exec and execd take theirs from the line protocol
/// they read, so they have none here).
pub static SCHEMAS: &[&Schema] = &[
    &cpu::schema::SCHEMA,
    &curl::schema::SCHEMA,
    &demo::schema::SCHEMA,
    &disk::schema::SCHEMA,
    &internal::schema::SCHEMA,
    &mem::schema::SCHEMA,
    &network::schema::SCHEMA,
    &ping::schema::SCHEMA,
    &process::schema::SCHEMA,
    &telnet::schema::SCHEMA,
];

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
