//! TCP and TLS connections of the broker outputs (mqtt, nats): server
//! lists (`scheme://host:port`), a bounded connect, TLS through rustls with
//! the system's CA store (or `ca_file`), an optional client certificate,
//! and `insecure_skip_verify` for tests.
use crate::config::{ConfigError, PluginConfig, Seconds};
use crate::plugin::{PluginError, PluginResult};
use serde::Deserialize;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// TLS keys every broker output accepts (the HTTP outputs' names, plus a
/// client certificate).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TlsSettings {
    /// PEM file of CA certificates to trust instead of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate and host name (testing only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Client certificate (PEM chain) and its private key (PEM), for
    /// servers that authenticate clients by certificate.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

pub const TLS_KEYS: &[&str] = &["ca_file", "insecure_skip_verify", "tls_cert", "tls_key"];

impl TlsSettings {
    /// Whether any key asks for TLS.
    pub fn configured(&self) -> bool {
        self.ca_file.is_some() || self.tls_cert.is_some() || self.insecure_skip_verify
    }

    /// Checks the files now, so `validate` reports them.
    pub fn validate(&self, cfg: &PluginConfig) -> Result<(), ConfigError> {
        for (key, f) in [
            ("ca_file", &self.ca_file),
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
        ] {
            if let Some(f) = f {
                if !f.is_file() {
                    return Err(cfg.error(key, format!("{} is not a readable file", f.display())));
                }
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(cfg.error("tls_key", "set both tls_cert and tls_key, or neither"));
        }
        Ok(())
    }

    /// A connector; reads the CA store and the files (so only when a TLS
    /// connection is about to be made: an agent that never uses TLS never
    /// loads the system's certificates).
    pub fn connector(&self) -> PluginResult<tokio_rustls::TlsConnector> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| PluginError::context("TLS setup", e))?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            match &self.ca_file {
                Some(f) => {
                    use rustls::pki_types::pem::PemObject;
                    let certs = rustls::pki_types::CertificateDer::pem_file_iter(f)
                        .map_err(|e| PluginError::msg(format!("ca_file {}: {e}", f.display())))?;
                    for c in certs {
                        let c = c.map_err(|e| {
                            PluginError::msg(format!("ca_file {}: {e}", f.display()))
                        })?;
                        roots.add(c).map_err(|e| {
                            PluginError::msg(format!("ca_file {}: {e}", f.display()))
                        })?;
                    }
                }
                None => {
                    let found = rustls_native_certs::load_native_certs();
                    roots.add_parsable_certificates(found.certs);
                }
            }
            if roots.is_empty() {
                return Err(PluginError::msg(
                    "TLS: no CA certificate to verify the server with",
                ));
            }
            builder.with_root_certificates(roots)
        };
        let config = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                use rustls::pki_types::pem::PemObject;
                let chain = rustls::pki_types::CertificateDer::pem_file_iter(cert)
                    .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| PluginError::msg(format!("tls_cert {}: {e}", cert.display())))?;
                let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| PluginError::msg(format!("tls_key {}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| PluginError::context("tls_cert/tls_key", e))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }
}

/// `insecure_skip_verify`: signatures are still checked, the certificate
/// and name are not.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One server of a `servers` list.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// `user:password@` in the URL, if any.
    pub user: Option<(String, String)>,
}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parses `scheme://[user:pass@]host[:port]`; `schemes` maps each accepted
/// scheme to (TLS, default port). A bare `host:port` takes the first scheme.
pub fn parse_server(
    cfg: &PluginConfig,
    key: &str,
    text: &str,
    schemes: &[(&str, bool, u16)],
) -> Result<Server, ConfigError> {
    let names = || {
        schemes
            .iter()
            .map(|(s, _, _)| format!("{s}://"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (scheme, rest) = match text.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => (schemes[0].0.to_string(), text),
    };
    let Some(&(_, tls, default_port)) = schemes.iter().find(|(s, _, _)| *s == scheme) else {
        return Err(cfg.error(
            key,
            format!(
                "`{text}`: unknown scheme `{scheme}://`; expected {}",
                names()
            ),
        ));
    };
    let rest = rest.trim_end_matches('/');
    let (user, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => {
            let (name, pass) = u.split_once(':').unwrap_or((u, ""));
            (Some((name.to_string(), pass.to_string())), h)
        }
        None => (None, rest),
    };
    let bad = |why: &str| cfg.error(key, format!("`{text}`: {why}"));
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let Some((h, after)) = v6.split_once(']') else {
            return Err(bad("unclosed `[`"));
        };
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(bad("expected `:port` after `]`")),
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() || host.contains(['/', '?', '#', ' ', '@', '[', ']']) {
        return Err(bad("not a host name or address"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        },
    };
    Ok(Server {
        host: host.to_string(),
        port,
        tls,
        user,
    })
}

/// A plain or TLS connection.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// Opens a TCP connection to `server` within `timeout`.
    pub async fn tcp(server: &Server, timeout: Duration) -> PluginResult<Stream> {
        let addr = (server.host.as_str(), server.port);
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| PluginError::msg(format!("connecting to {server} timed out")))?
            .map_err(|e| PluginError::context(format!("connecting to {server}"), e))?;
        // Small messages, each waited for: do not let Nagle hold them.
        let _ = tcp.set_nodelay(true);
        Ok(Stream::Plain(tcp))
    }

    /// Upgrades a plain connection to TLS within `timeout`.
    pub async fn into_tls(
        self,
        server: &Server,
        connector: &tokio_rustls::TlsConnector,
        timeout: Duration,
    ) -> PluginResult<Stream> {
        let Stream::Plain(tcp) = self else {
            return Ok(self);
        };
        let name = rustls::pki_types::ServerName::try_from(server.host.clone())
            .map_err(|e| PluginError::context(format!("TLS server name {}", server.host), e))?;
        let tls = tokio::time::timeout(timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| PluginError::msg(format!("TLS handshake with {server} timed out")))?
            .map_err(|e| PluginError::context(format!("TLS handshake with {server}"), e))?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// `timeout` and `connect_timeout` of the broker outputs, checked.
pub fn timeouts(
    cfg: &PluginConfig,
    timeout: Seconds,
    connect_timeout: Seconds,
) -> Result<(Duration, Duration), ConfigError> {
    Ok((
        cfg.seconds("timeout", timeout)?,
        cfg.seconds("connect_timeout", connect_timeout)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMES: &[(&str, bool, u16)] = &[("tcp", false, 1883), ("ssl", true, 8883)];

    fn cfg() -> PluginConfig {
        PluginConfig::from_value("t", serde_yaml_ng::Value::Null)
    }

    #[test]
    fn servers_parse_with_defaults_and_errors_name_the_key() {
        let s = parse_server(&cfg(), "servers[0]", "ssl://u:p@broker.example", SCHEMES).unwrap();
        assert_eq!(
            s,
            Server {
                host: "broker.example".into(),
                port: 8883,
                tls: true,
                user: Some(("u".into(), "p".into()))
            }
        );
        let s = parse_server(&cfg(), "servers[0]", "[::1]:1884", SCHEMES).unwrap();
        assert_eq!((s.host.as_str(), s.port, s.tls), ("::1", 1884, false));
        assert_eq!(s.to_string(), "[::1]:1884");
        for bad in [
            "http://x",
            "tcp://:1",
            "tcp://x:0",
            "tcp://x:99999",
            "tcp://[::1",
            "tcp://a b",
        ] {
            let e = parse_server(&cfg(), "servers[0]", bad, SCHEMES)
                .unwrap_err()
                .to_string();
            assert!(e.contains("servers[0]"), "{bad}: {e}");
        }
    }
}
