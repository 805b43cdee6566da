//! `otlp`: OpenTelemetry metrics over OTLP/HTTP with protobuf bodies
//! (`POST /v1/metrics`, `application/x-protobuf`), to any OpenTelemetry
//! collector or backend that speaks it. How metrics map to OTLP: see
//! [`encode`] and the README.
//!
//! Replies follow the OTLP/HTTP specification: 2xx is delivered (a partial
//! success is logged and counted, not retried); 429, 502, 503 and 504 are
//! retried by the core, and a `Retry-After` is honoured by not sending
//! before it; any other status is permanent for that batch: it is dropped,
//! logged and counted, never retried.
pub mod encode;
pub mod proto;
#[cfg(test)]
mod tests;

use crate::config::Seconds;
use crate::metric::{now_ns, Metric};
use crate::plugin::{Output, PluginError, PluginResult, RateLimitedLog};
use crate::plugins::common::http_client::{self as client, Client, ClientSettings, Reply};
use crate::registry::Registry;
use prost::Message;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The longest `Retry-After` honoured: a receiver asking for more is
/// asked again after this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

fn d_endpoint() -> String {
    "http://127.0.0.1:4318/v1/metrics".into()
}
fn d_timeout() -> Seconds {
    Seconds::from_secs(10)
}
fn d_connect_timeout() -> Seconds {
    Seconds::from_secs(5)
}

/// Request body compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OtlpConfig {
    /// Full URL of the metrics endpoint.
    #[serde(default = "d_endpoint")]
    pub endpoint: String,
    #[serde(default)]
    pub compression: Compression,
    /// Extra request headers (API keys, tenants).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "d_timeout")]
    pub timeout: Seconds,
    #[serde(default = "d_connect_timeout")]
    pub connect_timeout: Seconds,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// What the output has counted since it was built.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Requests the receiver accepted (2xx).
    pub accepted_requests: u64,
    /// Data points sent in accepted requests.
    pub accepted_points: u64,
    /// Data points the receiver reported rejected in a partial success.
    pub rejected_points: u64,
    /// Batches dropped after a non-retryable status, and their points.
    pub dropped_batches: u64,
    pub dropped_points: u64,
}

pub struct OtlpOutput {
    config: OtlpConfig,
    settings: ClientSettings,
    client: Option<Client>,
    encoder: encode::Encoder,
    /// No request before this (a receiver's `Retry-After`).
    not_before: Option<Instant>,
    counters: Counters,
    log: RateLimitedLog,
    drop_log: RateLimitedLog,
}

impl OtlpOutput {
    pub fn new(cfg: &crate::config::PluginConfig) -> PluginResult<Self> {
        let config: OtlpConfig = cfg.parse()?;
        client::validate_url(cfg, "endpoint", &config.endpoint)?;
        let settings = ClientSettings {
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
            insecure_skip_verify: config.insecure_skip_verify,
            ca_file: config.ca_file.clone(),
            headers: config.headers.clone(),
            // Compression is done here, to name it `compression`.
            gzip: false,
        };
        client::validate(cfg, &settings)?;
        for k in config.headers.keys() {
            if k.eq_ignore_ascii_case("content-type") || k.eq_ignore_ascii_case("content-encoding")
            {
                return Err(cfg
                    .error(
                        &format!("headers.{k}"),
                        "set by the output (protobuf body, `compression`)",
                    )
                    .into());
            }
        }
        if let Some(ca) = &config.ca_file {
            if ca.as_os_str().is_empty() {
                return Err(cfg.error("ca_file", "must not be empty").into());
            }
        }
        Ok(OtlpOutput {
            config,
            settings,
            client: None,
            encoder: encode::Encoder::new(cfg.info_tags()),
            not_before: None,
            counters: Counters::default(),
            log: RateLimitedLog::new(cfg.log().clone(), "otlp output"),
            drop_log: RateLimitedLog::new(cfg.log().clone(), "otlp output"),
        })
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    fn partial_success(&mut self, reply: &Reply) {
        let Ok(resp) = proto::collector::ExportMetricsServiceResponse::decode(&reply.body[..])
        else {
            // A 2xx with a body that is not the response message: the spec
            // says the data was accepted.
            return;
        };
        let Some(p) = resp.partial_success else {
            return;
        };
        if p.rejected_data_points <= 0 && p.error_message.is_empty() {
            return;
        }
        let rejected = p.rejected_data_points.max(0) as u64;
        self.counters.rejected_points += rejected;
        let total = self.counters.rejected_points;
        self.log.warn(|| {
            format!(
                "receiver accepted the request partially: {rejected} data points rejected \
                 ({total} so far): {}",
                p.error_message
            )
        });
    }
}

/// Whether the OTLP/HTTP specification allows retrying after `status`.
pub fn retryable(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// The delay of a `Retry-After` header: seconds or an HTTP date.
pub fn retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = at.with_timezone(&chrono::Utc) - now;
    Some(
        delta
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// The message of an error reply: a `google.rpc.Status` when the body is
/// protobuf, else the start of the text.
fn error_text(reply: &Reply) -> String {
    let is_proto = reply
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-protobuf"));
    if is_proto {
        if let Ok(s) = proto::Status::decode(&reply.body[..]) {
            return s.message;
        }
    }
    reply.snippet()
}

impl Output for OtlpOutput {
    async fn connect(&mut self) -> PluginResult {
        self.client = Some(Client::new(&self.settings)?);
        Ok(())
    }

    async fn write(&mut self, batch: &[Metric]) -> PluginResult {
        if let Some(at) = self.not_before {
            let now = Instant::now();
            if now < at {
                return Err(PluginError::msg(format!(
                    "{} asked to wait (Retry-After): {:.1} s left",
                    self.config.endpoint,
                    (at - now).as_secs_f64()
                )));
            }
            self.not_before = None;
        }
        let encoded = self.encoder.encode(batch, now_ns());
        if encoded.points == 0 {
            return Ok(());
        }
        let body = encoded.request.encode_to_vec();
        let (body, extra) = match self.config.compression {
            Compression::Gzip => (
                client::gzip(&body)?,
                vec![("Content-Encoding", "gzip".to_string())],
            ),
            Compression::None => (body, Vec::new()),
        };
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| PluginError::msg("not connected"))?;
        let reply = client
            .post(
                &self.config.endpoint,
                "application/x-protobuf",
                body,
                &extra,
            )
            .await?;
        if reply.ok() {
            self.counters.accepted_requests += 1;
            self.counters.accepted_points += encoded.points as u64;
            self.partial_success(&reply);
            return Ok(());
        }
        let text = error_text(&reply);
        if retryable(reply.status) {
            let wait = reply
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after(v, chrono::Utc::now()));
            if let Some(wait) = wait {
                self.not_before = Some(Instant::now() + wait);
            }
            return Err(PluginError::msg(format!(
                "{} answered HTTP {}{}: {text}",
                self.config.endpoint,
                reply.status,
                wait.map(|w| format!(" (Retry-After {} s)", w.as_secs()))
                    .unwrap_or_default()
            )));
        }
        self.counters.dropped_batches += 1;
        self.counters.dropped_points += encoded.points as u64;
        let (status, c) = (reply.status, self.counters);
        self.drop_log.warn(|| {
            format!(
                "receiver refused a batch with HTTP {status}, which OTLP says not to retry: \
                 {} data points dropped ({} batches, {} points so far): {text}",
                encoded.points, c.dropped_batches, c.dropped_points
            )
        });
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_output(
        "otlp",
        "Sends metrics to an OpenTelemetry receiver over OTLP/HTTP (protobuf)",
        include_str!("sample.yaml"),
        OtlpOutput::new,
    );
}
