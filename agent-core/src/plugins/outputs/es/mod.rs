//! `es`: PyAgent's Elasticsearch output. Every flush POSTs a JSON array of
//! flat metric objects to `url` with `{es_index}` replaced by `index`
//! (metrics) or `index_alarm` (alarms). With `format: bulk` it speaks the
//! Elasticsearch/OpenSearch `_bulk` API instead (NDJSON action + document
//! lines) and handles per-item errors.
use crate::format::json;
use crate::metric::{Metric, MetricKind};
use crate::plugin::{Output, PluginError, PluginResult};
use crate::plugins::common::http_client::{self as client, basic_auth, Client, ClientSettings};
use crate::registry::Registry;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// PyAgent's: a JSON array per index.
    #[default]
    #[serde(alias = "array")]
    Pyagent,
    /// `_bulk` NDJSON.
    Bulk,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BulkAction {
    #[default]
    Index,
    /// Needed for data streams; a 409 (already there) counts as delivered.
    Create,
}

fn d_index() -> String {
    "monitor_metric".into()
}
fn d_index_alarm() -> String {
    "monitor_metric_alarm".into()
}
fn d_retries() -> u32 {
    3
}

#[derive(Debug, Clone, Deserialize)]
pub struct EsConfig {
    pub url: String,
    #[serde(default = "d_index")]
    pub index: String,
    #[serde(default = "d_index_alarm")]
    pub index_alarm: String,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub bulk_action: BulkAction,
    /// Bulk items refused with 429/5xx are sent again this many times
    /// within one write before the write fails.
    #[serde(default = "d_retries")]
    pub bulk_retries: u32,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(flatten)]
    pub client: ClientSettings,
}

pub struct EsOutput {
    config: EsConfig,
    client: Option<Client>,
    json: json::Encoder,
    rejected: u64,
    reject_log: crate::plugin::RateLimitedLog,
}

impl EsOutput {
    pub fn new(cfg: &crate::config::PluginConfig) -> PluginResult<Self> {
        // The flattened client settings hide skipped keys: declare them.
        let mut keys = vec![
            "url",
            "index",
            "index_alarm",
            "format",
            "bulk_action",
            "bulk_retries",
            "username",
            "password",
        ];
        keys.extend_from_slice(crate::config::struct_fields::<ClientSettings>());
        let config: EsConfig = cfg.parse_with_keys(&keys)?;
        let probe = config.url.replace("{es_index}", "x");
        client::validate_url(cfg, "url", &probe)?;
        client::validate(cfg, &config.client)?;
        if config.bulk_retries > 100 {
            return Err(cfg
                .error(
                    "bulk_retries",
                    format!("must be between 0 and 100, got {}", config.bulk_retries),
                )
                .into());
        }
        for (key, v) in [
            ("index", &config.index),
            ("index_alarm", &config.index_alarm),
        ] {
            if v.is_empty() || v.contains(['/', '?', '#', ' ', '"']) {
                return Err(cfg
                    .error(key, format!("`{v}` is not a valid index name"))
                    .into());
            }
        }
        Ok(EsOutput {
            config,
            client: None,
            json: json::Encoder::new(false),
            rejected: 0,
            reject_log: crate::plugin::RateLimitedLog::new(cfg.log().clone(), "es output"),
        })
    }

    fn url(&self, index: &str) -> String {
        self.config.url.replace("{es_index}", index)
    }

    fn auth(&self) -> Vec<(&'static str, String)> {
        match &self.config.username {
            Some(u) => vec![(
                "Authorization",
                basic_auth(u, self.config.password.as_deref().unwrap_or("")),
            )],
            None => Vec::new(),
        }
    }

    fn client(&self) -> PluginResult<&Client> {
        self.client
            .as_ref()
            .ok_or_else(|| PluginError::msg("not connected"))
    }

    async fn post_array(&mut self, index: &str, metrics: &[&Metric]) -> PluginResult {
        if metrics.is_empty() {
            return Ok(());
        }
        let mut body = String::with_capacity(metrics.len() * 256);
        body.push('[');
        for (i, m) in metrics.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            self.json.write_object(m, &mut body);
        }
        body.push(']');
        let url = self.url(index);
        let reply = self
            .client()?
            .post(&url, "application/json", body.into_bytes(), &self.auth())
            .await?;
        if !reply.ok() {
            return Err(PluginError::msg(format!(
                "{url} answered HTTP {}: {}",
                reply.status,
                reply.snippet()
            )));
        }
        Ok(())
    }

    async fn write_pyagent(&mut self, batch: &[Metric]) -> PluginResult {
        let (alarms, metrics): (Vec<&Metric>, Vec<&Metric>) =
            batch.iter().partition(|m| m.kind == MetricKind::Alarm);
        let (index, index_alarm) = (self.config.index.clone(), self.config.index_alarm.clone());
        self.post_array(&index, &metrics).await?;
        self.post_array(&index_alarm, &alarms).await
    }

    /// One action + document pair per metric.
    fn bulk_docs(&mut self, batch: &[Metric]) -> Vec<String> {
        let action = match self.config.bulk_action {
            BulkAction::Index => "index",
            BulkAction::Create => "create",
        };
        batch
            .iter()
            .map(|m| {
                let mut doc = String::with_capacity(256);
                self.json.write_object(m, &mut doc);
                let index = match m.kind {
                    MetricKind::Alarm => &self.config.index_alarm,
                    MetricKind::Metric => &self.config.index,
                };
                // A content-derived id makes a re-sent batch overwrite
                // instead of duplicating.
                let id = doc_id(index, &doc);
                let mut pair = String::with_capacity(doc.len() + 96);
                pair.push_str("{\"");
                pair.push_str(action);
                pair.push_str("\":{\"_index\":");
                json::push_str(&mut pair, index);
                pair.push_str(",\"_id\":\"");
                pair.push_str(&id);
                pair.push_str("\"}}\n");
                pair.push_str(&doc);
                pair.push('\n');
                pair
            })
            .collect()
    }

    async fn write_bulk(&mut self, batch: &[Metric]) -> PluginResult {
        let docs = self.bulk_docs(batch);
        let mut todo: Vec<usize> = (0..docs.len()).collect();
        let url = self.url(&self.config.index);
        let mut attempt = 0;
        loop {
            let body: String = todo.iter().map(|&i| docs[i].as_str()).collect();
            let reply = self
                .client()?
                .post(
                    &url,
                    "application/x-ndjson",
                    body.into_bytes(),
                    &self.auth(),
                )
                .await?;
            if !reply.ok() {
                return Err(PluginError::msg(format!(
                    "{url} answered HTTP {}: {}",
                    reply.status,
                    reply.snippet()
                )));
            }
            let outcome = bulk_outcome(&reply.body, todo.len(), self.config.bulk_action)?;
            let mut retry = Vec::new();
            let mut rejected: Vec<String> = Vec::new();
            for (pos, item) in outcome.into_iter().enumerate() {
                match item {
                    Item::Ok => {}
                    Item::Retry(_) => retry.push(todo[pos]),
                    Item::Rejected(why) => rejected.push(why),
                }
            }
            self.report_rejected(&rejected);
            if retry.is_empty() {
                return Ok(());
            }
            attempt += 1;
            if attempt > self.config.bulk_retries {
                return Err(PluginError::msg(format!(
                    "{url}: {} of {} bulk items still refused after {} retries (429/5xx); the batch will be sent again",
                    retry.len(),
                    docs.len(),
                    self.config.bulk_retries
                )));
            }
            tokio::time::sleep(Duration::from_millis(250 << attempt.min(5))).await;
            todo = retry;
        }
    }

    /// Items the server refused for good (mapping errors, bad documents):
    /// retrying cannot help, so they are counted and logged at most once a
    /// minute.
    fn report_rejected(&mut self, rejected: &[String]) {
        if rejected.is_empty() {
            return;
        }
        self.rejected += rejected.len() as u64;
        let total = self.rejected;
        self.reject_log.warn(|| {
            format!(
                "{} documents rejected by the server ({total} in total), first reason: {}",
                rejected.len(),
                rejected[0]
            )
        });
    }
}

/// 16 hex digits of FNV-1a 64 over index and document, plus the CRC32.
fn doc_id(index: &str, doc: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in index.bytes().chain([0]).chain(doc.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}{:08x}", crc32fast::hash(doc.as_bytes()))
}

#[derive(Debug, PartialEq)]
enum Item {
    Ok,
    Retry(String),
    Rejected(String),
}

/// Reads `_bulk`'s reply: one item per document, in order.
fn bulk_outcome(body: &[u8], expected: usize, action: BulkAction) -> PluginResult<Vec<Item>> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| PluginError::context("bulk reply is not JSON", e))?;
    if v.get("errors").and_then(|e| e.as_bool()) == Some(false) {
        return Ok((0..expected).map(|_| Item::Ok).collect());
    }
    let items = v
        .get("items")
        .and_then(|i| i.as_array())
        .ok_or_else(|| PluginError::msg("bulk reply has errors but no `items` array"))?;
    if items.len() != expected {
        return Err(PluginError::msg(format!(
            "bulk reply has {} items for {expected} documents",
            items.len()
        )));
    }
    Ok(items
        .iter()
        .map(|item| {
            let inner = item.as_object().and_then(|o| o.values().next());
            let status = inner
                .and_then(|i| i.get("status"))
                .and_then(|s| s.as_u64())
                .unwrap_or(0);
            let why = || {
                let e = inner.and_then(|i| i.get("error"));
                let reason = e
                    .and_then(|e| e.get("reason").and_then(|r| r.as_str()).map(str::to_string))
                    .or_else(|| e.map(|e| e.to_string()))
                    .unwrap_or_default();
                format!("status {status}: {reason}")
            };
            match status {
                200..=299 => Item::Ok,
                409 if action == BulkAction::Create => Item::Ok,
                429 | 500..=599 | 0 => Item::Retry(why()),
                _ => Item::Rejected(why()),
            }
        })
        .collect())
}

impl Output for EsOutput {
    async fn connect(&mut self) -> PluginResult {
        self.client = Some(Client::new(&self.config.client)?);
        Ok(())
    }

    async fn write(&mut self, batch: &[Metric]) -> PluginResult {
        match self.config.format {
            Format::Pyagent => self.write_pyagent(batch).await,
            Format::Bulk => self.write_bulk(batch).await,
        }
    }
}

pub fn register(r: &mut Registry) {
    r.add_output(
        "es",
        "Sends metrics and alarms to Elasticsearch/OpenSearch (PyAgent's JSON array, or _bulk NDJSON)",
        include_str!("sample.yaml"),
        EsOutput::new,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PluginConfig;
    use crate::plugins::common::http_test_server::TestServer;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn batch() -> Vec<Metric> {
        let mut alarm = Metric::new("mem", 1_636_361_935_000_000_000)
            .with_tag("node_ip", "10.0.0.5")
            .with_field("code", "monitor_metric_alarm")
            .with_field("info", "内存占用率过高(%): 91.2>=90");
        alarm.kind = MetricKind::Alarm;
        vec![
            alarm,
            Metric::new("mem", 1_636_361_935_000_000_000)
                .with_tag("node_ip", "10.0.0.5")
                .with_tag("host_name", "web1")
                .with_field("total", 8_348_397_568u64)
                .with_field("percent", 91.2)
                .with_field("human_total", "7.8 GB"),
            Metric::new("cpu", 1_636_361_935_000_000_000).with_field("percent", 3.0),
        ]
    }

    fn output(yaml: &str) -> EsOutput {
        EsOutput::new(&PluginConfig::from_value(
            "es",
            serde_yaml_ng::from_str(yaml).unwrap(),
        ))
        .unwrap()
    }

    #[actix_rt::test]
    async fn pyagent_arrays_per_index() {
        std::env::set_var("TZ", "UTC");
        let srv = TestServer::start();
        srv.respond(|_| (200, "{\"code\":0}".into()));
        let mut out = output(&format!(
            "url: {}\ninterval: 30\n",
            srv.url("/v1/{es_index}/bulk")
        ));
        out.connect().await.unwrap();
        out.write(&batch()).await.unwrap();
        let reqs = srv.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].target, "/v1/monitor_metric/bulk");
        assert_eq!(reqs[1].target, "/v1/monitor_metric_alarm/bulk");
        let metrics: serde_json::Value = serde_json::from_str(&reqs[0].body()).unwrap();
        assert_eq!(
            metrics[0],
            serde_json::json!({"name":"mem","time":"2021-11-08T08:58:55+00:00","timestamp":1636361935,
                "node_ip":"10.0.0.5","host_name":"web1","total":8348397568u64,"percent":91.2,"human_total":"7.8 GB"})
        );
        // Key order is PyAgent's: name, time, timestamp, info keys, data.
        assert!(reqs[0].body().starts_with("[{\"name\":\"mem\",\"time\":"));
        assert_eq!(metrics.as_array().unwrap().len(), 2);
        let alarms: serde_json::Value = serde_json::from_str(&reqs[1].body()).unwrap();
        assert_eq!(alarms.as_array().unwrap().len(), 1);
        assert_eq!(alarms[0]["info"], "内存占用率过高(%): 91.2>=90");
    }

    #[actix_rt::test]
    async fn failed_post_fails_the_write() {
        let srv = TestServer::start();
        srv.respond(|_| (500, "boom".into()));
        let mut out = output(&format!("url: {}\n", srv.url("/v1/{es_index}/bulk")));
        out.connect().await.unwrap();
        let e = out.write(&batch()).await.unwrap_err().to_string();
        assert!(e.contains("HTTP 500") && e.contains("boom"), "{e}");
    }

    fn parse_bulk(body: &str) -> Vec<(serde_json::Value, serde_json::Value)> {
        let lines: Vec<&str> = body.split_terminator('\n').collect();
        assert_eq!(lines.len() % 2, 0, "{body}");
        lines
            .chunks(2)
            .map(|c| {
                (
                    serde_json::from_str(c[0]).unwrap(),
                    serde_json::from_str(c[1]).unwrap(),
                )
            })
            .collect()
    }

    #[actix_rt::test]
    async fn bulk_ndjson_retries_only_refused_items() {
        let srv = TestServer::start();
        let calls = Arc::new(AtomicUsize::new(0));
        let c2 = calls.clone();
        srv.respond(move |req| {
            let n = c2.fetch_add(1, Ordering::SeqCst);
            let docs = parse_bulk(&req.body());
            let items: Vec<String> = docs
                .iter()
                .enumerate()
                .map(|(i, (_, doc))| {
                    if doc["name"] == "cpu" {
                        r#"{"index":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"bad field"}}}"#.to_string()
                    } else if n == 0 && i == 0 {
                        r#"{"index":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}}"#.to_string()
                    } else {
                        r#"{"index":{"status":201}}"#.to_string()
                    }
                })
                .collect();
            (200, format!("{{\"took\":1,\"errors\":true,\"items\":[{}]}}", items.join(",")))
        });
        let mut out = output(&format!(
            "url: {}\nformat: bulk\nusername: elastic\npassword: pw\n",
            srv.url("/_bulk")
        ));
        out.connect().await.unwrap();
        out.write(&batch()).await.unwrap();
        let reqs = srv.requests();
        assert_eq!(reqs.len(), 2, "one retry for the 429 item");
        assert_eq!(reqs[0].header("content-type"), Some("application/x-ndjson"));
        assert_eq!(
            reqs[0].header("authorization"),
            Some("Basic ZWxhc3RpYzpwdw==")
        );
        let first = parse_bulk(&reqs[0].body());
        assert_eq!(first.len(), 3);
        assert_eq!(first[0].0["index"]["_index"], "monitor_metric_alarm");
        assert_eq!(first[1].0["index"]["_index"], "monitor_metric");
        assert_eq!(first[1].1["total"], 8_348_397_568u64);
        assert_eq!(first[0].0["index"]["_id"].as_str().unwrap().len(), 24);
        let second = parse_bulk(&reqs[1].body());
        assert_eq!(second.len(), 1);
        assert_eq!(second[0], first[0], "the refused alarm, with the same _id");
        assert_eq!(out.rejected, 1, "the 400 item is reported, not retried");
    }

    #[actix_rt::test]
    async fn bulk_items_refused_every_time_fail_the_write() {
        let srv = TestServer::start();
        srv.respond(|req| {
            let n = parse_bulk(&req.body()).len();
            let items = vec![r#"{"create":{"status":503}}"#; n].join(",");
            (200, format!("{{\"errors\":true,\"items\":[{items}]}}"))
        });
        let mut out = output(&format!(
            "url: {}\nformat: bulk\nbulk_action: create\nbulk_retries: 1\n",
            srv.url("/_bulk")
        ));
        out.connect().await.unwrap();
        let e = out.write(&batch()).await.unwrap_err().to_string();
        assert!(e.contains("3 of 3 bulk items still refused"), "{e}");
        assert_eq!(srv.requests().len(), 2);
        assert!(srv.requests()[0].body().starts_with("{\"create\":"));
    }

    #[test]
    fn pyagent_interval_sets_the_flush_period() {
        let cfg = PluginConfig::from_value(
            "es",
            serde_yaml_ng::from_str("index: monitor_metric\nindex_alarm: monitor_metric_alarm\nurl: http://127.0.0.1:9/v1/{es_index}/bulk\ninterval: 30\n").unwrap(),
        );
        let settings: crate::config::OutputSettings = cfg.parse().unwrap();
        assert_eq!(settings.flush_every(), Duration::from_secs(30));
        assert_eq!(settings.batch_size, 1000);
        assert_eq!(settings.buffer_limit, 10_000);
        assert!(EsOutput::new(&cfg).is_ok());
        let bad = PluginConfig::from_value(
            "es",
            serde_yaml_ng::from_str("url: http://x/{es_index}\nindex: 'a/b'\n").unwrap(),
        );
        let e = EsOutput::new(&bad).err().unwrap().to_string();
        assert!(e.contains("index"), "{e}");
    }

    #[test]
    fn bulk_reply_parsing() {
        let ok = bulk_outcome(br#"{"errors":false,"items":[]}"#, 2, BulkAction::Index).unwrap();
        assert_eq!(ok, vec![Item::Ok, Item::Ok]);
        let mixed = bulk_outcome(
            br#"{"errors":true,"items":[{"create":{"status":409}},{"create":{"status":400,"error":{"reason":"x"}}}]}"#,
            2,
            BulkAction::Create,
        )
        .unwrap();
        assert_eq!(
            mixed,
            vec![Item::Ok, Item::Rejected("status 400: x".into())]
        );
        assert!(bulk_outcome(b"not json", 1, BulkAction::Index).is_err());
        assert!(bulk_outcome(br#"{"errors":true,"items":[]}"#, 1, BulkAction::Index).is_err());
    }
}
