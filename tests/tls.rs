//! The shipped binary defers libcurl's and OpenSSL's initialisation to the
//! first request (agent-bin/src/lazy_tls.rs). This checks that HTTPS still
//! works from the real binary: a certificate from a CA it is given is
//! accepted, and without the CA verification fails.
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
