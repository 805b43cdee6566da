//! `kafka`: one message per metric to a Kafka topic, through librdkafka
//! (rdkafka, built from its bundled source). A batch is acknowledged only
//! when the broker has acknowledged every message of it (with
//! `required_acks: all`, every in-sync replica has it); a message that
//! librdkafka could not deliver within `timeout` fails the write, and the
//! core retries the batch. librdkafka reconnects by itself after a broker
//! restart, so the output never hangs on a dead connection.
//!
//! Behind the cargo feature `kafka` (the .deb build enables it): librdkafka
//! adds more to the binary than the default build's budget allows.
use crate::config::Seconds;
use crate::format::{json, line_protocol};
use crate::metric::Metric;
use crate::plugin::{Output, PluginError, PluginResult};
use crate::registry::Registry;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use serde::Deserialize;
use std::time::Duration;

#[cfg(test)]
mod tests;

fn d_topic() -> String {
    "agent".into()
}
fn d_key() -> String {
    "host_name".into()
}
fn d_timeout() -> Seconds {
    Seconds::from_secs(30)
}

/// Message format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One flat JSON object (the http output's objects, with `kind`).
    #[default]
    Json,
    /// InfluxDB line protocol (dimensional, nanoseconds): one line, or one
    /// per series of the input's schema.
    #[serde(alias = "line_protocol", alias = "influxdb")]
    Influx,
}

/// librdkafka's `compression.type` (zstd is not built in).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
        }
    }
}

/// `all` (or -1), 1 or 0.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Acks {
    Number(i64),
    Word(String),
}

impl Default for Acks {
    fn default() -> Self {
        Acks::Word("all".into())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Topic, with `{name}` and `{<tag>}` replaced per metric.
    #[serde(default = "d_topic")]
    pub topic: String,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub required_acks: Acks,
    /// The tag whose value is the message key (empty: no key).
    #[serde(default = "d_key")]
    pub key: String,
    /// librdkafka's `client.id`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Delivery timeout of one message (`message.timeout.ms`), seconds.
    #[serde(default = "d_timeout")]
    pub timeout: Seconds,
}

/// A piece of the topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Name,
    Tag(String),
}

/// Characters Kafka allows in a topic name.
fn topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn parse_template(t: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = t;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            Some(i) if rest.as_bytes()[i] == b'}' => {
                return Err(format!("`}}` without `{{` in `{t}`"));
            }
            Some(i) => {
                if i > 0 {
                    parts.push(Part::Text(rest[..i].to_string()));
                }
                let Some(close) = rest[i..].find('}') else {
                    return Err(format!("`{{` without `}}` in `{t}`"));
                };
                let inner = &rest[i + 1..i + close];
                if inner.is_empty() || !inner.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    return Err(format!(
                        "`{{{inner}}}` is not `{{name}}` or `{{<tag>}}` in `{t}`"
                    ));
                }
                parts.push(if inner == "name" {
                    Part::Name
                } else {
                    Part::Tag(inner.to_string())
                });
                rest = &rest[i + close + 1..];
            }
            None => {
                parts.push(Part::Text(rest.to_string()));
                rest = "";
            }
        }
    }
    for p in &parts {
        if let Part::Text(s) = p {
            if let Some(c) = s.chars().find(|c| !topic_char(*c)) {
                return Err(format!(
                    "`{c}` cannot be in a topic name (letters, digits, `.`, `_`, `-`)"
                ));
            }
        }
    }
    if parts.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(parts)
}

/// The topic of `m`: values replaced, characters Kafka refuses made `_`,
/// a missing tag empty; at most 249 characters.
fn render_topic(parts: &[Part], m: &Metric, out: &mut String) {
    out.clear();
    for p in parts {
        let v = match p {
            Part::Text(s) => {
                out.push_str(s);
                continue;
            }
            Part::Name => m.name.as_str(),
            Part::Tag(t) => m.tag(t).unwrap_or(""),
        };
        out.extend(v.chars().map(|c| if topic_char(c) { c } else { '_' }));
    }
    if out.is_empty() || out == "." || out == ".." {
        out.push('_');
    }
    if out.len() > 249 {
        out.truncate(249);
    }
}

fn valid_broker(b: &str) -> bool {
    let Some((host, port)) = b.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    !host.is_empty() && !host.contains([',', ' ', '/']) && port.parse::<u16>().is_ok_and(|p| p > 0)
}

pub struct KafkaOutput {
    config: KafkaConfig,
    acks: &'static str,
    topic: Vec<Part>,
    producer: Option<FutureProducer>,
    json: json::Encoder,
    payload: String,
    topic_buf: String,
}

impl KafkaOutput {
    pub fn new(cfg: &crate::config::PluginConfig) -> PluginResult<Self> {
        let config: KafkaConfig = cfg.parse()?;
        if config.brokers.is_empty() {
            return Err(cfg.error("brokers", "list at least one host:port").into());
        }
        for (i, b) in config.brokers.iter().enumerate() {
            if !valid_broker(b) {
                return Err(cfg
                    .error(&format!("brokers[{i}]"), format!("`{b}` is not host:port"))
                    .into());
            }
        }
        let topic = parse_template(&config.topic).map_err(|r| cfg.error("topic", r))?;
        let acks = match &config.required_acks {
            Acks::Word(w) if w == "all" => "all",
            Acks::Number(-1) => "all",
            Acks::Number(1) => "1",
            Acks::Number(0) => "0",
            other => {
                return Err(cfg
                    .error(
                        "required_acks",
                        format!("must be all, -1, 1 or 0, got {other:?}"),
                    )
                    .into())
            }
        };
        // Below the core's 60 s write limit, so librdkafka answers first.
        config
            .timeout
            .within(0.001, 55.0)
            .map_err(|r| cfg.error("timeout", r))?;
        if config.key.chars().any(char::is_control) {
            return Err(cfg
                .error("key", "must not contain control characters")
                .into());
        }
        if let Some(id) = &config.client_id {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_graphic()) {
                return Err(cfg
                    .error("client_id", "printable ASCII without spaces, not empty")
                    .into());
            }
        }
        Ok(KafkaOutput {
            config,
            acks,
            topic,
            producer: None,
            json: json::Encoder::new(true),
            payload: String::new(),
            topic_buf: String::new(),
        })
    }

    fn client_config(&self) -> ClientConfig {
        let c = &self.config;
        let timeout_ms = (c.timeout.as_secs_f64() * 1000.0).ceil().max(1.0) as u64;
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", c.brokers.join(","))
            .set("acks", self.acks)
            .set("compression.type", c.compression.as_str())
            .set("message.timeout.ms", timeout_ms.to_string())
            // A broker restart within the timeout costs no duplicates.
            .set("enable.idempotence", (self.acks == "all").to_string())
            .set("client.id", c.client_id.as_deref().unwrap_or("agent"))
            .set("log_level", "3");
        cc
    }

    fn encode(&mut self, m: &Metric) -> bool {
        self.payload.clear();
        match self.config.format {
            Format::Json => {
                self.json.write_object(m, &mut self.payload);
                true
            }
            Format::Influx => {
                let ok = line_protocol::write_metric(
                    m,
                    &line_protocol::Options::dimensional(),
                    &mut self.payload,
                );
                if self.payload.ends_with('\n') {
                    self.payload.pop();
                }
                ok
            }
        }
    }
}

/// Waits for every pending delivery; the first failure, if any.
async fn settle(pending: &mut Vec<DeliveryFuture>, first_err: &mut Option<String>) {
    for f in pending.drain(..) {
        let err = match f.await {
            Ok(Ok(_)) => continue,
            Ok(Err((e, _))) => e.to_string(),
            Err(_) => "producer closed before delivery".to_string(),
        };
        first_err.get_or_insert(err);
    }
}

impl Output for KafkaOutput {
    async fn connect(&mut self) -> PluginResult {
        let producer: FutureProducer = self
            .client_config()
            .create()
            .map_err(|e| PluginError::context("cannot create the Kafka producer", e))?;
        self.producer = Some(producer);
        Ok(())
    }

    async fn write(&mut self, batch: &[Metric]) -> PluginResult {
        let Some(producer) = self.producer.clone() else {
            return Err(PluginError::msg("not connected"));
        };
        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(batch.len());
        let mut first_err = None;
        for m in batch {
            if !self.encode(m) {
                continue;
            }
            let mut topic = std::mem::take(&mut self.topic_buf);
            render_topic(&self.topic, m, &mut topic);
            let key = if self.config.key.is_empty() {
                None
            } else {
                m.tag(&self.config.key)
            };
            let mut record = FutureRecord::to(&topic)
                .payload(self.payload.as_bytes())
                .timestamp(m.timestamp_ns.div_euclid(1_000_000));
            if let Some(k) = key {
                record = record.key(k.as_bytes());
            }
            loop {
                match producer.send_result(record) {
                    Ok(f) => {
                        pending.push(f);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // librdkafka's queue is full: let it drain, resend.
                        record = r;
                        if pending.is_empty() {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        settle(&mut pending, &mut first_err).await;
                    }
                    Err((e, _)) => {
                        first_err.get_or_insert(e.to_string());
                        break;
                    }
                }
            }
            self.topic_buf = topic;
        }
        settle(&mut pending, &mut first_err).await;
        match first_err {
            None => Ok(()),
            Some(e) => Err(PluginError::msg(format!(
                "Kafka did not acknowledge the batch: {e}"
            ))),
        }
    }

    async fn close(&mut self) -> PluginResult {
        if let Some(p) = self.producer.take() {
            // Everything written was acknowledged already; this only lets
            // librdkafka finish its own requests.
            let _ = tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(2))).await;
        }
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_output(
        "kafka",
        "Produces one message per metric to a Kafka topic (librdkafka)",
        include_str!("sample.yaml"),
        KafkaOutput::new,
    );
}
