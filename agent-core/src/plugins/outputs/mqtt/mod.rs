//! `mqtt`: one message per metric to an MQTT 3.1.1 broker. A batch is
//! acknowledged when the broker acknowledged every message: PUBACK at QoS
//! 1, PUBCOMP at QoS 2, and at QoS 0 the PINGRESP to a PINGREQ sent after
//! the batch (the broker has read every message; QoS 0 promises no more).
//!
//! The client is written here (`protocol.rs`): a publisher needs six packet
//! types, and rumqttc's event loop acknowledges in the background, where
//! a write cannot wait for its own PUBACKs without extra bookkeeping.
mod protocol;
#[cfg(test)]
mod tests;

use crate::config::Seconds;
use crate::metric::Metric;
use crate::plugin::{Output, PluginError, PluginResult, RateLimitedLog};
use crate::plugins::common::net::{self, Server, TlsSettings};
use crate::plugins::common::template::{PayloadEncoder, PayloadFormat, Template};
use crate::registry::Registry;
use protocol::Conn;
use serde::Deserialize;
use std::time::Duration;

const SCHEMES: &[(&str, bool, u16)] = &[
    ("tcp", false, 1883),
    ("mqtt", false, 1883),
    ("ssl", true, 8883),
    ("tls", true, 8883),
    ("mqtts", true, 8883),
];

fn d_servers() -> Vec<String> {
    vec!["tcp://127.0.0.1:1883".into()]
}
fn d_topic() -> String {
    "agent/{host_name}/{name}".into()
}
fn d_qos() -> u8 {
    1
}
fn d_keepalive() -> Seconds {
    Seconds::from_secs(60)
}
fn d_timeout() -> Seconds {
    Seconds::from_secs(10)
}
fn d_connect_timeout() -> Seconds {
    Seconds::from_secs(5)
}

#[derive(Debug, Clone, Deserialize)]
pub struct MqttConfig {
    #[serde(default = "d_servers")]
    pub servers: Vec<String>,
    #[serde(default = "d_topic")]
    pub topic: String,
    #[serde(default = "d_qos")]
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
    /// Default: `agent-<instance>-<host name>`, stable across restarts.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub format: PayloadFormat,
    /// Seconds; 0 turns keep-alive off.
    #[serde(default = "d_keepalive")]
    pub keepalive: Seconds,
    /// Seconds for a batch to be acknowledged.
    #[serde(default = "d_timeout")]
    pub timeout: Seconds,
    /// Seconds to connect: TCP, TLS, CONNECT/CONNACK.
    #[serde(default = "d_connect_timeout")]
    pub connect_timeout: Seconds,
    #[serde(flatten)]
    pub tls: TlsSettings,
}

pub struct MqttOutput {
    config: MqttConfig,
    servers: Vec<Server>,
    next_server: usize,
    topic: Template,
    client_id: String,
    keepalive_secs: u16,
    timeout: Duration,
    connect_timeout: Duration,
    encoder: PayloadEncoder,
    conn: Option<Conn>,
    refused: u64,
    refuse_log: RateLimitedLog,
}

/// Replaces what one topic level cannot hold.
fn clean_topic(c: char) -> char {
    if c.is_control() || matches!(c, '/' | '+' | '#') {
        '_'
    } else {
        c
    }
}

/// The default client id: letters, digits and `-` of the instance and
/// host names (what every broker accepts), the same on every start.
fn default_client_id(instance: &str, host: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect()
    };
    format!("agent-{}-{}", clean(instance), clean(host))
}

impl MqttOutput {
    pub fn new(cfg: &crate::config::PluginConfig) -> PluginResult<Self> {
        let mut keys = vec![
            "servers",
            "topic",
            "qos",
            "retain",
            "client_id",
            "username",
            "password",
            "format",
            "keepalive",
            "timeout",
            "connect_timeout",
        ];
        keys.extend_from_slice(net::TLS_KEYS);
        let config: MqttConfig = cfg.parse_with_keys(&keys)?;
        if config.servers.is_empty() {
            return Err(cfg
                .error("servers", "needs at least one tcp:// or ssl:// server")
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
        if config.qos > 2 {
            return Err(cfg
                .error("qos", format!("must be 0, 1 or 2, got {}", config.qos))
                .into());
        }
        let (timeout, connect_timeout) =
            net::timeouts(cfg, config.timeout, config.connect_timeout)?;
        let keepalive = config
            .keepalive
            .within(0.0, 65535.0)
            .map_err(|r| cfg.error("keepalive", r))?;
        config.tls.validate(cfg)?;
        let topic = Template::parse(cfg, "topic", &config.topic)?;
        let probe = topic.with_placeholders("x");
        if probe.is_empty() || probe.len() > 65535 {
            return Err(cfg.error("topic", "must be 1 to 65535 bytes").into());
        }
        if topic.literals().any(|l| l.contains(['+', '#', '\0'])) {
            return Err(cfg
                .error(
                    "topic",
                    format!(
                        "`{}`: `+` and `#` are wildcards, not for publishing",
                        config.topic
                    ),
                )
                .into());
        }
        let client_id = match &config.client_id {
            Some(id) if id.is_empty() || id.len() > 65535 => {
                return Err(cfg.error("client_id", "must be 1 to 65535 bytes").into())
            }
            Some(id) => id.clone(),
            None => default_client_id(&cfg.instance, &cfg.host_name()),
        };
        for (key, v) in [
            ("username", &config.username),
            ("password", &config.password),
        ] {
            if v.as_ref().is_some_and(|v| v.len() > 65535) {
                return Err(cfg.error(key, "at most 65535 bytes").into());
            }
        }
        if config.password.is_some() && config.username.is_none() {
            return Err(cfg
                .error("password", "needs `username` (MQTT 3.1.1)")
                .into());
        }
        Ok(MqttOutput {
            encoder: PayloadEncoder::new(config.format),
            keepalive_secs: keepalive.as_secs_f64().ceil() as u16,
            config,
            servers,
            next_server: 0,
            topic,
            client_id,
            timeout,
            connect_timeout,
            conn: None,
            refused: 0,
            refuse_log: RateLimitedLog::new(cfg.log().clone(), "mqtt output"),
        })
    }

    async fn open(&mut self) -> PluginResult<Conn> {
        let server = self.servers[self.next_server % self.servers.len()].clone();
        self.next_server = self.next_server.wrapping_add(1);
        let tls: Option<&TlsSettings> = if server.tls || self.config.tls.configured() {
            Some(&self.config.tls)
        } else {
            None
        };
        let (user, pass) = match &server.user {
            Some((u, p)) => (Some(u.as_str()), Some(p.as_str())),
            None => (
                self.config.username.as_deref(),
                self.config.password.as_deref(),
            ),
        };
        let opts = protocol::Options {
            client_id: &self.client_id,
            username: user,
            password: pass,
            keepalive_secs: self.keepalive_secs,
        };
        tokio::time::timeout(self.connect_timeout, Conn::connect(&server, tls, &opts))
            .await
            .map_err(|_| PluginError::msg(format!("connecting to {server} timed out")))?
    }

    /// The connection to write on: the current one if the broker still
    /// answers (checked with a ping after half the keep-alive idle, since
    /// the broker drops a connection idle for 1.5 keep-alives), else a
    /// new one.
    async fn ready_conn(&mut self) -> PluginResult<Conn> {
        if let Some(mut c) = self.conn.take() {
            let idle = c.last_io.elapsed();
            let stale = self.keepalive_secs > 0
                && idle >= Duration::from_secs(self.keepalive_secs as u64) / 2;
            if !stale {
                return Ok(c);
            }
            let alive = tokio::time::timeout(self.connect_timeout, c.ping()).await;
            if matches!(alive, Ok(Ok(()))) {
                return Ok(c);
            }
        }
        self.open().await
    }
}

impl Output for MqttOutput {
    async fn connect(&mut self) -> PluginResult {
        self.conn = None;
        self.conn = Some(self.open().await?);
        Ok(())
    }

    async fn write(&mut self, batch: &[Metric]) -> PluginResult {
        let mut conn = self.ready_conn().await?;
        let mut messages: Vec<(String, String)> = Vec::with_capacity(batch.len());
        let mut payload = String::new();
        for m in batch {
            if !self.encoder.encode(m, &mut payload) {
                continue;
            }
            let mut topic = String::new();
            self.topic.render(m, clean_topic, &mut topic);
            if topic.len() > 65535 || topic.len() + payload.len() + 4 > protocol::MAX_REMAINING {
                self.refused += 1;
                let n = self.refused;
                let name = m.name.clone();
                self.refuse_log.warn(|| {
                    format!("a `{name}` message is too large for MQTT; dropped ({n} so far)")
                });
                continue;
            }
            messages.push((topic, std::mem::take(&mut payload)));
        }
        let (qos, retain, timeout) = (self.config.qos, self.config.retain, self.timeout);
        let result = tokio::time::timeout(
            timeout,
            conn.publish_all(
                messages.iter().map(|(t, p)| (t.as_str(), p.as_bytes())),
                qos,
                retain,
            ),
        )
        .await
        .unwrap_or_else(|_| {
            Err(PluginError::msg(format!(
                "batch not acknowledged within {}s",
                timeout.as_secs_f64()
            )))
        });
        // After a failure the connection's state is unknown: drop it; the
        // core sends the same batch again on a new one.
        if result.is_ok() {
            self.conn = Some(conn);
        }
        result
    }

    async fn close(&mut self) -> PluginResult {
        if let Some(mut c) = self.conn.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), c.disconnect()).await;
        }
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_output(
        "mqtt",
        "Publishes one message per metric to an MQTT 3.1.1 broker (QoS 0, 1 or 2; acknowledged by PUBACK/PUBCOMP)",
        include_str!("sample.yaml"),
        MqttOutput::new,
    );
}
