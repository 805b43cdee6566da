//! The shipped binary defers libcurl's initialisation to the first request
//! (agent-bin/src/lazy_tls.rs) and speaks TLS through libcurl's rustls
//! backend. This checks that HTTPS works from the real binary: a
//! certificate from a CA it is given is accepted, without the CA
//! verification fails, and the default trust store is the system's
//! (`$SSL_CERT_FILE` when set, as OpenSSL-based tools read it).
use std::process::Command;

#[path = "support/https.rs"]
mod https;
use https::https_server;

#[test]
fn https_from_the_binary_verifies_with_the_given_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let port = https_server(&ca);
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(etc.join("input")).unwrap();
    std::fs::write(
        etc.join("main.yaml"),
        "open: [curl]\ndelay_sec: 0\ncommon_output: [console]\n",
    )
    .unwrap();
    std::fs::write(
        etc.join("input/curl.yaml"),
        format!(
            "target:\n  TRUSTED: {{url: 'https://localhost:{port}/', ca_file: '{ca}', timeout: 5}}\n  \
             UNTRUSTED: {{url: 'https://localhost:{port}/', timeout: 5}}\n",
            ca = ca.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["once", "-c"])
        .arg(&etc)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = |tag: &str| {
        stdout
            .lines()
            .find(|l| l.contains(&format!(" tag={tag} ")))
            .unwrap_or_else(|| panic!("no {tag} line in {stdout}"))
            .to_string()
    };
    let trusted = line("TRUSTED");
    assert!(
        trusted.contains(" status=200 ") && trusted.contains(" result=success"),
        "{trusted}"
    );
    let untrusted = line("UNTRUSTED");
    assert!(untrusted.contains(" result=tls_error"), "{untrusted}");
}

#[test]
fn the_default_trust_store_honours_ssl_cert_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let port = https_server(&ca);
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(etc.join("input")).unwrap();
    std::fs::write(
        etc.join("main.yaml"),
        "open: [curl]\ndelay_sec: 0\ncommon_output: [console]\n",
    )
    .unwrap();
    // No ca_file: the request is verified against the default store.
    std::fs::write(
        etc.join("input/curl.yaml"),
        format!("target:\n  SYSTEM: {{url: 'https://localhost:{port}/', timeout: 5}}\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["once", "-c"])
        .arg(&etc)
        .env("SSL_CERT_FILE", &ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains(" tag=SYSTEM "))
        .unwrap_or_else(|| panic!("no SYSTEM line in {stdout}"));
    assert!(
        line.contains(" status=200 ") && line.contains(" result=success"),
        "{line}"
    );
}
