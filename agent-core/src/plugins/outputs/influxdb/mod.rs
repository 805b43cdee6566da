//! `influxdb`: line protocol to InfluxDB 1.x (`/write?db=&rp=&precision=`)
//! or 2.x (`/api/v2/write?org=&bucket=&precision=`, `Authorization: Token`).
use crate::format::line_protocol::{self, Precision};
use crate::metric::Metric;
use crate::plugin::{Output, PluginError, PluginResult};
use crate::plugins::common::http_client::{self as client, basic_auth, Client, ClientSettings};
use crate::registry::Registry;
use serde::Deserialize;

fn d_url() -> String {
    "http://127.0.0.1:8086".into()
}
fn d_database() -> String {
    "agent".into()
}
fn d_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
pub struct InfluxConfig {
    /// Base URL of the server.
    #[serde(default = "d_url")]
    pub url: String,
    /// 1 or 2; when absent, 2 if `bucket` is set, else 1.
    #[serde(default)]
    pub version: Option<u8>,
    /// 1.x database.
    #[serde(default = "d_database")]
    pub database: String,
    /// 1.x retention policy (empty: the database's default).
    #[serde(default)]
    pub retention_policy: String,
    /// 1.x: create the database on connect (ignored when refused).
    #[serde(default = "d_true")]
    pub create_database: bool,
    /// 1.x basic auth.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// 2.x organization, bucket and API token.
    #[serde(default)]
    pub org: Option<String>,
    #[serde(default)]
    pub bucket: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub precision: Precision,
    /// Write unsigned integers with `u`. Default: off for 1.x (which
    /// rejects them; they are written as integers, clamped), on for 2.x.
    #[serde(default)]
    pub uint_support: Option<bool>,
    #[serde(flatten)]
    pub client: ClientSettings,
}

pub struct InfluxOutput {
    config: InfluxConfig,
    v2: bool,
    write_url: String,
    opts: line_protocol::Options,
    client: Option<Client>,
    buf: String,
    dropped_batches: u64,
    drop_log: crate::plugin::RateLimitedLog,
}

/// Percent-encodes a query-string value.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl InfluxOutput {
    pub fn new(cfg: &crate::config::PluginConfig) -> PluginResult<Self> {
        // The flattened client settings hide skipped keys: declare them.
        let mut keys = vec![
            "url",
            "version",
            "database",
            "retention_policy",
            "create_database",
            "username",
            "password",
            "org",
            "bucket",
            "token",
            "precision",
            "uint_support",
        ];
        keys.extend_from_slice(crate::config::struct_fields::<ClientSettings>());
        let config: InfluxConfig = cfg.parse_with_keys(&keys)?;
        client::validate_url(cfg, "url", &config.url)?;
        client::validate(cfg, &config.client)?;
        let v2 = match config.version {
            Some(1) => false,
            Some(2) => true,
            None => config.bucket.is_some(),
            Some(v) => {
                return Err(cfg
                    .error("version", format!("must be 1 or 2, got {v}"))
                    .into())
            }
        };
        let base = config.url.trim_end_matches('/');
        let write_url = if v2 {
            let org = config.org.as_deref().filter(|s| !s.is_empty());
            let bucket = config.bucket.as_deref().filter(|s| !s.is_empty());
            let (Some(org), Some(bucket)) = (org, bucket) else {
                return Err(cfg
                    .error("bucket", "InfluxDB 2.x needs `org` and `bucket`")
                    .into());
            };
            format!(
                "{base}/api/v2/write?org={}&bucket={}&precision={}",
                enc(org),
                enc(bucket),
                config.precision.v2_param()
            )
        } else {
            if config.database.is_empty() {
                return Err(cfg.error("database", "must not be empty").into());
            }
            let mut u = format!(
                "{base}/write?db={}&precision={}",
                enc(&config.database),
                config.precision.v1_param()
            );
            if !config.retention_policy.is_empty() {
                u.push_str("&rp=");
                u.push_str(&enc(&config.retention_policy));
            }
            u
        };
        let opts = line_protocol::Options {
            precision: config.precision,
            uint_support: config.uint_support.unwrap_or(v2),
            dimensional: true,
        };
        Ok(InfluxOutput {
            config,
            v2,
            write_url,
            opts,
            client: None,
            buf: String::new(),
            dropped_batches: 0,
            drop_log: crate::plugin::RateLimitedLog::new(cfg.log().clone(), "influxdb output"),
        })
    }

    fn auth(&self) -> Vec<(&'static str, String)> {
        if self.v2 {
            return match &self.config.token {
                Some(t) => vec![("Authorization", format!("Token {t}"))],
                None => Vec::new(),
            };
        }
        match &self.config.username {
            Some(u) => vec![(
                "Authorization",
                basic_auth(u, self.config.password.as_deref().unwrap_or("")),
            )],
            None => Vec::new(),
        }
    }
}

/// InfluxDB answers 400 for points it will never accept (a field type
/// conflict, a line it cannot parse); resending cannot help.
fn permanent_rejection(status: u16, body: &str) -> bool {
    status == 400
        && [
            "partial write",
            "field type conflict",
            "unable to parse",
            "invalid",
        ]
        .iter()
        .any(|p| body.contains(p))
}

impl Output for InfluxOutput {
    async fn connect(&mut self) -> PluginResult {
        let client = Client::new(&self.config.client)?;
        if !self.v2 && self.config.create_database {
            let base = self.config.url.trim_end_matches('/');
            let q = format!(
                "q={}",
                enc(&format!(
                    "CREATE DATABASE \"{}\"",
                    self.config.database.replace('"', "\\\"")
                ))
            );
            // Refusal (no privilege) is fine: the write's own error tells.
            let _ = client
                .post(
                    &format!("{base}/query"),
                    "application/x-www-form-urlencoded",
                    q.into_bytes(),
                    &self.auth(),
                )
                .await?;
        }
        self.client = Some(client);
        Ok(())
    }

    async fn write(&mut self, batch: &[Metric]) -> PluginResult {
        self.buf.clear();
        line_protocol::write_batch(batch, &self.opts, &mut self.buf);
        if self.buf.is_empty() {
            return Ok(());
        }
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| PluginError::msg("not connected"))?;
        let reply = client
            .post(
                &self.write_url,
                "text/plain; charset=utf-8",
                self.buf.as_bytes().to_vec(),
                &self.auth(),
            )
            .await?;
        if reply.ok() {
            return Ok(());
        }
        let text = reply.snippet();
        if permanent_rejection(reply.status, &text) {
            self.dropped_batches += 1;
            let dropped = self.dropped_batches;
            self.drop_log.warn(|| {
                format!("server refused points for good ({dropped} batches so far): {text}")
            });
            return Ok(());
        }
        Err(PluginError::msg(format!(
            "{} answered HTTP {}: {text}",
            self.config.url, reply.status
        )))
    }
}

pub fn register(r: &mut Registry) {
    r.add_output(
        "influxdb",
        "Writes line protocol to InfluxDB 1.x (/write) or 2.x (/api/v2/write)",
        include_str!("sample.yaml"),
        InfluxOutput::new,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PluginConfig;
    use crate::plugins::common::http_test_server::TestServer;

    fn output(yaml: &str) -> PluginResult<InfluxOutput> {
        InfluxOutput::new(&PluginConfig::from_value(
            "influxdb",
            serde_yaml_ng::from_str(yaml).unwrap(),
        ))
    }

    fn metric() -> Metric {
        Metric::new("disk", 1_700_000_000_123_456_789)
            .with_tag("mount", "/var lib")
            .with_field("free", 10u64)
            .with_field("n", -1i64)
    }

    #[actix_rt::test]
    async fn v1_url_auth_precision_and_uint_clamped() {
        let srv = TestServer::start();
        let mut out = output(&format!(
            "url: {}\ndatabase: my db\nretention_policy: week\nprecision: s\nusername: u\npassword: p\n",
            srv.url("")
        ))
        .unwrap();
        out.connect().await.unwrap();
        out.write(&[metric()]).await.unwrap();
        let reqs = srv.requests();
        assert_eq!(reqs[0].target, "/query");
        assert_eq!(reqs[0].body(), "q=CREATE%20DATABASE%20%22my%20db%22");
        let w = &reqs[1];
        assert_eq!(w.target, "/write?db=my%20db&precision=s&rp=week");
        assert_eq!(w.header("authorization"), Some("Basic dTpw"));
        assert_eq!(
            w.body(),
            "disk,mount=/var\\ lib free=10i,n=-1i 1700000000\n"
        );
    }

    #[actix_rt::test]
    async fn v2_url_token_and_uint() {
        let srv = TestServer::start();
        let mut out = output(&format!(
            "url: {}/\norg: my org\nbucket: b1\ntoken: T0k\n",
            srv.url("")
        ))
        .unwrap();
        out.connect().await.unwrap();
        out.write(&[metric()]).await.unwrap();
        let reqs = srv.requests();
        assert_eq!(reqs.len(), 1, "no CREATE DATABASE on 2.x");
        assert_eq!(
            reqs[0].target,
            "/api/v2/write?org=my%20org&bucket=b1&precision=ns"
        );
        assert_eq!(reqs[0].header("authorization"), Some("Token T0k"));
        assert_eq!(
            reqs[0].body(),
            "disk,mount=/var\\ lib free=10u,n=-1i 1700000000123456789\n"
        );
    }

    #[actix_rt::test]
    async fn permanent_400_is_dropped_other_errors_retried() {
        let srv = TestServer::start();
        srv.respond(|r| {
            if r.target.starts_with("/query") {
                (200, "{}".into())
            } else {
                (
                    400,
                    "{\"error\":\"partial write: field type conflict\"}".into(),
                )
            }
        });
        let mut out = output(&format!("url: {}\n", srv.url(""))).unwrap();
        out.connect().await.unwrap();
        out.write(&[metric()]).await.unwrap();
        assert_eq!(out.dropped_batches, 1);
        srv.respond(|_| (401, "{\"error\":\"authorization failed\"}".into()));
        let e = out.write(&[metric()]).await.unwrap_err().to_string();
        assert!(e.contains("401"), "{e}");
    }

    #[test]
    fn config_errors() {
        let e = output("version: 2\norg: o\n").err().unwrap().to_string();
        assert!(e.contains("bucket"), "{e}");
        let e = output("version: 3\n").err().unwrap().to_string();
        assert!(e.contains("version"), "{e}");
        let e = output("precision: h\n").err().unwrap().to_string();
        assert!(e.contains("precision"), "{e}");
    }
}
