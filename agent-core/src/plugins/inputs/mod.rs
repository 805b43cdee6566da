//! Input plugins.
pub mod curl;
pub mod demo;
pub mod ping;
pub mod telnet;

use crate::registry::Registry;

pub fn register(r: &mut Registry) {
    curl::register(r);
    demo::register(r);
    ping::register(r);
    telnet::register(r);
}
