//! `agent plugins` and `agent sample-config`: what is built in.
use agent_core::Registry;
use std::process::ExitCode;

pub fn print_plugins(registry: &Registry) {
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

pub fn sample_config(registry: &Registry, name: Option<&str>) -> ExitCode {
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
