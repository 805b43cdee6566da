//! `nats`: one message per metric to NATS, on core NATS (acknowledged by a
//! PING/PONG round trip after the batch: the server has processed every
//! message before it) or JetStream (each message acknowledged by its
//! PubAck, with a `Nats-Msg-Id` derived from the metric so a replayed batch
//! is de-duplicated by the server).
//!
//! The client is written here: the text protocol the output needs (INFO,
//! CONNECT, PUB, HPUB, SUB, MSG, HMSG, PING, PONG, +OK, -ERR) is small, and
//! async-nats would bring its own TLS stack and dozens of crates.
mod protocol;
#[cfg(test)]
mod tests;

use crate::config::Seconds;
use crate::metric::{FieldValue, Metric};
use crate::plugin::{Output, PluginError, PluginResult, RateLimitedLog};
use crate::plugins::common::net::{self, Server, TlsSettings};
use crate::plugins::common::template::{PayloadEncoder, PayloadFormat, Template};
use crate::registry::Registry;
use protocol::{Conn, Reply};
use serde::Deserialize;
use std::time::Duration;

const SCHEMES: &[(&str, bool, u16)] = &[("nats", false, 4222), ("tls", true, 4222)];

fn d_servers() -> Vec<String> {
    vec!["nats://127.0.0.1:4222".into()]
}
fn d_subject() -> String {
    "agent.{host_name}.{name}".into()
}
fn d_timeout() -> Seconds {
    Seconds::from_secs(10)
}
fn d_connect_timeout() -> Seconds {
    Seconds::from_secs(5)
}
fn d_window() -> Seconds {
    Seconds::from_secs(120)
}
fn d_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
pub struct JetStreamConfig {
    /// The stream the messages go to.
    pub stream: String,
    /// Its subjects when it is created; default: the `subject` template
    /// with each placeholder token as `*`.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Create the stream when it does not exist.
    #[serde(default = "d_true")]
    pub create: bool,
    /// The de-duplication window of a created stream (the server's default
    /// is 2 minutes): a batch replayed later than this after a crash is
    /// stored again.
    #[serde(default = "d_window")]
    pub duplicate_window: Seconds,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NatsConfig {
    #[serde(default = "d_servers")]
    pub servers: Vec<String>,
    #[serde(default = "d_subject")]
    pub subject: String,
    #[serde(default)]
    pub format: PayloadFormat,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub jetstream: Option<JetStreamConfig>,
    /// Seconds for a batch to be acknowledged.
    #[serde(default = "d_timeout")]
    pub timeout: Seconds,
    /// Seconds to connect: TCP, TLS, the server's INFO and our CONNECT.
    #[serde(default = "d_connect_timeout")]
    pub connect_timeout: Seconds,
    #[serde(flatten)]
    pub tls: TlsSettings,
}

pub struct NatsOutput {
    config: NatsConfig,
    servers: Vec<Server>,
    next_server: usize,
    subject: Template,
    stream_subjects: Vec<String>,
    timeout: Duration,
    connect_timeout: Duration,
    encoder: PayloadEncoder,
    conn: Option<Conn>,
    payload: String,
    subject_buf: String,
    /// Metrics the server refused for good (too large, rejected by the
    /// stream): dropped, counted and logged.
    refused: u64,
    /// JetStream PubAcks that said `duplicate`.
    duplicates: u64,
    refuse_log: RateLimitedLog,
    log: slog::Logger,
}

/// Replaces what a subject token cannot hold.
fn clean_subject(c: char) -> char {
    if c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>') {
        '_'
    } else {
        c
    }
}

/// Checks a subject (a literal one, or a template with placeholders filled).
fn valid_subject(s: &str, wildcards: bool) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{s}` holds whitespace"));
    }
    let tokens: Vec<&str> = s.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return Err(format!("`{s}` has an empty token"));
        }
        let wild = t.contains(['*', '>']);
        if wild && !wildcards {
            return Err(format!("`{s}`: wildcards cannot be published to"));
        }
        if wild && !(*t == "*" || (*t == ">" && i == tokens.len() - 1)) {
            return Err(format!(
                "`{s}`: `*` and `>` must be whole tokens, `>` the last"
            ));
        }
    }
    Ok(())
}

fn valid_stream_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\')
        })
}

/// The `Nats-Msg-Id` of a metric: MD5 of its name, kind, tags, timestamp
/// and field values (typed), so the same metric replayed from the disk
/// buffer carries the same id and a different one never does.
pub fn msg_id(m: &Metric) -> String {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    let mut put = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    put(m.name.as_bytes());
    put(m.kind.as_str().as_bytes());
    put(&m.timestamp_ns.to_le_bytes());
    for (k, v) in &m.tags {
        put(b"t");
        put(k.as_bytes());
        put(v.as_bytes());
    }
    for (k, v) in &m.fields {
        put(b"f");
        put(k.as_bytes());
        match v {
            FieldValue::Int(x) => put(&[&[b'i'][..], &x.to_le_bytes()].concat()),
            FieldValue::Uint(x) => put(&[&[b'u'][..], &x.to_le_bytes()].concat()),
            FieldValue::Float(x) => put(&[&[b'f'][..], &x.to_bits().to_le_bytes()].concat()),
            FieldValue::Bool(x) => put(&[b'b', *x as u8]),
            FieldValue::Str(s) => put(&[&[b's'][..], s.as_bytes()].concat()),
        }
    }
    let d = h.finalize();
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl NatsOutput {
    pub fn new(cfg: &crate::config::PluginConfig) -> PluginResult<Self> {
        let mut keys = vec![
            "servers",
            "subject",
            "format",
            "username",
            "password",
            "token",
            "jetstream",
            "timeout",
            "connect_timeout",
        ];
        keys.extend_from_slice(net::TLS_KEYS);
        let config: NatsConfig = cfg.parse_with_keys(&keys)?;
        // The nested block's typos are warned about too.
        if let Some(js @ serde_yaml_ng::Value::Mapping(_)) = cfg.value().get("jetstream").cloned() {
            cfg.child("jetstream", js, &cfg.instance).declare_keys(&[
                "stream",
                "subjects",
                "create",
                "duplicate_window",
            ]);
        }
        if config.servers.is_empty() {
            return Err(cfg
                .error("servers", "needs at least one nats:// server")
                .into());
        }
        if config.servers.len() > 1000 {
            return Err(cfg.error("servers", "at most 1000 servers").into());
        }
        let servers = config
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| net::parse_server(cfg, &format!("servers[{i}]"), s, SCHEMES))
            .collect::<Result<Vec<_>, _>>()?;
        let (timeout, connect_timeout) =
            net::timeouts(cfg, config.timeout, config.connect_timeout)?;
        config.tls.validate(cfg)?;
        if config.token.is_some() && config.username.is_some() {
            return Err(cfg
                .error("token", "set either username/password or token, not both")
                .into());
        }
        let subject = Template::parse(cfg, "subject", &config.subject)?;
        valid_subject(&subject.with_placeholders("x"), false)
            .map_err(|r| cfg.error("subject", r))?;
        let mut stream_subjects = Vec::new();
        if let Some(js) = &config.jetstream {
            if !valid_stream_name(&js.stream) {
                return Err(cfg
                    .error(
                        "jetstream.stream",
                        format!(
                            "`{}` is not a stream name (no spaces, `.`, `*`, `>`, `/`, `\\`)",
                            js.stream
                        ),
                    )
                    .into());
            }
            js.duplicate_window
                .within(0.001, 30.0 * 86400.0)
                .map_err(|r| cfg.error("jetstream.duplicate_window", r))?;
            stream_subjects = if js.subjects.is_empty() {
                // Each token holding a placeholder becomes `*`.
                vec![subject
                    .with_placeholders("\u{0}")
                    .split('.')
                    .map(|t| if t.contains('\u{0}') { "*" } else { t })
                    .collect::<Vec<_>>()
                    .join(".")]
            } else {
                js.subjects.clone()
            };
            for (i, s) in stream_subjects.iter().enumerate() {
                valid_subject(s, true)
                    .map_err(|r| cfg.error(&format!("jetstream.subjects[{i}]"), r))?;
            }
        }
        Ok(NatsOutput {
            encoder: PayloadEncoder::new(config.format),
            config,
            servers,
            next_server: 0,
            subject,
            stream_subjects,
            timeout,
            connect_timeout,
            conn: None,
            payload: String::new(),
            subject_buf: String::new(),
            refused: 0,
            duplicates: 0,
            refuse_log: RateLimitedLog::new(cfg.log().clone(), "nats output"),
            log: cfg.log().clone(),
        })
    }

    /// Connects to the next server of the list (each failure moves on).
    async fn open(&mut self) -> PluginResult<Conn> {
        let server = self.servers[self.next_server % self.servers.len()].clone();
        self.next_server = self.next_server.wrapping_add(1);
        let auth = protocol::Auth {
            user: server.user.clone().or_else(|| {
                self.config
                    .username
                    .clone()
                    .map(|u| (u, self.config.password.clone().unwrap_or_default()))
            }),
            token: self.config.token.clone(),
        };
        let tls = if server.tls || self.config.tls.configured() {
            Some(&self.config.tls)
        } else {
            None
        };
        let mut conn = tokio::time::timeout(
            self.connect_timeout,
            Conn::connect(&server, tls, &auth, self.config.jetstream.is_some()),
        )
        .await
        .map_err(|_| PluginError::msg(format!("connecting to {server} timed out")))??;
        if let Some(js) = &self.config.jetstream {
            let js = js.clone();
            tokio::time::timeout(
                self.timeout,
                ensure_stream(&mut conn, &js, &self.stream_subjects, &self.log),
            )
            .await
            .map_err(|_| {
                PluginError::msg(format!("JetStream stream check on {server} timed out"))
            })??;
        }
        Ok(conn)
    }

    async fn publish_core(&mut self, conn: &mut Conn, batch: &[Metric]) -> PluginResult {
        let max = conn.max_payload();
        for m in batch {
            if !self.encoder.encode(m, &mut self.payload) {
                continue;
            }
            if self.payload.len() > max {
                self.refuse(format!(
                    "a `{}` message of {} bytes is over the server's max_payload {max}",
                    m.name,
                    self.payload.len()
                ));
                continue;
            }
            self.subject_buf.clear();
            self.subject.render(m, clean_subject, &mut self.subject_buf);
            conn.queue_pub(&self.subject_buf, None, None, self.payload.as_bytes());
            // Bounded memory for a large batch.
            if conn.queued() > 64 * 1024 {
                conn.flush().await?;
            }
        }
        conn.flush_and_ping().await
    }

    async fn publish_js(&mut self, conn: &mut Conn, batch: &[Metric]) -> PluginResult {
        // Bounded in flight: a huge batch neither fills the server's
        // pending buffer nor our memory.
        const WINDOW: usize = 256;
        let max = conn.max_payload();
        let mut sent: Vec<(usize, String)> = Vec::with_capacity(WINDOW);
        let mut i = 0;
        while i < batch.len() {
            sent.clear();
            while i < batch.len() && sent.len() < WINDOW {
                let m = &batch[i];
                i += 1;
                if !self.encoder.encode(m, &mut self.payload) {
                    continue;
                }
                let id = msg_id(m);
                let headers = format!("NATS/1.0\r\nNats-Msg-Id: {id}\r\n\r\n");
                if self.payload.len() + headers.len() > max {
                    self.refuse(format!(
                        "a `{}` message of {} bytes is over the server's max_payload {max}",
                        m.name,
                        self.payload.len()
                    ));
                    continue;
                }
                self.subject_buf.clear();
                self.subject.render(m, clean_subject, &mut self.subject_buf);
                let token = conn.next_token();
                conn.queue_pub(
                    &self.subject_buf,
                    Some(&token),
                    Some(headers.as_bytes()),
                    self.payload.as_bytes(),
                );
                sent.push((i - 1, token));
            }
            conn.flush().await?;
            let tokens: Vec<&str> = sent.iter().map(|(_, t)| t.as_str()).collect();
            let replies = conn.await_replies(&tokens).await?;
            for ((idx, _), reply) in sent.iter().zip(replies) {
                self.pub_ack(&batch[*idx], reply)?;
            }
        }
        Ok(())
    }

    /// Judges one PubAck: stored (or a duplicate of a stored one) is
    /// success; a refusal the stream will repeat (code 400: too large,
    /// wrong subject) drops the metric; anything else fails the batch.
    fn pub_ack(&mut self, m: &Metric, reply: Reply) -> PluginResult {
        match reply {
            Reply::NoResponders => Err(PluginError::msg(format!(
                "no JetStream stream listens on subject `{}`",
                {
                    let mut s = String::new();
                    self.subject.render(m, clean_subject, &mut s);
                    s
                }
            ))),
            Reply::Status(code, text) => Err(PluginError::msg(format!(
                "JetStream answered status {code} {text}"
            ))),
            Reply::Payload(body) => {
                let v: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| PluginError::context("PubAck is not JSON", e))?;
                if let Some(err) = v.get("error") {
                    let code = err.get("code").and_then(|c| c.as_u64()).unwrap_or(0);
                    let desc = err
                        .get("description")
                        .and_then(|d| d.as_str())
                        .unwrap_or("")
                        .to_string();
                    if code == 400 {
                        self.refuse(format!("the stream refused a `{}` message: {desc}", m.name));
                        return Ok(());
                    }
                    return Err(PluginError::msg(format!(
                        "JetStream refused a message ({code}): {desc}"
                    )));
                }
                if v.get("seq").and_then(|s| s.as_u64()).is_none() {
                    return Err(PluginError::msg(format!(
                        "PubAck without a sequence: {}",
                        String::from_utf8_lossy(&body)
                    )));
                }
                if v.get("duplicate").and_then(|d| d.as_bool()) == Some(true) {
                    self.duplicates += 1;
                }
                Ok(())
            }
        }
    }

    fn refuse(&mut self, why: String) {
        self.refused += 1;
        let n = self.refused;
        self.refuse_log
            .warn(|| format!("{why}; dropped ({n} metrics refused for good so far)"));
    }
}

/// Finds the stream, creating it when missing (and allowed).
async fn ensure_stream(
    conn: &mut Conn,
    js: &JetStreamConfig,
    subjects: &[String],
    log: &slog::Logger,
) -> PluginResult {
    let info = conn
        .request(&format!("$JS.API.STREAM.INFO.{}", js.stream), b"")
        .await?;
    let v = js_reply(info, "STREAM.INFO")?;
    let Some(err) = v.get("error") else {
        return Ok(());
    };
    let code = err.get("code").and_then(|c| c.as_u64()).unwrap_or(0);
    if code != 404 {
        return Err(PluginError::msg(format!(
            "JetStream STREAM.INFO {}: {err}",
            js.stream
        )));
    }
    if !js.create {
        return Err(PluginError::msg(format!(
            "JetStream stream `{}` does not exist (jetstream.create is false)",
            js.stream
        )));
    }
    let body = serde_json::json!({
        "name": js.stream,
        "subjects": subjects,
        "storage": "file",
        "duplicate_window": js.duplicate_window.as_duration().as_nanos() as u64,
    });
    let created = conn
        .request(
            &format!("$JS.API.STREAM.CREATE.{}", js.stream),
            body.to_string().as_bytes(),
        )
        .await?;
    let v = js_reply(created, "STREAM.CREATE")?;
    if let Some(err) = v.get("error") {
        return Err(PluginError::msg(format!(
            "JetStream STREAM.CREATE {}: {err}",
            js.stream
        )));
    }
    slog::info!(log, "created JetStream stream"; "stream" => &js.stream, "subjects" => subjects.join(","));
    Ok(())
}

fn js_reply(reply: Reply, what: &str) -> PluginResult<serde_json::Value> {
    match reply {
        Reply::Payload(body) => serde_json::from_slice(&body)
            .map_err(|e| PluginError::context(format!("JetStream {what} reply is not JSON"), e)),
        Reply::NoResponders => Err(PluginError::msg(format!(
            "JetStream is not enabled on the server (no responder for {what})"
        ))),
        Reply::Status(code, text) => Err(PluginError::msg(format!(
            "JetStream {what} answered status {code} {text}"
        ))),
    }
}

impl Output for NatsOutput {
    async fn connect(&mut self) -> PluginResult {
        self.conn = None;
        self.conn = Some(self.open().await?);
        Ok(())
    }

    async fn write(&mut self, batch: &[Metric]) -> PluginResult {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.open().await?,
        };
        let timeout = self.timeout;
        let js = self.config.jetstream.is_some();
        let result = tokio::time::timeout(timeout, async {
            if js {
                self.publish_js(&mut conn, batch).await
            } else {
                self.publish_core(&mut conn, batch).await
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(PluginError::msg(format!(
                "batch not acknowledged within {}s",
                timeout.as_secs_f64()
            )))
        });
        // A failed connection is dropped: late replies on it must not be
        // taken for the next batch's, and the next write reconnects.
        if result.is_ok() {
            self.conn = Some(conn);
        }
        result
    }

    async fn close(&mut self) -> PluginResult {
        if let Some(mut c) = self.conn.take() {
            // Best effort: everything written was acknowledged already.
            let _ = tokio::time::timeout(Duration::from_secs(1), c.shutdown()).await;
        }
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_output(
        "nats",
        "Publishes one message per metric to NATS (core NATS with a flush, or JetStream with PubAcks and de-duplication)",
        include_str!("sample.yaml"),
        NatsOutput::new,
    );
}
