//! MQTT 3.1.1, the publisher's part (OASIS mqtt-v3.1.1 §3): CONNECT/
//! CONNACK, PUBLISH with PUBACK (QoS 1) or PUBREC/PUBREL/PUBCOMP (QoS 2),
//! PINGREQ/PINGRESP, DISCONNECT. Callers bound every call with a timeout.
use crate::plugin::{PluginError, PluginResult};
use crate::plugins::common::net::{Server, Stream, TlsSettings};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONNECT: u8 = 0x10;
const CONNACK: u8 = 0x20;
const PUBLISH: u8 = 0x30;
const PUBACK: u8 = 0x40;
const PUBREC: u8 = 0x50;
const PUBREL: u8 = 0x62;
const PUBCOMP: u8 = 0x70;
const PINGREQ: u8 = 0xC0;
const PINGRESP: u8 = 0xD0;
const DISCONNECT: u8 = 0xE0;

/// Largest packet body MQTT can carry (a 4-byte remaining length).
pub const MAX_REMAINING: usize = 268_435_455;
/// Messages in flight (sent, not yet acknowledged) at once. QoS 2 stays
/// under mosquitto's default `max_inflight_messages` (20): mosquitto 2.0.11
/// (Debian 12) acknowledges QoS 2 messages beyond it with PUBREC and
/// PUBCOMP but never delivers them (seen in its log: PUBREL received, no
/// PUBLISH to subscribers).
const WINDOW_QOS1: usize = 64;
const WINDOW_QOS2: usize = 16;

pub struct Options<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub keepalive_secs: u16,
}

pub struct Conn {
    s: Stream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    next_id: u16,
    pub last_io: Instant,
    server: String,
}

fn err(server: &str, what: impl std::fmt::Display) -> PluginError {
    PluginError::msg(format!("MQTT {server}: {what}"))
}

fn put_len(w: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        w.push(b);
        if n == 0 {
            break;
        }
    }
}

fn put_str(w: &mut Vec<u8>, s: &[u8]) {
    w.extend_from_slice(&(s.len() as u16).to_be_bytes());
    w.extend_from_slice(s);
}

const CONNACK_REASONS: [&str; 6] = [
    "accepted",
    "unacceptable protocol version",
    "client identifier rejected",
    "server unavailable",
    "bad user name or password",
    "not authorized",
];

impl Conn {
    /// TCP (+ TLS), CONNECT with a clean session, CONNACK.
    pub async fn connect(
        server: &Server,
        tls: Option<&TlsSettings>,
        o: &Options<'_>,
    ) -> PluginResult<Conn> {
        let mut s = Stream::tcp(server, Duration::from_secs(3600)).await?;
        if let Some(t) = tls {
            let connector = t.connector()?;
            s = s
                .into_tls(server, &connector, Duration::from_secs(3600))
                .await?;
        }
        let mut c = Conn {
            s,
            rbuf: Vec::with_capacity(256),
            wbuf: Vec::with_capacity(4096),
            next_id: 0,
            last_io: Instant::now(),
            server: server.to_string(),
        };
        let mut body = Vec::with_capacity(64);
        put_str(&mut body, b"MQTT");
        body.push(4); // protocol level 3.1.1
        let mut flags = 0x02; // clean session: unacknowledged batches are re-sent by the core
        if o.username.is_some() {
            flags |= 0x80;
        }
        if o.password.is_some() {
            flags |= 0x40;
        }
        body.push(flags);
        body.extend_from_slice(&o.keepalive_secs.to_be_bytes());
        put_str(&mut body, o.client_id.as_bytes());
        if let Some(u) = o.username {
            put_str(&mut body, u.as_bytes());
        }
        if let Some(p) = o.password {
            put_str(&mut body, p.as_bytes());
        }
        c.wbuf.push(CONNECT);
        put_len(&mut c.wbuf, body.len());
        c.wbuf.extend_from_slice(&body);
        c.flush().await?;
        let (kind, body) = c.read_packet().await?;
        if kind != CONNACK || body.len() != 2 {
            return Err(err(
                &c.server,
                format!("expected CONNACK, got packet type {kind:#04x}"),
            ));
        }
        if body[1] != 0 {
            let why = CONNACK_REASONS.get(body[1] as usize).unwrap_or(&"refused");
            return Err(err(
                &c.server,
                format!("connection refused: {why} (code {})", body[1]),
            ));
        }
        Ok(c)
    }

    fn id(&mut self) -> u16 {
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        self.next_id
    }

    /// Publishes every (topic, payload) at `qos` and returns when the
    /// broker acknowledged all: PUBACK (1), PUBCOMP (2), or for QoS 0 the
    /// PINGRESP to a PINGREQ sent after them (the broker reads a
    /// connection in order, so it has read every message before it).
    pub async fn publish_all<'m>(
        &mut self,
        messages: impl Iterator<Item = (&'m str, &'m [u8])>,
        qos: u8,
        retain: bool,
    ) -> PluginResult {
        // id -> released (PUBREL sent, waiting for PUBCOMP)
        let mut pending: HashMap<u16, bool> = HashMap::new();
        let window = if qos == 2 { WINDOW_QOS2 } else { WINDOW_QOS1 };
        for (topic, payload) in messages {
            let id = (qos > 0).then(|| self.id());
            let w = &mut self.wbuf;
            w.push(PUBLISH | (qos << 1) | retain as u8);
            put_len(w, 2 + topic.len() + id.map_or(0, |_| 2) + payload.len());
            put_str(w, topic.as_bytes());
            if let Some(id) = id {
                w.extend_from_slice(&id.to_be_bytes());
                pending.insert(id, false);
            }
            w.extend_from_slice(payload);
            if pending.len() >= window {
                self.flush().await?;
                while pending.len() >= window / 2 {
                    self.ack_one(&mut pending).await?;
                }
            } else if self.wbuf.len() > 64 * 1024 {
                self.flush().await?;
            }
        }
        if qos == 0 {
            return self.ping().await;
        }
        self.flush().await?;
        while !pending.is_empty() {
            self.ack_one(&mut pending).await?;
        }
        Ok(())
    }

    /// Reads one packet and applies it to the in-flight set.
    async fn ack_one(&mut self, pending: &mut HashMap<u16, bool>) -> PluginResult {
        let (kind, body) = self.read_packet().await?;
        let id = (body.len() >= 2).then(|| u16::from_be_bytes([body[0], body[1]]));
        match (kind & 0xF0, id) {
            (PUBACK, Some(id)) | (PUBCOMP, Some(id)) => {
                pending.remove(&id);
            }
            (PUBREC, Some(id)) => {
                if let Some(released) = pending.get_mut(&id) {
                    *released = true;
                }
                self.wbuf.extend_from_slice(&[PUBREL, 2]);
                self.wbuf.extend_from_slice(&id.to_be_bytes());
                self.flush().await?;
            }
            (0xD0, _) => {} // a late PINGRESP
            _ => {
                return Err(err(
                    &self.server,
                    format!("unexpected packet type {kind:#04x}"),
                ));
            }
        }
        Ok(())
    }

    /// PINGREQ, then waits for PINGRESP.
    pub async fn ping(&mut self) -> PluginResult {
        self.wbuf.extend_from_slice(&[PINGREQ, 0]);
        self.flush().await?;
        loop {
            let (kind, _) = self.read_packet().await?;
            if kind == PINGRESP {
                return Ok(());
            }
        }
    }

    pub async fn disconnect(&mut self) -> PluginResult {
        self.wbuf.extend_from_slice(&[DISCONNECT, 0]);
        self.flush().await?;
        let _ = self.s.shutdown().await;
        Ok(())
    }

    async fn flush(&mut self) -> PluginResult {
        let r = async {
            self.s.write_all(&self.wbuf).await?;
            self.s.flush().await
        }
        .await;
        self.wbuf.clear();
        self.last_io = Instant::now();
        r.map_err(|e| PluginError::context(format!("MQTT {}: sending", self.server), e))
    }

    /// One packet: (first byte, body).
    async fn read_packet(&mut self) -> PluginResult<(u8, Vec<u8>)> {
        loop {
            if let Some(p) = self.parse()? {
                self.last_io = Instant::now();
                return Ok(p);
            }
            self.rbuf.reserve(4096);
            let n =
                self.s.read_buf(&mut self.rbuf).await.map_err(|e| {
                    PluginError::context(format!("MQTT {}: reading", self.server), e)
                })?;
            if n == 0 {
                return Err(err(&self.server, "connection closed by the broker"));
            }
        }
    }

    fn parse(&mut self) -> PluginResult<Option<(u8, Vec<u8>)>> {
        if self.rbuf.is_empty() {
            return Ok(None);
        }
        let mut len = 0usize;
        let mut mult = 1usize;
        let mut i = 1;
        loop {
            let Some(&b) = self.rbuf.get(i) else {
                return Ok(None);
            };
            len += (b & 0x7F) as usize * mult;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            mult *= 128;
            if i > 4 {
                return Err(err(&self.server, "malformed remaining length"));
            }
        }
        // A publisher only gets small control packets back.
        if len > 1 << 20 {
            return Err(err(
                &self.server,
                format!("unexpected packet of {len} bytes"),
            ));
        }
        if self.rbuf.len() < i + len {
            return Ok(None);
        }
        let kind = self.rbuf[0];
        let body = self.rbuf[i..i + len].to_vec();
        self.rbuf.drain(..i + len);
        Ok(Some((kind, body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_length_encoding() {
        for (n, want) in [
            (0usize, vec![0u8]),
            (127, vec![0x7F]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xFF, 0x7F]),
            (2_097_152, vec![0x80, 0x80, 0x80, 0x01]),
            (MAX_REMAINING, vec![0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut w = Vec::new();
            put_len(&mut w, n);
            assert_eq!(w, want, "{n}");
        }
    }
}
