//! `agent`: runs agent-core pipelines from a PyAgent-style `etc/` folder.
//!
//! This file is the command line and its wiring; each command lives in its
//! own module (`run`, `status`, `catalog`), as do the process set-up
//! (`malloc`, `panic_hook`, `lazy_tls`) and the page trimming (`trim`).
use agent_core::logging;
use agent_core::{AgentConfig, ConfigError, Plan, Registry};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

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
    /// Print a shell completion script (bash, zsh, fish, ...), for packaging.
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), for packaging.
    #[command(hide = true)]
    Man,
}

mod catalog;
#[cfg(lazy_tls)]
mod lazy_tls;
mod malloc;
mod panic_hook;
mod run;
mod status;
mod trim;

fn main() -> ExitCode {
    #[cfg(lazy_tls)]
    lazy_tls::main_started();
    malloc::limit_arenas();
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
            catalog::print_plugins(&registry);
            ExitCode::SUCCESS
        }
        Command::SampleConfig { name } => catalog::sample_config(&registry, name.as_deref()),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "agent", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            use clap::CommandFactory;
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
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
                Command::Once => run::once(config, plan, registry),
                Command::Status { json } => status::show(&config, json),
                Command::Test { input } => run::test(config, plan, registry, input),
                _ => run::run(config, plan, registry),
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
    let mut config = AgentConfig::load(dir)?;
    let mut plan = Plan::new(&config, registry)?;
    config.compact(&mut plan);
    // The OpAMP files (ca_file, headers_file) exist and read well; checked
    // here rather than in the config itself, whose scratch copies for
    // remote offers would not have them.
    agent_core::opamp::OpampSettings::from_config(&config)?;
    Ok((config, plan))
}
