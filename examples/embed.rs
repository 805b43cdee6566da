//! Embedding agent-core in your own program: register your own input next
//! to the built-in plugins, configure a pipeline in code, run it inside an
//! actix system, and shut it down cleanly.
//!
//! Run it: `cargo run -p agent-core --example embed`
use actix::prelude::*;
use agent_core::{
    Accumulator, AgentConfig, Input, PipelineSupervisor, Plan, PluginResult, Registry, Shutdown,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An input that reports a value owned by the host program.
struct QueueDepth {
    depth: Arc<AtomicU64>,
}

impl Input for QueueDepth {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        let mut m = acc.metric();
        m.push_field("depth", self.depth.load(Ordering::Relaxed));
        acc.add(m);
        Ok(())
    }
}

const CONFIG: &str = "
open: [queue]
interval: 0.5
delay_sec: 0
info: {service: billing}
common_output: [console]
output:
  console: {flush_interval: 0.5}
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let depth = Arc::new(AtomicU64::new(0));
    let mut registry = Registry::with_builtins();
    let shared = depth.clone();
    registry.add_input(
        "queue",
        "Depth of this program's work queue",
        "",
        move |_| {
            Ok(QueueDepth {
                depth: shared.clone(),
            })
        },
    );

    let config = AgentConfig::from_yaml("embedded main.yaml", CONFIG)?;
    let plan = Plan::new(&config, &registry)?;
    let log = slog::Logger::root(slog::Discard, slog::o!());

    actix_rt::System::new().block_on(async move {
        let supervisor = PipelineSupervisor::new(config, plan, Arc::new(registry), log).start();
        // The host program does its work; the agent reports on it.
        for _ in 0..4 {
            depth.fetch_add(10, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let report = supervisor
            .send(Shutdown {
                deadline: Duration::from_secs(5),
            })
            .await?;
        eprintln!("undelivered at shutdown: {}", report.undelivered);
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
