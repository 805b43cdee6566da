//! `http`: POSTs each batch to a URL as a JSON array or InfluxDB line
//! protocol, optionally gzipped, with basic or bearer auth.
use crate::format::{json, line_protocol};
use crate::metric::Metric;
use crate::plugin::{Output, PluginError, PluginResult};
use crate::plugins::common::http_client::{self as client, basic_auth, Client, ClientSettings};
use crate::registry::Registry;
use serde::Deserialize;

/// Body format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A JSON array of flat objects (see `format::json`), with `kind`.
    #[default]
    Json,
    /// InfluxDB line protocol, nanosecond timestamps.
    #[serde(alias = "line_protocol", alias = "influxdb")]
    Influx,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpConfig {
    pub url: String,
    #[serde(default)]
    pub format: Format,
    /// Basic auth user (with `password`).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Sent as `Authorization: Bearer <token>`.
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(flatten)]
    pub client: ClientSettings,
}

pub struct HttpOutput {
    config: HttpConfig,
    client: Option<Client>,
    json: json::Encoder,
    buf: String,
}

impl HttpOutput {
    pub fn new(cfg: &crate::config::PluginConfig) -> PluginResult<Self> {
        // The flattened client settings hide skipped keys: declare them.
        let mut keys = vec!["url", "format", "username", "password", "bearer_token"];
        keys.extend_from_slice(crate::config::struct_fields::<ClientSettings>());
        let config: HttpConfig = cfg.parse_with_keys(&keys)?;
        client::validate_url(cfg, "url", &config.url)?;
        client::validate(cfg, &config.client)?;
        if config.username.is_some() && config.bearer_token.is_some() {
            return Err(cfg
                .error(
                    "bearer_token",
                    "set either username/password or bearer_token, not both",
                )
                .into());
        }
        Ok(HttpOutput {
            config,
            client: None,
            json: json::Encoder::new(true),
            buf: String::new(),
        })
    }

    fn auth(&self) -> Option<String> {
        if let Some(user) = &self.config.username {
            return Some(basic_auth(
                user,
                self.config.password.as_deref().unwrap_or(""),
            ));
        }
        self.config
            .bearer_token
            .as_ref()
            .map(|t| format!("Bearer {t}"))
    }
}

impl Output for HttpOutput {
    async fn connect(&mut self) -> PluginResult {
        self.client = Some(Client::new(&self.config.client)?);
        Ok(())
    }

    async fn write(&mut self, batch: &[Metric]) -> PluginResult {
        self.buf.clear();
        let content_type = match self.config.format {
            Format::Json => {
                self.json.write_array(batch, &mut self.buf);
                "application/json"
            }
            Format::Influx => {
                line_protocol::write_batch(
                    batch,
                    &line_protocol::Options::dimensional(),
                    &mut self.buf,
                );
                "text/plain; charset=utf-8"
            }
        };
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut extra = Vec::new();
        if let Some(a) = self.auth() {
            extra.push(("Authorization", a));
        }
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| PluginError::msg("not connected"))?;
        let reply = client
            .post(
                &self.config.url,
                content_type,
                self.buf.as_bytes().to_vec(),
                &extra,
            )
            .await?;
        if !reply.ok() {
            return Err(PluginError::msg(format!(
                "{} answered HTTP {}: {}",
                self.config.url,
                reply.status,
                reply.snippet()
            )));
        }
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_output(
        "http",
        "POSTs batches as a JSON array or InfluxDB line protocol to a URL",
        include_str!("sample.yaml"),
        HttpOutput::new,
    );
}

// The shared loopback HTTPS test server (a directory-less `#[path]` from
// the inline tests module would not resolve).
#[cfg(test)]
#[path = "../../../../../tests/support/https.rs"]
mod https;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PluginConfig;
    use crate::plugins::common::http_test_server::TestServer;

    fn metrics() -> Vec<Metric> {
        vec![
            Metric::new("mem", 1_700_000_000_000_000_000)
                .with_tag("host", "web 1")
                .with_field("used", 5u64)
                .with_field("percent", 33.5),
            Metric::new("cpu", 1_700_000_000_000_000_000).with_field("note", "a \"q\" \\ b"),
        ]
    }

    fn output(yaml: &str) -> HttpOutput {
        HttpOutput::new(&PluginConfig::from_value(
            "http",
            serde_yaml_ng::from_str(yaml).unwrap(),
        ))
        .unwrap()
    }

    #[actix_rt::test]
    async fn json_array_with_basic_auth_and_custom_header() {
        let srv = TestServer::start();
        let mut out = output(&format!(
            "url: {}\nusername: user\npassword: pa:ss\nheaders: {{X-Agent: test}}\n",
            srv.url("/ingest")
        ));
        out.connect().await.unwrap();
        out.write(&metrics()).await.unwrap();
        let reqs = srv.requests();
        assert_eq!(reqs.len(), 1);
        let r = &reqs[0];
        assert_eq!((r.method.as_str(), r.target.as_str()), ("POST", "/ingest"));
        assert_eq!(r.header("authorization"), Some("Basic dXNlcjpwYTpzcw=="));
        assert_eq!(r.header("x-agent"), Some("test"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v: serde_json::Value = serde_json::from_str(&r.body()).unwrap();
        let arr = v.as_array().unwrap();
        assert_eq!(arr.len(), 2);
        assert_eq!(arr[0]["name"], "mem");
        assert_eq!(arr[0]["kind"], "METRIC");
        assert_eq!(arr[0]["host"], "web 1");
        assert_eq!(arr[0]["used"], 5);
        assert_eq!(arr[0]["percent"], 33.5);
        assert_eq!(arr[0]["timestamp"], 1_700_000_000);
        assert_eq!(arr[1]["note"], "a \"q\" \\ b");
    }

    #[actix_rt::test]
    async fn gzipped_line_protocol_with_bearer_token() {
        let srv = TestServer::start();
        let mut out = output(&format!(
            "url: {}\nformat: influx\ngzip: true\nbearer_token: s3cret\n",
            srv.url("/write")
        ));
        out.connect().await.unwrap();
        out.write(&metrics()).await.unwrap();
        let r = &srv.requests()[0];
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.header("authorization"), Some("Bearer s3cret"));
        assert_eq!(&r.raw_body[..2], &[0x1f, 0x8b], "gzip magic");
        assert_eq!(
            r.body(),
            "mem,host=web\\ 1 used=5u,percent=33.5 1700000000000000000\ncpu note=\"a \\\"q\\\" \\\\ b\" 1700000000000000000\n"
        );
    }

    #[actix_rt::test]
    async fn server_error_fails_the_write_with_status_and_body() {
        let srv = TestServer::start();
        srv.respond(|_| (503, "{\"error\":\"overloaded\"}".into()));
        let mut out = output(&format!("url: {}\n", srv.url("/")));
        out.connect().await.unwrap();
        let err = out.write(&metrics()).await.unwrap_err().to_string();
        assert!(
            err.contains("HTTP 503") && err.contains("overloaded"),
            "{err}"
        );
    }

    #[actix_rt::test]
    async fn request_timeout_is_enforced() {
        // Accepts connections but never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let mut out = output(&format!("url: {url}\ntimeout: 0.3\n"));
        out.connect().await.unwrap();
        let started = std::time::Instant::now();
        let err = out.write(&metrics()).await.unwrap_err().to_string();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(err.to_lowercase().contains("time"), "{err}");
        drop(listener);
    }

    #[test]
    fn config_errors_name_the_key() {
        let bad = |yaml: &str| {
            HttpOutput::new(&PluginConfig::from_value(
                "http",
                serde_yaml_ng::from_str(yaml).unwrap(),
            ))
            .err()
            .unwrap()
            .to_string()
        };
        assert!(bad("url: ftp://x/\n").contains("url"));
        assert!(bad("url: http://127.0.0.1/\ntimeout: 0\n").contains("timeout"));
        assert!(bad("url: http://127.0.0.1/\nformat: xml\n").contains("format"));
        assert!(
            bad("url: http://127.0.0.1/\nusername: a\nbearer_token: b\n").contains("bearer_token")
        );
    }

    #[actix_rt::test]
    async fn https_with_ca_file_or_insecure_skip_verify() {
        // A real TLS server (rustls) with a certificate from a new CA: the
        // CA file makes it trusted, the system store does not know it, and
        // insecure_skip_verify accepts it unchecked.
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let port = super::https::https_server(&ca);
        let url = format!("https://localhost:{port}/write");
        let mut out = output(&format!(
            "url: {url}
ca_file: '{}'
",
            ca.display()
        ));
        out.connect().await.unwrap();
        out.write(&metrics()).await.unwrap();
        let mut out = output(&format!(
            "url: {url}
timeout: 5
"
        ));
        out.connect().await.unwrap();
        let err = out.write(&metrics()).await.unwrap_err().to_string();
        assert!(err.contains("certificate"), "{err}");
        let mut out = output(&format!(
            "url: {url}
insecure_skip_verify: true
"
        ));
        out.connect().await.unwrap();
        out.write(&metrics()).await.unwrap();
    }

    #[actix_rt::test]
    async fn tls_verification_is_on_by_default() {
        // A plain-TCP server on an https URL fails the handshake: proves the
        // client does not silently fall back to anything.
        let srv = TestServer::start();
        let mut out = output(&format!("url: https://{}/\ntimeout: 2\n", srv.addr));
        out.connect().await.unwrap();
        assert!(out.write(&metrics()).await.is_err());
        assert!(HttpOutput::new(&PluginConfig::from_value(
            "http",
            serde_yaml_ng::from_str("url: https://127.0.0.1/").unwrap()
        ))
        .unwrap()
        .config
        .client
        .insecure_skip_verify
        .eq(&false));
    }
}
