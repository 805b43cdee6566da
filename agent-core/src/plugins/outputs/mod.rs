//! Output plugins.
pub mod console;
pub mod es;
pub mod execd;
pub mod file;
pub mod http;
pub mod influxdb;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod mqtt;
pub mod nats;
pub mod otlp;
pub mod prometheus_client;

use crate::registry::Registry;

pub fn register(r: &mut Registry) {
    console::register(r);
    execd::register(r);
    es::register(r);
    file::register(r);
    http::register(r);
    influxdb::register(r);
    mqtt::register(r);
    nats::register(r);
    #[cfg(feature = "kafka")]
    kafka::register(r);
    otlp::register(r);
    prometheus_client::register(r);
}
