//! `curl`: HTTP checks per target (PyAgent's curl input) on isahc/libcurl,
//! with timeouts, TLS verification, retries, timings and a body size limit.
mod body;
pub mod schema;
use crate::config::{Count, Seconds, Size};
use crate::fd_budget;
use crate::metric::Metric;
use crate::plugin::{Accumulator, Input, PluginError, PluginResult};
use crate::plugins::common::http_client::tls_config;
use crate::plugins::common::resolver;
use crate::registry::Registry;
use body::{encode_body, merge_json, truncate};
use futures::stream::{FuturesUnordered, StreamExt};
use futures::AsyncReadExt;
use indexmap::IndexMap;
use isahc::config::{Configurable, RedirectPolicy};
use isahc::error::ErrorKind;
use isahc::net::Dialer;
use isahc::{AsyncBody, HttpClient, ResponseExt};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `status` when no response arrived (PyAgent's value).
pub const NO_RESPONSE_STATUS: i64 = 504;
/// Keys a merged response may never overwrite (they get `response_`).
const PROTECTED: [&str; 6] = ["name", "time", "timestamp", "status", "tag", "url"];
/// Most redirects followed when `follow_redirects` is on.
const MAX_REDIRECTS: u32 = 10;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CurlConfig {
    /// Most requests in flight at once (1 to 10,000).
    pub worker_limit: Count,
    /// Defaults for every target.
    pub timeout: Seconds,
    pub follow_redirects: bool,
    pub max_body_bytes: Size,
    /// Most bytes of the body kept in the `response` field.
    pub response_max_bytes: Size,
    pub target: IndexMap<String, CurlTarget>,
}

impl Default for CurlConfig {
    fn default() -> Self {
        CurlConfig {
            worker_limit: Count::from_const(30),
            timeout: Seconds::from_secs(10),
            follow_redirects: false,
            max_body_bytes: Size::from_bytes(1 << 20),
            response_max_bytes: Size::from_bytes(64 << 10),
            target: IndexMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CurlTarget {
    pub url: String,
    pub method: Option<String>,
    pub headers: IndexMap<String, String>,
    pub data: Option<serde_yaml_ng::Value>,
    #[serde(rename = "type")]
    pub data_type: Option<String>,
    pub merge_response: bool,
    pub retry: Option<RetryConfig>,
    pub timeout: Option<Seconds>,
    pub insecure_skip_verify: bool,
    pub ca_file: Option<PathBuf>,
    pub follow_redirects: Option<bool>,
    pub max_body_bytes: Option<Size>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RetryConfig {
    /// Extra tries after the first.
    pub attempts: u32,
    /// Statuses that cause a retry (504 includes "no response").
    pub statuses: Vec<u16>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 0,
            statuses: vec![500, 502, 504],
        }
    }
}

/// One checked target.
#[derive(Debug, Clone)]
struct Target {
    tag: String,
    /// The URL as configured (the `url` field).
    url: String,
    /// The URL requested: with a `Host` header, its host is the header's.
    request_url: http::Uri,
    /// Where to connect, resolved by the shared resolver and given to
    /// libcurl as `CONNECT_TO`: the URL's host for a `Host` header
    /// (`--resolve`), or a host name when redirects are not followed (a
    /// redirect may name another host, which libcurl then resolves).
    connect_to: Option<(String, u16)>,
    method: http::Method,
    host: String,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    body: Option<(Vec<u8>, &'static str)>,
    merge_response: bool,
    retry: RetryConfig,
    timeout: Duration,
    insecure: bool,
    ca_file: Option<PathBuf>,
    follow_redirects: bool,
    max_body_bytes: u64,
}

pub struct Curl {
    targets: Vec<Target>,
    worker_limit: usize,
    response_max_bytes: usize,
    client: Option<HttpClient>,
}

use isahc::http;

fn default_port(scheme: &str) -> u16 {
    if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    }
}

impl Curl {
    pub fn from_config(cfg: &crate::config::PluginConfig) -> PluginResult<Self> {
        let c: CurlConfig = cfg.parse()?;
        let default_timeout = cfg.seconds("timeout", c.timeout)?;
        let worker_limit = cfg.count("worker_limit", c.worker_limit, 1, 10_000)?;
        // The body is held in memory: at most 1 GiB.
        const MAX_BODY: u64 = 1 << 30;
        if c.max_body_bytes.bytes() > MAX_BODY {
            return Err(cfg
                .error(
                    "max_body_bytes",
                    format!("must be at most {MAX_BODY} bytes"),
                )
                .into());
        }
        if c.response_max_bytes.bytes() > MAX_BODY {
            return Err(cfg
                .error(
                    "response_max_bytes",
                    format!("must be at most {MAX_BODY} bytes"),
                )
                .into());
        }
        let mut targets = Vec::with_capacity(c.target.len());
        for (tag, t) in c.target {
            let key = |k: &str| format!("target.{tag}.{k}");
            let err = |k: &str, m: String| -> PluginError { cfg.error(&key(k), m).into() };
            let url: http::Uri = t
                .url
                .trim()
                .parse()
                .map_err(|e| err("url", format!("`{}`: {e}", t.url)))?;
            let scheme = url.scheme_str().unwrap_or("").to_ascii_lowercase();
            if scheme != "http" && scheme != "https" {
                return Err(err(
                    "url",
                    format!("`{}`: only http:// and https:// URLs", t.url),
                ));
            }
            let url_host = url.host().unwrap_or("").to_string();
            if url_host.is_empty() {
                return Err(err("url", format!("`{}`: no host", t.url)));
            }
            let port = url.port_u16().unwrap_or_else(|| default_port(&scheme));
            let method_text = t.method.as_deref().unwrap_or("get").to_ascii_uppercase();
            let method = http::Method::from_bytes(method_text.as_bytes())
                .map_err(|_| err("method", format!("`{method_text}` is not an HTTP method")))?;
            let mut headers = Vec::new();
            let mut host_header = None;
            for (k, v) in &t.headers {
                if k.eq_ignore_ascii_case("host") {
                    host_header = Some(v.trim().to_string());
                    continue;
                }
                let name = http::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|e| err(&format!("headers.{k}"), e.to_string()))?;
                let value = http::HeaderValue::from_str(v)
                    .map_err(|e| err(&format!("headers.{k}"), e.to_string()))?;
                headers.push((name, value));
            }
            // A Host header acts like curl --resolve: ask for the header's
            // name (Host, SNI and certificate check) but connect to the
            // URL's address.
            let (request_url, connect_to, host) = match host_header.filter(|h| !h.is_empty()) {
                Some(h) => {
                    let name = match h.strip_prefix('[') {
                        Some(rest) => format!("[{}]", rest.split(']').next().unwrap_or("")),
                        None => h.split(':').next().unwrap_or("").to_string(),
                    };
                    let authority = format!("{name}:{port}");
                    let mut parts = url.clone().into_parts();
                    parts.authority = Some(
                        authority
                            .parse()
                            .map_err(|e| err("headers.Host", format!("`{h}`: {e}")))?,
                    );
                    let rewritten = http::Uri::from_parts(parts)
                        .map_err(|e| err("headers.Host", format!("`{h}`: {e}")))?;
                    (rewritten, Some((url_host.clone(), port)), h)
                }
                None => {
                    let follow = t.follow_redirects.unwrap_or(c.follow_redirects);
                    let by_name = resolver::literal(&url_host).is_none() && !follow;
                    let connect_to = by_name.then(|| (url_host.clone(), port));
                    (url.clone(), connect_to, url_host.clone())
                }
            };
            let kind = t
                .data_type
                .as_deref()
                .unwrap_or("json")
                .to_ascii_lowercase();
            if kind != "json" && kind != "form" {
                return Err(err(
                    "type",
                    format!("unknown type `{kind}`: use json or form"),
                ));
            }
            let body = match &t.data {
                None | Some(serde_yaml_ng::Value::Null) => None,
                Some(d) => Some(encode_body(d, &kind).map_err(|e| err("data", e))?),
            };
            let timeout = match t.timeout {
                Some(v) => cfg.seconds(&key("timeout"), v)?,
                None => default_timeout,
            };
            let max_body_bytes = t.max_body_bytes.unwrap_or(c.max_body_bytes).bytes();
            if max_body_bytes == 0 || max_body_bytes > MAX_BODY {
                return Err(err(
                    "max_body_bytes",
                    format!("must be above 0 and at most {MAX_BODY} bytes"),
                ));
            }
            let retry = t.retry.unwrap_or_default();
            if retry.attempts > 10 {
                return Err(err(
                    "retry.attempts",
                    format!("at most 10, got {}", retry.attempts),
                ));
            }
            targets.push(Target {
                tag: tag.clone(),
                url: t.url.trim().to_string(),
                request_url,
                connect_to,
                method,
                host,
                headers,
                body,
                merge_response: t.merge_response,
                retry,
                timeout,
                insecure: t.insecure_skip_verify,
                ca_file: t.ca_file,
                follow_redirects: t.follow_redirects.unwrap_or(c.follow_redirects),
                max_body_bytes,
            });
        }
        Ok(Curl {
            targets,
            worker_limit: worker_limit.as_usize(),
            response_max_bytes: usize::try_from(c.response_max_bytes.bytes()).unwrap_or(usize::MAX),
            client: None,
        })
    }
}

/// What one request gave.
#[derive(Debug, Clone, Default)]
struct Reply {
    status: Option<u16>,
    body: Vec<u8>,
    headers: serde_json::Map<String, serde_json::Value>,
    content_length: u64,
    timings_ms: [f64; 5],
    result: &'static str,
    exception: Option<String>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn error_result(e: &isahc::Error) -> &'static str {
    match e.kind() {
        ErrorKind::Timeout => "timeout",
        ErrorKind::BadServerCertificate
        | ErrorKind::BadClientCertificate
        | ErrorKind::TlsEngine => "tls_error",
        _ => "connection_failed",
    }
}

/// Resolves the host of `connect_to` with the shared resolver (an IP
/// literal needs none).
async fn connect_addrs(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, String> {
    let ips = resolver::lookup(host, timeout).await?;
    Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
}

async fn request_once(client: &HttpClient, t: &Target) -> Reply {
    let started = std::time::Instant::now();
    let (addrs, dns) = match &t.connect_to {
        None => (Vec::new(), Duration::ZERO),
        Some((host, port)) => match connect_addrs(host, *port, t.timeout).await {
            Ok(a) => (a, started.elapsed()),
            Err(e) => {
                return Reply {
                    result: "connection_failed",
                    exception: Some(e),
                    timings_ms: [ms(started.elapsed()), 0.0, 0.0, 0.0, ms(started.elapsed())],
                    ..Reply::default()
                }
            }
        },
    };
    if addrs.is_empty() {
        return request_to(client, t, None, started, dns).await;
    }
    // A name with several addresses: the next one when one fails to connect.
    let mut reply = Reply::default();
    for (i, a) in addrs.iter().enumerate() {
        reply = request_to(client, t, Some(*a), started, dns).await;
        let failed = reply.status.is_none() && reply.result == "connection_failed";
        if !failed || i + 1 == addrs.len() {
            break;
        }
    }
    reply
}

/// One request, connecting to `addr` when given; `dns` is the time the
/// shared resolver took (libcurl's timings start after it).
async fn request_to(
    client: &HttpClient,
    t: &Target,
    addr: Option<SocketAddr>,
    started: std::time::Instant,
    dns: Duration,
) -> Reply {
    // One connection per request, from the agent's descriptor budget
    // (connections are not cached: see `Curl::client`).
    let _fd = fd_budget::global().acquire(1).await;
    let mut b = http::Request::builder()
        .method(t.method.clone())
        .uri(t.request_url.clone())
        .timeout(t.timeout)
        .connect_timeout(t.timeout)
        .metrics(true)
        .redirect_policy(if t.follow_redirects {
            RedirectPolicy::Limit(MAX_REDIRECTS)
        } else {
            RedirectPolicy::None
        });
    b = b.tls_config(tls_config(t.insecure, t.ca_file.as_deref()));
    if let Some(a) = addr {
        b = b.dial(Dialer::ip_socket(a));
    }
    for (k, v) in &t.headers {
        b = b.header(k, v);
    }
    let body = match &t.body {
        Some((bytes, ct)) => {
            if !t
                .headers
                .iter()
                .any(|(k, _)| k == http::header::CONTENT_TYPE)
            {
                b = b.header(http::header::CONTENT_TYPE, *ct);
            }
            AsyncBody::from(bytes.clone())
        }
        None => AsyncBody::empty(),
    };
    let req = match b.body(body) {
        Ok(r) => r,
        Err(e) => {
            return Reply {
                result: "connection_failed",
                exception: Some(format!("invalid request: {e}")),
                ..Reply::default()
            }
        }
    };
    let mut resp = match client.send_async(req).await {
        Ok(r) => r,
        Err(e) => {
            return Reply {
                result: error_result(&e),
                exception: Some(e.to_string()),
                timings_ms: [ms(dns), 0.0, 0.0, 0.0, ms(started.elapsed())],
                ..Reply::default()
            }
        }
    };
    let mut reply = Reply {
        status: Some(resp.status().as_u16()),
        result: "success",
        ..Reply::default()
    };
    for (k, v) in resp.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match reply.headers.get_mut(k.as_str()) {
            Some(serde_json::Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                reply.headers.insert(k.as_str().to_string(), v.into());
            }
        }
    }
    let declared = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // Read at most max_body_bytes (+1 to notice a larger body) straight into
    // the reply: no fixed read buffer in the request's future, which would
    // count once per request waiting for a worker.
    let limit = t.max_body_bytes.saturating_add(1);
    reply
        .body
        .reserve(declared.unwrap_or(0).min(limit).min(64 << 10) as usize);
    let outcome = (&mut *resp.body_mut())
        .take(limit)
        .read_to_end(&mut reply.body)
        .await;
    let read = reply.body.len() as u64;
    match outcome {
        Ok(_) if read > t.max_body_bytes => {
            reply.body.truncate(t.max_body_bytes as usize);
            reply.result = "body_too_large";
            reply.exception = Some(format!(
                "response body larger than max_body_bytes ({})",
                t.max_body_bytes
            ));
        }
        Ok(_) => {}
        Err(e) => {
            reply.result = if e.kind() == std::io::ErrorKind::TimedOut {
                "timeout"
            } else {
                "connection_failed"
            };
            reply.exception = Some(format!("reading the body failed: {e}"));
        }
    }
    reply.content_length = declared.unwrap_or(read);
    let total = started.elapsed();
    if let Some(m) = resp.metrics() {
        let lookup = dns + m.name_lookup_time();
        reply.timings_ms = [
            ms(lookup),
            // libcurl's connect time is sometimes a microsecond below its
            // name look-up time; the timings are cumulative.
            ms((dns + m.connect_time()).max(lookup)),
            ms(dns + m.secure_connect_time()),
            ms(dns + m.transfer_start_time()),
            ms(dns + m.total_time().max(Duration::ZERO)),
        ];
    } else {
        reply.timings_ms[4] = ms(total);
    }
    reply
}

/// The first request and up to `retry.attempts` more while the status
/// (504 for no response) is one of `retry.statuses`.
async fn check(client: &HttpClient, t: &Target) -> (Reply, u32) {
    let mut tries = 0;
    loop {
        tries += 1;
        let r = request_once(client, t).await;
        let status = r.status.map(i64::from).unwrap_or(NO_RESPONSE_STATUS);
        let retryable = t.retry.statuses.iter().any(|s| i64::from(*s) == status);
        if !retryable || tries > t.retry.attempts {
            return (r, tries);
        }
        // A short, growing pause so a restarting server gets a moment.
        tokio::time::sleep(Duration::from_millis(100) * tries).await;
    }
}

impl Input for Curl {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        if self.client.is_none() {
            // Every request opens its own connection and closes it when
            // done (no connection cache): each open socket is one request
            // holding one permit of the descriptor budget, no idle cached
            // socket sits outside it, and `connect_ms`/`tls_ms` measure a
            // real connect on every check, as PyAgent's did.
            let client = HttpClient::builder()
                .connection_cache_size(0)
                .max_connections(self.worker_limit)
                .build()
                .map_err(|e| PluginError::context("cannot start the HTTP client", e))?;
            self.client = Some(client);
        }
        let Some(client) = self.client.as_ref() else {
            return Ok(());
        };
        // At most `worker_limit` checks exist at once (a check holds a
        // request, its buffers and its body); each reply becomes its metric
        // as soon as it arrives, and the metrics are added in the targets'
        // order as soon as every earlier target's is in: only replies that
        // overtook a slower one wait (the accumulator hands metrics on
        // during the gather, so 10,000 targets are not all held to the end).
        let mut metrics: std::collections::VecDeque<Option<Metric>> =
            std::collections::VecDeque::new();
        let mut first_waiting = 0;
        let mut pending = self.targets.iter().enumerate();
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < self.worker_limit {
                let Some((i, t)) = pending.next() else { break };
                running.push(async move { (i, check(client, t).await) });
            }
            let Some((i, (reply, tries))) = running.next().await else {
                break;
            };
            let slot = i - first_waiting;
            if metrics.len() <= slot {
                metrics.resize_with(slot + 1, || None);
            }
            metrics[slot] = Some(to_metric(
                acc.metric(),
                &self.targets[i],
                reply,
                tries,
                self.response_max_bytes,
            ));
            while let Some(Some(_)) = metrics.front() {
                if let Some(Some(m)) = metrics.pop_front() {
                    acc.add(m);
                }
                first_waiting += 1;
            }
        }
        Ok(())
    }
}

/// One target's metric from its reply.
fn to_metric(mut m: Metric, t: &Target, r: Reply, tries: u32, response_max_bytes: usize) -> Metric {
    m.fields.reserve(18);
    m.push_field("tag", t.tag.as_str());
    m.push_field("url", t.url.as_str());
    m.push_field("method", t.method.as_str().to_ascii_lowercase());
    m.push_field("host", t.host.as_str());
    m.push_field(
        "status",
        r.status.map(i64::from).unwrap_or(NO_RESPONSE_STATUS),
    );
    let text = String::from_utf8_lossy(&r.body);
    m.push_field("response", truncate(&text, response_max_bytes));
    m.push_field("headers", serde_json::Value::Object(r.headers).to_string());
    if let Some(e) = &r.exception {
        m.push_field("exception", e.as_str());
    }
    m.push_field("content_length", r.content_length);
    for (k, v) in ["dns_ms", "connect_ms", "tls_ms", "ttfb_ms", "total_ms"]
        .iter()
        .zip(r.timings_ms)
    {
        m.push_field(*k, v);
    }
    m.push_field("result", r.result);
    m.push_field("attempts", tries);
    if t.merge_response && r.status.is_some() {
        merge_json(&mut m, &r.body);
    }
    m
}

pub fn register(r: &mut Registry) {
    r.add_input(
        "curl",
        "HTTP checks: status, body, headers and timings per URL",
        include_str!("sample.yaml"),
        Curl::from_config,
    );
}

#[cfg(test)]
mod tests;
