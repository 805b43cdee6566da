//! `agent`: runs agent-core pipelines from a PyAgent-style `etc/` folder.
use actix::prelude::*;
use agent_core::logging::{self, LogSettings};
use agent_core::pipeline::{ActorStatus, Shutdown, StatusReport};
use agent_core::reload::{ConfigReloader, Reload};
use agent_core::{AgentConfig, ConfigError, GatherOnce, PipelineSupervisor, Plan, Registry};
use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use slog::{error, info, o, warn, Logger};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// How long shutdown may take to drain pipelines and flush outputs.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// How long the exit waits for queued log records to be written.
const LOG_FLUSH_DEADLINE: Duration = Duration::from_secs(2);

#[derive(Parser)]
#[command(
    name = "agent",
    version,
    about = "Monitoring and metrics agent (PyAgent-compatible)"
)]
struct Cli {
    /// Config folder (default: `etc/` next to the executable, then `./etc`).
    #[arg(short, long, global = true, value_name = "DIR")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run until SIGINT/SIGTERM, then drain and flush (the default).
    Run,
    /// Gather every open input once, run the whole pipeline, flush and exit.
    Once,
    /// Gather and print to stdout without writing to any output.
    Test {
        /// Only this input.
        #[arg(long)]
        input: Option<String>,
    },
    /// Check the configuration: exit 0 when valid, 2 when not. Unknown
    /// keys are printed as warnings.
    Validate {
        /// Unknown keys are errors (exit 2).
        #[arg(long)]
        strict: bool,
    },
    /// List the registered plugins by kind.
    Plugins,
    /// Show the running agent's pipelines, actors and last reload.
    Status {
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Print a commented sample config for one plugin, or a main.yaml.
    SampleConfig {
        /// Plugin name.
        name: Option<String>,
    },
}

#[cfg(lazy_tls)]
mod lazy_tls;
mod trim;

fn main() -> ExitCode {
    #[cfg(lazy_tls)]
    lazy_tls::main_started();
    limit_malloc_arenas();
    let cli = Cli::parse();
    // Printing commands end quietly when their reader goes away (`| head`),
    // like other CLI tools; `run` keeps SIGPIPE ignored so a closed stdout
    // is a console-output error to retry, not the end of the agent.
    #[cfg(unix)]
    if !matches!(cli.command, None | Some(Command::Run)) {
        // SAFETY: restoring the default disposition of one signal at start-up.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let registry = Registry::with_builtins();
    match cli.command.unwrap_or(Command::Run) {
        Command::Plugins => {
            print_plugins(&registry);
            ExitCode::SUCCESS
        }
        Command::SampleConfig { name } => sample_config(&registry, name.as_deref()),
        command => {
            let dir = config_dir(cli.config.as_deref());
            let (config, plan) = match load(&dir, &registry) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("config error: {e}");
                    return ExitCode::from(2);
                }
            };
            // `run` logs them instead, once its logger exists.
            if matches!(
                command,
                Command::Validate { .. } | Command::Once | Command::Test { .. }
            ) {
                for w in &plan.warnings {
                    eprintln!("warning: {w}");
                }
            }
            let result = match command {
                Command::Validate { strict: true } if !plan.warnings.is_empty() => {
                    eprintln!(
                        "config error: {} unknown key(s), refused with --strict",
                        plan.warnings.len()
                    );
                    return ExitCode::from(2);
                }
                Command::Validate { .. } => {
                    println!(
                        "{}: valid ({} inputs, {} outputs)",
                        dir.display(),
                        plan.pipelines.len(),
                        plan.outputs.len()
                    );
                    Ok(())
                }
                Command::Once => run_once(config, plan, registry),
                Command::Status { json } => status(&config, json),
                Command::Test { input } => run_test(config, plan, registry, input),
                _ => run(config, plan, registry),
            };
            // Log records still queued reach stderr and the log file, unless
            // stderr is stuck (then the exit does not wait for it).
            logging::flush(LOG_FLUSH_DEADLINE);
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// glibc gives every thread that allocates its own malloc arena (up to 8 per
/// core), each holding on to its own free memory. The agent allocates little,
/// from few threads, so one arena is enough: the same as running it with
/// `MALLOC_ARENA_MAX=1`, without asking users to set it. The environment
/// variable, when set, still wins (glibc reads it at the first allocation,
/// before `main`; mallopt is skipped then).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a malloc parameter; called before any
        // other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

/// `-c DIR`, else `etc/` beside the executable, else `./etc`.
fn config_dir(arg: Option<&Path>) -> PathBuf {
    if let Some(d) = arg {
        return d.to_path_buf();
    }
    if let Some(beside) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("etc")))
    {
        if beside.join("main.yaml").is_file() {
            return beside;
        }
    }
    PathBuf::from("etc")
}

fn load(dir: &Path, registry: &Registry) -> Result<(AgentConfig, Plan), ConfigError> {
    let config = AgentConfig::load(dir)?;
    let plan = Plan::new(&config, registry)?;
    Ok((config, plan))
}

fn logger(config: &AgentConfig) -> Logger {
    let log = logging::build(&LogSettings::from_config(config));
    install_panic_hook(log.clone());
    log
}

/// Panics inside plugins are caught and restarted by the core; log them as
/// one line instead of the default multi-line stderr dump.
///
/// A panic inside the hook would abort the process, so the hook logs only
/// through a logger that cannot panic or block: it formats into memory and
/// queues for the logging thread; a full queue or a failed write is counted
/// (`agent status`), never a panic (see agent_core::logging).
fn install_panic_hook(log: Logger) {
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        error!(log, "panic"; "message" => msg, "at" => location);
    }));
}

fn run(config: AgentConfig, plan: Plan, registry: Registry) -> Result<()> {
    let log = logger(&config);
    info!(log, "agent starting"; "version" => env!("CARGO_PKG_VERSION"), "config" => %config.dir.display(),
        "inputs" => plan.pipelines.len());
    for w in &plan.warnings {
        warn!(log, "config warning: {}", w);
    }
    let system = actix_rt::System::new();
    let (start_delay, inputs) = (plan.start_delay, plan.pipelines.len());
    system.block_on(async move {
        let registry = Arc::new(registry);
        let socket = config.control_socket();
        let sup = PipelineSupervisor::new(config.clone(), plan, registry.clone(), log.new(o!())).start();
        let reloader = ConfigReloader::new(&config, registry, sup.clone(), log.new(o!("component" => "reload")));
        let reload_state = reloader.state();
        let reloader = reloader.start();
        #[cfg(unix)]
        if let Err(e) = agent_core::control::serve(socket.clone(), sup.clone(), Some(reload_state.clone()), log.clone()) {
            error!(log, "status endpoint unavailable"; "socket" => %socket.display(), "error" => %e);
        }
        #[cfg(not(unix))]
        let _ = socket;
        // When every input has started and gathered once, let go of the
        // pages only start-up used (see trim.rs); again after each reload,
        // which runs the config code once more.
        let settle = start_delay * inputs as u32 + Duration::from_secs(3);
        let (trim_log, trim_state) = (log.clone(), reload_state.clone());
        actix::spawn(async move {
            let mut released_at_attempt = None;
            loop {
                let attempts = trim_state.lock().map(|s| s.attempts).unwrap_or_default();
                if released_at_attempt != Some(attempts) {
                    tokio::time::sleep(settle).await;
                    released_at_attempt = Some(attempts);
                    let pages = trim::SettledPages::find();
                    slog::info!(trim_log, "settled pages released"; "mapped_bytes" => pages.mapped_bytes());
                    pages.release();
                }
                // A lock and a compare every few seconds; reloads are rare.
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        let signal = wait_for_stop(&reloader).await?;
        info!(log, "shutting down"; "signal" => signal);
        let report = sup
            .send(Shutdown { deadline: SHUTDOWN_DEADLINE })
            .await
            .context("supervisor stopped before shutdown")?;
        if report.undelivered > 0 {
            error!(log, "metrics left undelivered at shutdown"; "count" => report.undelivered);
        }
        #[cfg(unix)]
        let _ = std::fs::remove_file(config.control_socket());
        Ok(())
    })
}

fn run_once(config: AgentConfig, plan: Plan, registry: Registry) -> Result<()> {
    let log = logger(&config);
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

fn run_test(
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
    run_once(config, plan, registry)
}

/// Waits for SIGINT/SIGTERM; SIGHUP reloads the configuration meanwhile.
#[cfg(unix)]
async fn wait_for_stop(reloader: &Addr<ConfigReloader>) -> Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok("SIGTERM"),
            _ = int.recv() => return Ok("SIGINT"),
            _ = hup.recv() => reloader.do_send(Reload { reason: "SIGHUP" }),
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_stop(_: &Addr<ConfigReloader>) -> Result<&'static str> {
    tokio::signal::ctrl_c().await.context("Ctrl-C handler")?;
    Ok("Ctrl-C")
}

#[cfg(unix)]
fn status(config: &AgentConfig, json: bool) -> Result<()> {
    let socket = config.control_socket();
    let answer = agent_core::control::query(&socket).with_context(|| {
        format!(
            "cannot reach the agent at {} (is `agent run` running?)",
            socket.display()
        )
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let status: StatusReport = serde_json::from_value(answer.status)?;
    let reload = &answer.reload;
    println!(
        "agent {} (pid {}), up {:.0}s, config generation {}, last reload: {}",
        answer.version,
        answer.pid,
        status.uptime_sec,
        reload["generation"],
        reload["last_result"].as_str().unwrap_or("-")
    );
    let logging = &answer.logging;
    if logging.log_errors > 0 || logging.log_dropped > 0 {
        println!(
            "logging: {} failed writes, {} records dropped; last error: {}",
            logging.log_errors,
            logging.log_dropped,
            logging.last_error.as_deref().unwrap_or("-")
        );
    }
    println!(
        "{:<10} {:<28} {:<6} {:>8} {:>7} {:>8} {:>10} {:>10} {:>9}  last error",
        "kind", "name", "alive", "calls", "errors", "restarts", "in", "out", "last_ok"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let row = |pipeline: &str, a: &ActorStatus| {
        let name = if pipeline.is_empty() || a.kind == "input" {
            a.name.clone()
        } else {
            format!("{pipeline}/{}", a.name)
        };
        let last_ok = if a.stats.last_ok_ns > 0 {
            format!("{:.0}s ago", now - a.stats.last_ok_ns as f64 / 1e9)
        } else {
            "-".into()
        };
        println!(
            "{:<10} {:<28} {:<6} {:>8} {:>7} {:>8} {:>10} {:>10} {:>9}  {}",
            a.kind,
            name,
            if a.alive { "yes" } else { "NO" },
            a.stats.calls,
            a.stats.errors,
            a.stats.restarts,
            a.stats.metrics_in,
            a.stats.metrics_out,
            last_ok,
            a.stats.last_error.as_deref().unwrap_or("")
        );
    };
    for p in &status.pipelines {
        for a in &p.actors {
            row(&p.input, a);
        }
    }
    for o in &status.outputs {
        row("", o);
    }
    Ok(())
}

#[cfg(not(unix))]
fn status(_: &AgentConfig, _: bool) -> Result<()> {
    anyhow::bail!("`agent status` needs a Unix socket; not available on this platform yet")
}

fn print_plugins(registry: &Registry) {
    let mut last = None;
    for p in registry.list() {
        if last != Some(p.kind) {
            println!("{}s:", p.kind);
            last = Some(p.kind);
        }
        println!("  {:<18} {}", p.name, p.description);
    }
}

const MAIN_SAMPLE: &str = include_str!("../../etc/main.yaml");

fn sample_config(registry: &Registry, name: Option<&str>) -> ExitCode {
    let Some(name) = name else {
        print!("{MAIN_SAMPLE}");
        return ExitCode::SUCCESS;
    };
    let found: Vec<_> = registry
        .list()
        .into_iter()
        .filter(|p| p.name == name)
        .collect();
    if found.is_empty() {
        eprintln!("no plugin named `{name}`; `agent plugins` lists them");
        return ExitCode::from(2);
    }
    for p in found {
        println!("# {} plugin `{}`: {}", p.kind, p.name, p.description);
        print!("{}", p.sample);
    }
    ExitCode::SUCCESS
}
