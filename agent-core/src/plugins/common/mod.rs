//! Helpers shared by plugins (Telegraf's `plugins/common`). A plugin
//! imports from here, from [`crate::format`] or from the core, never from
//! another plugin's folder (`tests/plugin_isolation.rs` checks it).
#[cfg(test)]
pub(crate) mod broker_test;
pub mod exec;
pub mod http_client;
#[cfg(test)]
pub(crate) mod http_test_server;
pub mod net;
pub mod resolver;
pub mod serde_helpers;
pub mod tag;
pub mod template;
