//! The HTTP client the HTTP-based outputs share (isahc/libcurl): timeouts on
//! every request, TLS verification on unless `insecure_skip_verify`, an
//! optional CA file, extra headers, optional gzip of the body.
use crate::config::Seconds;
use crate::plugin::PluginError;
use isahc::config::{Configurable, RedirectPolicy};
use isahc::tls::{TlsConfig, TrustStore};
use isahc::{AsyncReadResponseExt, HttpClient, Request};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

fn d_timeout() -> Seconds {
    Seconds::from_secs(10)
}
fn d_connect_timeout() -> Seconds {
    Seconds::from_secs(5)
}

/// Connection settings every HTTP output accepts.
#[derive(Debug, Clone, Deserialize)]
pub struct ClientSettings {
    /// Whole-request timeout, seconds.
    #[serde(default = "d_timeout")]
    pub timeout: Seconds,
    /// TCP + TLS connect timeout, seconds.
    #[serde(default = "d_connect_timeout")]
    pub connect_timeout: Seconds,
    /// Accept any certificate and host name (testing only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// PEM file of CA certificates to trust instead of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Compress request bodies with gzip (`Content-Encoding: gzip`).
    #[serde(default)]
    pub gzip: bool,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            timeout: d_timeout(),
            connect_timeout: d_connect_timeout(),
            insecure_skip_verify: false,
            ca_file: None,
            headers: BTreeMap::new(),
            gzip: false,
        }
    }
}

/// Checks settings that would only fail at the first request.
pub fn validate(
    cfg: &crate::config::PluginConfig,
    s: &ClientSettings,
) -> Result<(), crate::config::ConfigError> {
    cfg.seconds("timeout", s.timeout)?;
    cfg.seconds("connect_timeout", s.connect_timeout)?;
    for (k, v) in &s.headers {
        if isahc::http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            return Err(cfg.error(&format!("headers.{k}"), "not a valid header name"));
        }
        if isahc::http::HeaderValue::from_str(v).is_err() {
            return Err(cfg.error(&format!("headers.{k}"), "not a valid header value"));
        }
    }
    Ok(())
}

/// Checks that `url` is an absolute http(s) URL.
pub fn validate_url(
    cfg: &crate::config::PluginConfig,
    key: &str,
    url: &str,
) -> Result<(), crate::config::ConfigError> {
    match url.parse::<isahc::http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http") | Some("https")) && u.host().is_some() => {
            Ok(())
        }
        Ok(_) => Err(cfg.error(
            key,
            format!("`{url}` is not an absolute http:// or https:// URL"),
        )),
        Err(e) => Err(cfg.error(key, format!("`{url}` is not a valid URL: {e}"))),
    }
}

/// A built client plus the settings applied per request.
pub struct Client {
    http: HttpClient,
    settings: ClientSettings,
}

/// What the server answered.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// The reply's headers (the otlp output reads `Retry-After`).
    pub headers: isahc::http::HeaderMap,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The start of the body, for error messages.
    pub fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let t = text.trim();
        match t.char_indices().nth(300) {
            Some((i, _)) => format!("{}…", &t[..i]),
            None => t.to_string(),
        }
    }
}

/// TLS settings of a client or a request (libcurl with rustls): verified
/// against the system's CAs (isahc's native store: `$SSL_CERT_FILE` when
/// set, else the distribution's bundle), or against only the CAs in
/// `ca_file`; `insecure` turns verification off entirely (certificate and
/// host name: rustls cannot skip one without the other).
pub fn tls_config(insecure: bool, ca_file: Option<&Path>) -> TlsConfig {
    let mut b = TlsConfig::builder();
    if let Some(ca) = ca_file {
        b = b.trust_store(TrustStore::from_file(ca));
    }
    if insecure {
        b = b
            .danger_accept_invalid_certs(true)
            .danger_accept_invalid_hosts(true);
    }
    b.build()
}

impl Client {
    pub fn new(settings: &ClientSettings) -> Result<Client, PluginError> {
        // An output sends one request at a time: a few connections are
        // plenty, and bound what it holds outside the probes' descriptor
        // budget (its reserve, see `fd_budget`).
        let mut b = HttpClient::builder()
            .max_connections(4)
            .connection_cache_size(4)
            .timeout(settings.timeout.as_duration())
            .connect_timeout(settings.connect_timeout.as_duration())
            .redirect_policy(RedirectPolicy::None);
        if let Some(ca) = &settings.ca_file {
            if !ca.is_file() {
                return Err(PluginError::msg(format!(
                    "ca_file {} is not a readable file",
                    ca.display()
                )));
            }
        }
        b = b.tls_config(tls_config(
            settings.insecure_skip_verify,
            settings.ca_file.as_deref(),
        ));
        let http = b
            .build()
            .map_err(|e| PluginError::context("cannot build HTTP client", e))?;
        Ok(Client {
            http,
            settings: settings.clone(),
        })
    }

    /// POSTs `body` (gzipped when configured) and returns the reply,
    /// whatever its status.
    pub async fn post(
        &self,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
        extra: &[(&str, String)],
    ) -> Result<Reply, PluginError> {
        let mut req = Request::post(url).header("Content-Type", content_type);
        for (k, v) in &self.settings.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        for (k, v) in extra {
            req = req.header(*k, v.as_str());
        }
        let body = if self.settings.gzip {
            req = req.header("Content-Encoding", "gzip");
            gzip(&body)?
        } else {
            body
        };
        let req = req
            .body(body)
            .map_err(|e| PluginError::context(format!("bad request to {url}"), e))?;
        let mut resp = self
            .http
            .send_async(req)
            .await
            .map_err(|e| PluginError::context(format!("POST {url}"), e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| PluginError::context(format!("reading reply of {url}"), e))?;
        Ok(Reply {
            status,
            body,
            headers,
        })
    }
}

pub fn gzip(data: &[u8]) -> Result<Vec<u8>, PluginError> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

/// `Authorization: Basic …` for a user and password.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64_lite::encode;
    format!("Basic {}", encode(format!("{user}:{password}").as_bytes()))
}

/// Standard base64 (RFC 4648, padded), enough for a Basic auth header.
mod base64_lite {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_lite::encode(i.as_bytes()), o);
        }
        assert_eq!(basic_auth("user", "pa:ss"), "Basic dXNlcjpwYTpzcw==");
    }
}
