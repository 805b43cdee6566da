//! `agent run`, `agent once` and `agent test`: start the supervisor (and,
//! for `run`, the reloader, the status socket and the page trimming) and
//! shut it down.
use crate::{panic_hook, trim};
use actix::prelude::*;
use agent_core::logging::{self, LogSettings};
use agent_core::pipeline::Shutdown;
use agent_core::reload::{ConfigReloader, ReloaderHandle};
use agent_core::{AgentConfig, GatherOnce, PipelineSupervisor, Plan, Registry};
use anyhow::{Context as _, Result};
use slog::{error, info, o, warn, Logger};
use std::sync::Arc;
use std::time::Duration;

/// How long shutdown may take to drain pipelines and flush outputs.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// How long the OpAMP goodbye may delay shutdown.
const OPAMP_DISCONNECT_DEADLINE: Duration = Duration::from_secs(2);

fn logger(config: &AgentConfig) -> Logger {
    let log = logging::build(&LogSettings::from_config(config));
    panic_hook::install(log.clone());
    log
}

/// Raises the descriptor limit and sizes the probes' budget for this plan
/// (after the log file and the control socket are open, so they count).
/// Logged at INFO by `run`, at DEBUG by `once` and `test` (whose stderr
/// is for the operator at the terminal).
fn fd_budget(plan: &Plan, log: &Logger, loud: bool) {
    let reserve = agent_core::fd_budget::reserve_for(plan.outputs.len(), plan.pipelines.len());
    let b = agent_core::fd_budget::init(reserve).snapshot();
    let (limit, hard, started, reserved, capacity) = (
        b.soft_limit,
        b.hard_limit,
        b.initial_soft_limit,
        b.reserved,
        b.probe_capacity,
    );
    if loud {
        info!(log, "file descriptors"; "limit" => limit, "hard_limit" => hard, "started_with" => started,
            "reserved" => reserved, "probe_capacity" => capacity);
    } else {
        slog::debug!(log, "file descriptors"; "limit" => limit, "hard_limit" => hard, "started_with" => started,
            "reserved" => reserved, "probe_capacity" => capacity);
    }
}

pub fn run(config: AgentConfig, plan: Plan, registry: Registry) -> Result<()> {
    // The socket first: a second agent on the same etc/ stops here, before
    // it touches the log file, the spool or the outputs.
    #[cfg(unix)]
    let control = match agent_core::control::bind(&config.control_socket()) {
        Err(e) if e.is_taken() => return Err(e.into()),
        bound => bound,
    };
    let log = logger(&config);
    info!(log, "agent starting"; "version" => env!("CARGO_PKG_VERSION"), "config" => %config.dir.display(),
        "inputs" => plan.pipelines.len());
    for w in &plan.warnings {
        warn!(log, "config warning: {}", w);
    }
    fd_budget(&plan, &log, true);
    let system = actix_rt::System::new();
    let (start_delay, inputs) = (plan.start_delay, plan.pipelines.len());
    let steady = trim::steady_after(&plan);
    system.block_on(async move {
        let registry = Arc::new(registry);
        let socket = config.control_socket();
        let sup = PipelineSupervisor::new(config.clone(), plan, registry.clone(), log.new(o!())).start();
        let reloader = ConfigReloader::new(&config, registry.clone(), sup.clone(), log.new(o!("component" => "reload")));
        let reload_state = reloader.state();
        // Supervised: a reloader that dies is restarted, and SIGHUP reaches the new one.
        let reloader = reloader.start_supervised();
        // Fleet management (opamp: in main.yaml); idle while off.
        let opamp = agent_core::opamp::start(&config, registry, sup.clone(), reloader.clone(), log.new(o!("component" => "opamp")));
        // Bound here, it is this agent's to remove at exit (even if serving
        // failed); a path it could not bind may be another's file.
        #[cfg(unix)]
        let owns_socket = match control {
            Ok(listener) => {
                if let Err(e) = agent_core::control::serve_on(listener, sup.clone(), Some(reload_state.clone()), log.clone()) {
                    error!(log, "status endpoint unavailable"; "socket" => %socket.display(), "error" => %e);
                }
                true
            }
            Err(e) => {
                error!(log, "status endpoint unavailable"; "socket" => %socket.display(), "error" => %e);
                false
            }
        };
        #[cfg(not(unix))]
        let _ = socket;
        // When every input has started and gathered once, let go of the
        // pages only start-up used; again after each reload.
        let started = start_delay.saturating_mul(inputs as u32);
        trim::schedule(started.saturating_add(Duration::from_secs(3)), started.saturating_add(steady), reload_state, log.clone());
        let signal = wait_for_stop(&reloader).await?;
        info!(log, "shutting down"; "signal" => signal);
        opamp.disconnect(OPAMP_DISCONNECT_DEADLINE).await;
        let report = sup
            .send(Shutdown { deadline: SHUTDOWN_DEADLINE })
            .await
            .context("supervisor stopped before shutdown")?;
        if report.undelivered > 0 {
            error!(log, "metrics left undelivered at shutdown"; "count" => report.undelivered);
        }
        #[cfg(unix)]
        if owns_socket {
            let _ = std::fs::remove_file(config.control_socket());
        }
        Ok(())
    })
}

pub fn once(config: AgentConfig, plan: Plan, registry: Registry) -> Result<()> {
    let log = logger(&config);
    fd_budget(&plan, &log, true);
    let system = actix_rt::System::new();
    system.block_on(async move {
        let sup = PipelineSupervisor::new(config, plan, Arc::new(registry), log)
            .unscheduled()
            .start();
        sup.send(GatherOnce).await.context("gather")?;
        let report = sup
            .send(Shutdown {
                deadline: SHUTDOWN_DEADLINE,
            })
            .await
            .context("flush")?;
        anyhow::ensure!(
            report.undelivered == 0,
            "{} metrics could not be delivered",
            report.undelivered
        );
        Ok(())
    })
}

pub fn test(
    config: AgentConfig,
    plan: Plan,
    registry: Registry,
    input: Option<String>,
) -> Result<()> {
    let plan = match input {
        Some(name) => plan
            .only_input(&name)
            .with_context(|| format!("input `{name}` is not in `open`"))?,
        None => plan,
    };
    let plan = plan.print_only(&config, &registry)?;
    once(config, plan, registry)
}

/// Waits for SIGINT/SIGTERM; SIGHUP reloads the configuration meanwhile.
#[cfg(unix)]
async fn wait_for_stop(reloader: &ReloaderHandle) -> Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok("SIGTERM"),
            _ = int.recv() => return Ok("SIGINT"),
            _ = hup.recv() => reloader.reload("SIGHUP"),
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_stop(_: &ReloaderHandle) -> Result<&'static str> {
    tokio::signal::ctrl_c().await.context("Ctrl-C handler")?;
    Ok("Ctrl-C")
}
