//! Link settings of the `agent` binary on Linux (see
//! benches/footprint/README.md for what each one saves).
//!
//! - libcurl's and OpenSSL's global initialisation is deferred from before
//!   `main` to the first HTTP request (src/lazy_tls.rs): the `curl` crate
//!   runs `curl_global_init` from a static constructor, which initialises
//!   OpenSSL and keeps libcrypto and libcurl code resident in an agent that
//!   may never make an HTTP request.
//! - Not position-independent (`-no-pie`): the linker resolves every
//!   address, so constant data (vtables, string tables, OpenSSL's method
//!   tables) needs no relocation at start-up and stays clean, shared with
//!   the page cache and loaded only when used. The price is that the
//!   binary's own code and data sit at fixed addresses (libraries, heap and
//!   stacks are still randomised); `AGENT_PIE=1` at build time keeps it
//!   position independent.
//! - Functions that run every interval are laid out together
//!   (`hot-symbols.txt`, written by benches/footprint/hot_symbols.sh), so
//!   they fill a few pages instead of being spread over the whole text.
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
        println!("cargo:rustc-link-arg-bins=-Wl,--wrap=OPENSSL_init_ssl");
        println!("cargo:rustc-cfg=lazy_tls");
        // AGENT_PIE=1 keeps a position-independent executable (full ASLR)
        // at the cost of relocated, private data (benches/footprint/README.md).
        if std::env::var_os("AGENT_PIE").is_none_or(|v| v == "0") {
            println!("cargo:rustc-link-arg-bins=-no-pie");
        }
        // rustc links with its own lld on this target; other linkers do not
        // take an ordering file.
        let lld = std::env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu");
        let order = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
            .join("hot-symbols.txt");
        if release && lld && order.exists() {
            println!(
                "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
                order.display()
            );
            // Names of functions since renamed or inlined are skipped.
            println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        }
        println!("cargo:rerun-if-changed=hot-symbols.txt");
    }
    if target_os == "linux" && release && std::env::var_os("AGENT_KEEP_SYMBOLS").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,--strip-all");
    }
    println!("cargo:rerun-if-env-changed=AGENT_KEEP_SYMBOLS");
    println!("cargo:rerun-if-env-changed=AGENT_PIE");
    println!("cargo::rustc-check-cfg=cfg(lazy_tls)");
    println!("cargo:rerun-if-changed=build.rs");
}
