//! The NATS client protocol, as much as a publisher needs
//! (<https://docs.nats.io/reference/reference-protocols/nats-protocol>).
//! Callers bound every call with a timeout.
use crate::plugin::{PluginError, PluginResult};
use crate::plugins::common::net::{Server, Stream, TlsSettings};
use std::collections::HashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A protocol line longer than this is garbage (INFO with a large cluster
/// is a few KB).
const MAX_LINE: usize = 1 << 20;
/// The largest message we accept to read (the server's max_payload is at
/// most 64 MB).
const MAX_MSG: usize = 64 << 20;

pub struct Auth {
    pub user: Option<(String, String)>,
    pub token: Option<String>,
}

/// A request's answer.
#[derive(Debug)]
pub enum Reply {
    Payload(Vec<u8>),
    /// Status 503: nothing subscribes to the subject (no stream on it).
    NoResponders,
    Status(u16, String),
}

#[derive(Debug)]
enum Op {
    Info(Vec<u8>),
    Ping,
    Pong,
    Ok,
    Err(String),
    Msg {
        subject: String,
        headers: Option<Vec<u8>>,
        payload: Vec<u8>,
    },
}

pub struct Conn {
    s: Stream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    max_payload: usize,
    inbox: String,
    seq: u64,
    server: String,
}

fn proto_err(server: &str, what: impl std::fmt::Display) -> PluginError {
    PluginError::msg(format!("NATS {server}: {what}"))
}

impl Conn {
    /// TCP, INFO, TLS when asked or required, CONNECT, PING/PONG (which
    /// confirms the server accepted CONNECT), and with `inbox` a
    /// subscription for request replies.
    pub async fn connect(
        server: &Server,
        tls: Option<&TlsSettings>,
        auth: &Auth,
        inbox: bool,
    ) -> PluginResult<Conn> {
        // The caller bounds the whole connect; this bounds the TCP part.
        let s = Stream::tcp(server, std::time::Duration::from_secs(3600)).await?;
        let mut c = Conn {
            s,
            rbuf: Vec::with_capacity(4096),
            wbuf: Vec::with_capacity(4096),
            max_payload: 1 << 20,
            inbox: String::new(),
            seq: 0,
            server: server.to_string(),
        };
        let info = match c.read_op().await? {
            Op::Info(json) => serde_json::from_slice::<serde_json::Value>(&json)
                .map_err(|e| proto_err(&c.server, format!("INFO is not JSON: {e}")))?,
            other => {
                return Err(proto_err(
                    &c.server,
                    format!("expected INFO, got {other:?}"),
                ))
            }
        };
        if let Some(m) = info.get("max_payload").and_then(|m| m.as_u64()) {
            c.max_payload = m.clamp(1, MAX_MSG as u64) as usize;
        }
        let required = info.get("tls_required").and_then(|t| t.as_bool()) == Some(true);
        let use_tls = tls.is_some() || required;
        if use_tls {
            let default = TlsSettings::default();
            let connector = tls.unwrap_or(&default).connector()?;
            c.s =
                c.s.into_tls(server, &connector, std::time::Duration::from_secs(3600))
                    .await?;
        }
        if inbox && info.get("headers").and_then(|h| h.as_bool()) != Some(true) {
            return Err(proto_err(
                &c.server,
                "the server does not support headers (needed for JetStream de-duplication; NATS 2.2 or later)",
            ));
        }
        let mut connect = serde_json::json!({
            "verbose": false,
            "pedantic": false,
            "tls_required": use_tls,
            "name": "agent",
            "lang": "rust",
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": 1,
            "headers": true,
            "no_responders": true,
        });
        if let Some((u, p)) = &auth.user {
            connect["user"] = u.as_str().into();
            connect["pass"] = p.as_str().into();
        }
        if let Some(t) = &auth.token {
            connect["auth_token"] = t.as_str().into();
        }
        c.wbuf.extend_from_slice(b"CONNECT ");
        c.wbuf.extend_from_slice(connect.to_string().as_bytes());
        c.wbuf.extend_from_slice(b"\r\n");
        c.flush_and_ping().await?;
        if inbox {
            let id: u64 = rand::random();
            c.inbox = format!("_INBOX.{id:016x}");
            let sub = format!("SUB {}.* 1\r\n", c.inbox);
            c.wbuf.extend_from_slice(sub.as_bytes());
            c.flush_and_ping().await?;
        }
        Ok(c)
    }

    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Bytes queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.wbuf.len()
    }

    /// A fresh reply subject under our inbox.
    pub fn next_token(&mut self) -> String {
        self.seq += 1;
        format!("{}.{}", self.inbox, self.seq)
    }

    /// Queues PUB (or HPUB with `headers`); sent by the next flush.
    pub fn queue_pub(
        &mut self,
        subject: &str,
        reply: Option<&str>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) {
        let w = &mut self.wbuf;
        w.extend_from_slice(if headers.is_some() { b"HPUB " } else { b"PUB " });
        w.extend_from_slice(subject.as_bytes());
        w.push(b' ');
        if let Some(r) = reply {
            w.extend_from_slice(r.as_bytes());
            w.push(b' ');
        }
        if let Some(h) = headers {
            w.extend_from_slice(h.len().to_string().as_bytes());
            w.push(b' ');
            w.extend_from_slice((h.len() + payload.len()).to_string().as_bytes());
            w.extend_from_slice(b"\r\n");
            w.extend_from_slice(h);
        } else {
            w.extend_from_slice(payload.len().to_string().as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        w.extend_from_slice(payload);
        w.extend_from_slice(b"\r\n");
    }

    /// Queues raw protocol text (tests: SUB).
    #[cfg(test)]
    pub fn queue_raw(&mut self, b: &[u8]) {
        self.wbuf.extend_from_slice(b);
    }

    /// The next message on any subscription (tests).
    #[cfg(test)]
    pub async fn next_msg(&mut self) -> PluginResult<(String, Vec<u8>)> {
        loop {
            match self.read_op().await? {
                Op::Msg {
                    subject, payload, ..
                } => return Ok((subject, payload)),
                Op::Ping => self.pong().await?,
                Op::Err(e) => return Err(proto_err(&self.server, e)),
                _ => {}
            }
        }
    }

    /// Sends what is queued.
    pub async fn flush(&mut self) -> PluginResult {
        let r = async {
            self.s.write_all(&self.wbuf).await?;
            self.s.flush().await
        }
        .await;
        self.wbuf.clear();
        r.map_err(|e| PluginError::context(format!("NATS {}: sending", self.server), e))
    }

    /// Sends what is queued and a PING, then waits for the PONG: the server
    /// handles a connection's commands in order, so every message before
    /// the PING was processed. A `-ERR` on the way fails.
    pub async fn flush_and_ping(&mut self) -> PluginResult {
        self.wbuf.extend_from_slice(b"PING\r\n");
        self.flush().await?;
        loop {
            match self.read_op().await? {
                Op::Pong => return Ok(()),
                Op::Err(e) => return Err(proto_err(&self.server, format!("server error: {e}"))),
                Op::Ping => self.pong().await?,
                Op::Info(_) | Op::Ok | Op::Msg { .. } => {}
            }
        }
    }

    /// Publishes `payload` with a reply subject and waits for the answer.
    pub async fn request(&mut self, subject: &str, payload: &[u8]) -> PluginResult<Reply> {
        let token = self.next_token();
        self.queue_pub(subject, Some(&token), None, payload);
        self.flush().await?;
        let mut r = self.await_replies(&[token.as_str()]).await?;
        r.pop().ok_or_else(|| proto_err(&self.server, "no reply"))
    }

    /// Waits until every reply subject of `tokens` got its message; the
    /// replies in the order of `tokens`.
    pub async fn await_replies(&mut self, tokens: &[&str]) -> PluginResult<Vec<Reply>> {
        let index: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (*t, i)).collect();
        let mut got: Vec<Option<Reply>> = (0..tokens.len()).map(|_| None).collect();
        let mut left = tokens.len();
        while left > 0 {
            match self.read_op().await? {
                Op::Msg {
                    subject,
                    headers,
                    payload,
                } => {
                    let Some(&i) = index.get(subject.as_str()) else {
                        continue;
                    };
                    if got[i].is_none() {
                        left -= 1;
                    }
                    got[i] = Some(reply_of(headers.as_deref(), payload));
                }
                Op::Err(e) => return Err(proto_err(&self.server, format!("server error: {e}"))),
                Op::Ping => self.pong().await?,
                Op::Info(_) | Op::Ok | Op::Pong => {}
            }
        }
        Ok(got.into_iter().flatten().collect())
    }

    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.s.shutdown().await
    }

    async fn pong(&mut self) -> PluginResult {
        self.s
            .write_all(b"PONG\r\n")
            .await
            .map_err(|e| PluginError::context(format!("NATS {}: sending", self.server), e))
    }

    async fn read_op(&mut self) -> PluginResult<Op> {
        loop {
            if let Some(op) = self.parse()? {
                return Ok(op);
            }
            self.rbuf.reserve(16 * 1024);
            let n =
                self.s.read_buf(&mut self.rbuf).await.map_err(|e| {
                    PluginError::context(format!("NATS {}: reading", self.server), e)
                })?;
            if n == 0 {
                return Err(proto_err(&self.server, "connection closed by the server"));
            }
        }
    }

    /// One operation from the front of the read buffer, if complete.
    fn parse(&mut self) -> PluginResult<Option<Op>> {
        let Some(nl) = self.rbuf.windows(2).position(|w| w == b"\r\n") else {
            if self.rbuf.len() > MAX_LINE {
                return Err(proto_err(&self.server, "protocol line too long"));
            }
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&self.rbuf[..nl]).into_owned();
        let (verb, rest) = match line.find([' ', '\t']) {
            Some(i) => (&line[..i], line[i + 1..].trim()),
            None => (line.as_str(), ""),
        };
        let verb = verb.to_ascii_uppercase();
        let op = match verb.as_str() {
            "PING" => Op::Ping,
            "PONG" => Op::Pong,
            "+OK" => Op::Ok,
            "-ERR" => Op::Err(rest.trim_matches('\'').to_string()),
            "INFO" => Op::Info(rest.as_bytes().to_vec()),
            "MSG" | "HMSG" => {
                let parts: Vec<&str> = rest.split_ascii_whitespace().collect();
                let sizes = |n: usize| -> Option<Vec<usize>> {
                    parts
                        .get(parts.len().checked_sub(n)?..)?
                        .iter()
                        .map(|p| p.parse().ok())
                        .collect()
                };
                let (hdr, total) = match (verb.as_str(), sizes(1), sizes(2)) {
                    ("MSG", Some(s), _) if parts.len() >= 3 => (0, s[0]),
                    ("HMSG", _, Some(s)) if parts.len() >= 4 && s[0] <= s[1] => (s[0], s[1]),
                    _ => return Err(proto_err(&self.server, format!("bad {verb} line `{line}`"))),
                };
                if total > MAX_MSG {
                    return Err(proto_err(&self.server, format!("message of {total} bytes")));
                }
                let need = nl + 2 + total + 2;
                if self.rbuf.len() < need {
                    return Ok(None);
                }
                let body = &self.rbuf[nl + 2..nl + 2 + total];
                let headers = (verb == "HMSG").then(|| body[..hdr].to_vec());
                let payload = body[hdr..].to_vec();
                let subject = parts[0].to_string();
                self.rbuf.drain(..need);
                return Ok(Some(Op::Msg {
                    subject,
                    headers,
                    payload,
                }));
            }
            _ => return Err(proto_err(&self.server, format!("unexpected `{line}`"))),
        };
        self.rbuf.drain(..nl + 2);
        Ok(Some(op))
    }
}

/// A reply with headers may be a status (`NATS/1.0 503`) instead of data.
fn reply_of(headers: Option<&[u8]>, payload: Vec<u8>) -> Reply {
    let Some(h) = headers else {
        return Reply::Payload(payload);
    };
    let first = String::from_utf8_lossy(h);
    let first = first.lines().next().unwrap_or("");
    let mut it = first.split_ascii_whitespace().skip(1);
    match it.next().and_then(|c| c.parse::<u16>().ok()) {
        Some(503) => Reply::NoResponders,
        Some(code) if payload.is_empty() => Reply::Status(code, it.collect::<Vec<_>>().join(" ")),
        _ => Reply::Payload(payload),
    }
}
