//! Link settings of the `agent` binary on Linux (see
//! benches/footprint/README.md for what each one saves).
//!
//! - libcurl's global initialisation is deferred from before `main` to the
//!   first HTTP request (src/lazy_tls.rs): the `curl` crate runs
//!   `curl_global_init` from a static constructor, which keeps libcurl code
//!   resident in an agent that may never make an HTTP request. TLS is
//!   rustls, statically linked and initialised at the first handshake: no
//!   OpenSSL is linked at all (.ci/linkers.sh checks it).
//! - Position independent (PIE) with full RELRO (rustc's default,
//!   `BIND_NOW`): the binary's own code and data are randomised too. The
//!   relocated constant data it costs is within the footprint budget since
//!   the steady-state page release (benches/footprint/README.md).
//!   `AGENT_NO_PIE=1` at build time links it at a fixed address instead
//!   (constant data then needs no relocation and stays clean).
//! - Functions that run every interval are laid out together
//!   (`hot-symbols.txt`, written by benches/footprint/hot_symbols.sh), so
//!   they fill a few pages instead of being spread over the whole text.
//!   Only when the linker takes an ordering file: lld does, GNU ld does
//!   not; a probe link finds out, and the build warns without it.
//! - Release builds are stripped here rather than by the cargo profile, so
//!   that `AGENT_KEEP_SYMBOLS=1` gives the same code and symbol names with
//!   the symbol table kept, for profiling.
use std::path::Path;

fn main() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    if target_os == "linux" && target_env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,--wrap=curl_global_init");
        println!("cargo:rustc-cfg=lazy_tls");
        println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
        // A PIE unless AGENT_NO_PIE=1 (fixed address, no relocated data).
        if std::env::var_os("AGENT_NO_PIE").is_some_and(|v| v != "0") {
            println!("cargo:rustc-link-arg-bins=-no-pie");
        }
        // Only lld takes an ordering file (GNU ld, a distribution's rustc or
        // `-C linker-features=-lld`, rejects it): probe the linker this
        // build uses, and build without the ordering when it says no.
        let order = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
            .join("hot-symbols.txt");
        if release && order.exists() {
            match probe_ordering(&order) {
                Ok(()) => {
                    println!(
                        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
                        order.display()
                    );
                    // Names of functions since renamed or inlined are skipped.
                    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
                }
                Err(why) => println!(
                    "cargo:warning=hot functions are not laid out together: the linker does not \
                     take --symbol-ordering-file ({why}); the agent works, with more resident \
                     code (benches/footprint/README.md). lld does."
                ),
            }
        }
        println!("cargo:rerun-if-changed=hot-symbols.txt");
    }
    if target_os == "linux" && release && std::env::var_os("AGENT_KEEP_SYMBOLS").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,--strip-all");
    }
    println!("cargo:rerun-if-env-changed=AGENT_KEEP_SYMBOLS");
    println!("cargo:rerun-if-env-changed=AGENT_NO_PIE");
    println!("cargo::rustc-check-cfg=cfg(lazy_tls)");
    println!("cargo:rerun-if-changed=build.rs");
}

/// Links an empty program the way this build links (same rustc, target,
/// flags and linker) with the ordering file; `Err` with the linker's
/// complaint when that fails.
fn probe_ordering(order: &Path) -> Result<(), String> {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let out = Path::new(&env("OUT_DIR")).to_path_buf();
    let src = out.join("ordering_probe.rs");
    std::fs::write(&src, "fn main() {}\n").map_err(|e| e.to_string())?;
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let mut cmd = std::process::Command::new(rustc);
    cmd.arg(&src)
        .arg("--target")
        .arg(env("TARGET"))
        .arg("-o")
        .arg(out.join("ordering_probe"));
    for flag in env("CARGO_ENCODED_RUSTFLAGS")
        .split('\x1f')
        .filter(|f| !f.is_empty())
    {
        cmd.arg(flag);
    }
    if let Ok(linker) = std::env::var("RUSTC_LINKER") {
        cmd.arg(format!("-Clinker={linker}"));
    }
    cmd.arg(format!(
        "-Clink-arg=-Wl,--symbol-ordering-file={}",
        order.display()
    ))
    .arg("-Clink-arg=-Wl,--no-warn-symbol-ordering");
    let output = cmd.output().map_err(|e| format!("cannot run rustc: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&output.stderr);
    let line = text
        .lines()
        .find(|l| l.contains("symbol-ordering") || l.contains("unrecognized option"))
        .or_else(|| text.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or("link failed");
    Err(line.trim().chars().take(200).collect())
}
