//! The shipped binary defers libcurl's and OpenSSL's initialisation to the
//! first request (agent-bin/src/lazy_tls.rs). This checks that HTTPS still
//! works from the real binary: a certificate from a CA it is given is
//! accepted, and without the CA verification fails.
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use tokio_rustls::rustls;

/// An HTTPS server on 127.0.0.1 answering every request with 200 "ok",
/// for a certificate (signed by a test CA) naming `localhost`. Returns the
/// port; the CA's PEM is written to `ca_file`.
fn https_server(ca_file: &Path) -> u16 {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "agent tls test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    std::fs::write(ca_file, ca.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(mut tcp) = stream else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let Ok(mut conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
                let _ = tls.flush();
            });
        }
    });
    port
}

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
