//! A test CA and an HTTPS server on 127.0.0.1 with a certificate it signed
//! (for `localhost`), shared by tests/tls.rs, agent-core's
//! tests/remote_config.rs and the http output's unit tests (included with
//! `#[path]`).
#![allow(dead_code)]
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls;

/// The request head (request line and headers) a handler is given.
pub type Respond = dyn Fn(&str) -> (u16, String) + Send + Sync;

/// An HTTPS server on 127.0.0.1 for a certificate naming `localhost`,
/// signed by a new test CA whose PEM is written to `ca_file`. Every request
/// is answered by `respond(head)` (status, body), for up to `max` requests.
/// Returns the port.
pub fn https_server_with(ca_file: &Path, max: usize, respond: Arc<Respond>) -> u16 {
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
        for stream in listener.incoming().take(max) {
            let Ok(mut tcp) = stream else { continue };
            let (config, respond) = (config.clone(), respond.clone());
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
                // Read the request body too: closing with unread data
                // makes the kernel reset the connection under the reply.
                let head_len = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                let head = String::from_utf8_lossy(&got[..head_len]).to_string();
                let body_len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                while got.len() < head_len + body_len {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let (code, body) = respond(&head);
                let _ = tls.write_all(
                    format!(
                        "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
                // A clean TLS close (close_notify), as real servers do:
                // libcurl's rustls backend reports a bare TCP close after
                // the reply as a receive error.
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    port
}

/// [`https_server_with`] answering 200 "ok" to up to 20 requests.
pub fn https_server(ca_file: &Path) -> u16 {
    https_server_with(ca_file, 20, Arc::new(|_: &str| (200, "ok".to_string())))
}
