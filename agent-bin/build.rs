//! Defers libcurl's and OpenSSL's global initialisation from before `main`
//! to the first HTTP request (see src/lazy_tls.rs): the `curl` crate runs
//! `curl_global_init` from a static constructor, which initialises OpenSSL
//! and keeps about 2 MB of libcrypto and libcurl code resident in an agent
//! that may never make an HTTP request.
fn main() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os == "linux" && target_env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,--wrap=curl_global_init");
        println!("cargo:rustc-link-arg-bins=-Wl,--wrap=OPENSSL_init_ssl");
        println!("cargo:rustc-cfg=lazy_tls");
    }
    println!("cargo::rustc-check-cfg=cfg(lazy_tls)");
    println!("cargo:rerun-if-changed=build.rs");
}
