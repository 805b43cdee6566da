//! A plugin template: copy this file to write your own input.
//!
//! An input is a struct with a config and one `gather` method. The core
//! runs it in an actor, calls `gather` every `interval`, catches panics,
//! restarts it with backoff and sends its metrics down the pipeline; the
//! plugin itself is plain Rust.
//!
//! Run it: `cargo run -p agent-core --example custom_input`
use agent_core::{Accumulator, Input, PluginError, PluginResult, Registry};
use serde::Deserialize;

/// The plugin's config: the keys of `etc/input/<name>.yaml`. Give every key
/// a default so an empty file works; unknown keys (such as `interval`,
/// which the core reads) are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct UptimeConfig {
    /// File to read (a key to show how config reaches the plugin).
    #[serde(default = "default_path")]
    pub path: String,
}

fn default_path() -> String {
    "/proc/uptime".to_string()
}

/// Host uptime and idle time, from /proc/uptime.
pub struct Uptime {
    config: UptimeConfig,
}

impl Uptime {
    /// Keep construction cheap and free of side effects: the core builds
    /// plugins to validate configs. Open files and sockets in `gather`.
    pub fn new(config: UptimeConfig) -> Self {
        Uptime { config }
    }
}

impl Input for Uptime {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        let text = std::fs::read_to_string(&self.config.path)?;
        let mut parts = text.split_whitespace().map(str::parse::<f64>);
        let (Some(Ok(up)), Some(Ok(idle))) = (parts.next(), parts.next()) else {
            // An error fails this gather; the core logs it and retries with backoff.
            return Err(PluginError::msg(format!(
                "{}: expected two numbers",
                self.config.path
            )));
        };
        // `acc.metric()` is named after the input and carries the info tags.
        let mut m = acc.metric();
        m.push_field("uptime_sec", up);
        m.push_field("idle_sec", idle);
        acc.add(m);
        Ok(())
    }
}

/// The commented sample printed by `agent sample-config uptime`.
pub const SAMPLE: &str = "# etc/input/uptime.yaml\ninterval: 60\npath: /proc/uptime\n";

/// The one registration call. In agent-core itself this sits in the
/// plugin's folder and is called from `plugins/inputs/mod.rs`.
pub fn register(r: &mut Registry) {
    r.add_input("uptime", "Host uptime from /proc/uptime", SAMPLE, |cfg| {
        Ok(Uptime::new(cfg.parse()?))
    });
}

fn main() {
    let mut registry = Registry::with_builtins();
    register(&mut registry);
    for p in registry.list() {
        println!("{:<10} {:<12} {}", p.kind, p.name, p.description);
    }
}
