//! `prometheus_client`: a pull endpoint in the Prometheus text exposition
//! format. Every numeric field is a series `<input>_<field>` with the tags
//! as labels; the latest value is served until the series expires.
//!
//! The listener starts lazily in `connect` (the first flush), and is a tiny
//! HTTP/1.1 responder on tokio: one request per connection, a bounded
//! request head read under a timeout.
use crate::config::Seconds;
use crate::format::prometheus::{Options, SeriesStore};
use crate::metric::Metric;
use crate::plugin::{Output, PluginError, PluginResult};
use crate::registry::Registry;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn d_listen() -> String {
    "127.0.0.1:9273".into()
}
fn d_path() -> String {
    "/metrics".into()
}
fn d_expiration() -> Seconds {
    Seconds::from_secs(60)
}

#[derive(Debug, Clone, Deserialize)]
pub struct PromConfig {
    /// Address to listen on (loopback by default).
    #[serde(default = "d_listen")]
    pub listen: String,
    #[serde(default = "d_path")]
    pub path: String,
    /// Seconds after which a series that got no new value disappears; 0 = never.
    #[serde(default = "d_expiration")]
    pub expiration: Seconds,
    /// Expose string fields as labels (instead of dropping them).
    #[serde(default)]
    pub string_as_label: bool,
}

pub struct PrometheusClient {
    listen: SocketAddr,
    path: String,
    store: Arc<Mutex<SeriesStore>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl PrometheusClient {
    pub fn new(cfg: &crate::config::PluginConfig) -> PluginResult<Self> {
        let c: PromConfig = cfg.parse()?;
        let listen: SocketAddr = c.listen.parse().map_err(|e| {
            cfg.error(
                "listen",
                format!("`{}` is not an ip:port address: {e}", c.listen),
            )
        })?;
        if !c.path.starts_with('/') {
            return Err(cfg.error("path", "must start with `/`").into());
        }
        let never = c.expiration.as_secs_f64() == 0.0;
        if let (false, Err(reason)) = (never, c.expiration.within(0.001, 86_400.0 * 365.0)) {
            return Err(cfg
                .error(
                    "expiration",
                    format!("zero (never) or a number of seconds: {reason}"),
                )
                .into());
        }
        let opts = Options {
            string_as_label: c.string_as_label,
        };
        Ok(PrometheusClient {
            listen,
            path: c.path,
            store: Arc::new(Mutex::new(SeriesStore::new(
                opts,
                c.expiration.as_duration(),
            ))),
            server: None,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listen
    }
}

impl Drop for PrometheusClient {
    fn drop(&mut self) {
        if let Some(h) = self.server.take() {
            h.abort();
        }
    }
}

async fn serve(
    mut conn: tokio::net::TcpStream,
    path: Arc<str>,
    store: Arc<Mutex<SeriesStore>>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut chunk).await?;
            if n == 0 || head.len() > 16 * 1024 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&head);
    let mut first = text.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let target_path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = if method != "GET" && method != "HEAD" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        )
    } else if target_path != &*path {
        (
            "404 Not Found",
            "text/plain",
            format!("metrics are at {path}\n"),
        )
    } else {
        let mut body = String::new();
        {
            let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
            s.expire(Instant::now());
            s.render(&mut body);
        }
        ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
    };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tokio::time::timeout(Duration::from_secs(10), async {
        conn.write_all(header.as_bytes()).await?;
        if method != "HEAD" {
            conn.write_all(body.as_bytes()).await?;
        }
        conn.shutdown().await
    })
    .await
    .unwrap_or(Ok(()))
}

impl Output for PrometheusClient {
    async fn connect(&mut self) -> PluginResult {
        if self.server.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .map_err(|e| PluginError::context(format!("cannot listen on {}", self.listen), e))?;
        self.listen = listener.local_addr()?;
        let store = self.store.clone();
        let path: Arc<str> = self.path.as_str().into();
        self.server = Some(tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    // Out of descriptors or similar: back off briefly.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                tokio::spawn(serve(conn, path.clone(), store.clone()));
            }
        }));
        Ok(())
    }

    async fn write(&mut self, batch: &[Metric]) -> PluginResult {
        let now = Instant::now();
        let mut s = self.store.lock().unwrap_or_else(|p| p.into_inner());
        for m in batch {
            s.add(m, now);
        }
        s.expire(now);
        Ok(())
    }

    async fn close(&mut self) -> PluginResult {
        if let Some(h) = self.server.take() {
            h.abort();
        }
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_output(
        "prometheus_client",
        "Serves the latest metrics on a Prometheus /metrics endpoint",
        include_str!("sample.yaml"),
        PrometheusClient::new,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PluginConfig;
    use std::io::{Read, Write};

    fn output(yaml: &str) -> PrometheusClient {
        PrometheusClient::new(&PluginConfig::from_value(
            "prometheus_client",
            serde_yaml_ng::from_str(yaml).unwrap(),
        ))
        .unwrap()
    }

    async fn get(addr: SocketAddr, req: &str) -> String {
        let req = req.to_string();
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .await
        .unwrap()
    }

    const HEAD: &str = "# HELP net_bytes_recv Field bytes_recv of net (no schema: exec, execd or processed metrics).\n# TYPE net_bytes_recv untyped\n";

    #[actix_rt::test]
    async fn serves_latest_values_and_expires_series() {
        let mut out = output("listen: 127.0.0.1:0\nexpiration: 0.4\nstring_as_label: true\n");
        out.connect().await.unwrap();
        let addr = out.local_addr();
        out.write(&[Metric::new("net", 0)
            .with_tag("nic", "eth0")
            .with_field("bytes_recv", 10u64)
            .with_field("mac", "aa:bb")])
            .await
            .unwrap();
        out.write(&[Metric::new("net", 0)
            .with_tag("nic", "eth1")
            .with_field("bytes_recv", 7u64)])
            .await
            .unwrap();
        let resp = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.contains("Content-Type: text/plain; version=0.0.4"));
        let body = resp.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(
            body,
            format!("{HEAD}net_bytes_recv{{nic=\"eth0\",mac=\"aa:bb\"}} 10\nnet_bytes_recv{{nic=\"eth1\"}} 7\n")
        );
        // eth1 keeps reporting, eth0 stops: it expires.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            out.write(&[Metric::new("net", 0)
                .with_tag("nic", "eth1")
                .with_field("bytes_recv", 8u64)])
                .await
                .unwrap();
        }
        let resp = get(addr, "GET /metrics HTTP/1.1\r\n\r\n").await;
        let body = resp.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(body, format!("{HEAD}net_bytes_recv{{nic=\"eth1\"}} 8\n"));
        let resp = get(addr, "GET /other HTTP/1.1\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
        let resp = get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 405"), "{resp}");
        out.close().await.unwrap();
    }

    #[test]
    fn defaults_to_loopback_and_validates() {
        let out = output("{}");
        assert_eq!(out.local_addr().to_string(), "127.0.0.1:9273");
        let e = PrometheusClient::new(&PluginConfig::from_value(
            "p",
            serde_yaml_ng::from_str("listen: nowhere").unwrap(),
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("listen"), "{e}");
    }
}
