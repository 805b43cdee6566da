use super::*;
use crate::config::PluginConfig;
use crate::metric::{FieldValue, Metric};
use tokio::net::{TcpListener, TcpSocket};

fn plugin(yaml: &str) -> Telnet {
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
    Telnet::from_config(&PluginConfig::from_value("telnet", v)).unwrap()
}

async fn gather(yaml: &str) -> Vec<Metric> {
    let mut p = plugin(yaml);
    let mut acc = Accumulator::new("telnet", vec![].into());
    p.gather(&mut acc).await.unwrap();
    acc.take()
}

fn field<'a>(m: &'a Metric, k: &str) -> &'a FieldValue {
    m.field(k).unwrap_or_else(|| panic!("{k} missing in {m:?}"))
}

fn num(m: &Metric, k: &str) -> f64 {
    field(m, k).as_f64().unwrap()
}

/// A port with nothing listening: bind, note the port, close.
async fn closed_port(ip: &str) -> u16 {
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    l.local_addr().unwrap().port()
}

fn ipv6_loopback_configured() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

#[actix_rt::test]
async fn open_and_closed_on_ipv4() {
    let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let op = open.local_addr().unwrap().port();
    let cp = closed_port("127.0.0.1").await;
    let ms = gather(&format!(
        "timeout: 1.5\ntarget: {{OPEN: {{address: '127.0.0.1:{op}'}}, SHUT: {{address: '127.0.0.1:{cp}'}}, \
         NAME: {{address: 'localhost:{op}'}}}}"
    ))
    .await;
    let (o, c, n) = (&ms[0], &ms[1], &ms[2]);
    assert_eq!(field(o, "tag"), &FieldValue::from("OPEN"));
    assert_eq!(
        field(o, "address"),
        &FieldValue::from(format!("127.0.0.1:{op}"))
    );
    assert_eq!(field(o, "yes"), &FieldValue::Bool(true));
    assert_eq!(field(o, "errcode"), &FieldValue::Int(0));
    assert_eq!(field(o, "as_ipv6"), &FieldValue::Bool(false));
    assert_eq!(field(o, "timeout"), &FieldValue::Float(1.5));
    assert_eq!(field(o, "result"), &FieldValue::from("success"));
    assert!(num(o, "response_ms") >= 0.0 && num(o, "response_ms") < 1500.0);
    assert!(o.field("error").is_none());

    assert_eq!(field(c, "yes"), &FieldValue::Bool(false));
    assert_eq!(
        field(c, "errcode"),
        &FieldValue::Int(libc::ECONNREFUSED as i64)
    );
    assert_eq!(field(c, "result"), &FieldValue::from("connection_failed"));
    assert!(
        field(c, "error").as_str().unwrap().contains("refused"),
        "{c:?}"
    );

    // localhost resolves (via /etc/hosts) and one of its addresses accepts.
    assert_eq!(field(n, "yes"), &FieldValue::Bool(true), "{n:?}");
}

#[actix_rt::test]
async fn open_and_closed_on_ipv6_or_error() {
    if !ipv6_loopback_configured() {
        // No ::1 here: the check must fail cleanly with an errno.
        let ms = gather("timeout: 1\ntarget: {V6: {address: '[::1]:9'}}").await;
        assert_eq!(field(&ms[0], "yes"), &FieldValue::Bool(false));
        assert_ne!(field(&ms[0], "errcode"), &FieldValue::Int(0));
        return;
    }
    let open = TcpListener::bind("[::1]:0").await.unwrap();
    let op = open.local_addr().unwrap().port();
    let cp = closed_port("::1").await;
    let ms = gather(&format!(
        "timeout: 1\ntarget: {{OPEN: {{address: '[::1]:{op}', ipv6: true}}, SHUT: {{address: '[::1]:{cp}'}}}}"
    ))
    .await;
    assert_eq!(field(&ms[0], "yes"), &FieldValue::Bool(true), "{:?}", ms[0]);
    assert_eq!(field(&ms[0], "as_ipv6"), &FieldValue::Bool(true));
    assert_eq!(field(&ms[0], "errcode"), &FieldValue::Int(0));
    assert_eq!(
        field(&ms[1], "errcode"),
        &FieldValue::Int(libc::ECONNREFUSED as i64)
    );
    assert_eq!(field(&ms[1], "as_ipv6"), &FieldValue::Bool(true));
}

#[actix_rt::test]
async fn fractional_connect_timeout_is_honoured() {
    // A listener with backlog 1 that never accepts: once its queue is full
    // the kernel drops further SYNs, so a new connect hangs.
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = sock.listen(1).unwrap();
    let addr = full.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
    }
    let started = std::time::Instant::now();
    let ms = gather(&format!(
        "timeout: 0.3\ntarget: {{FULL: {{address: '{addr}'}}}}"
    ))
    .await;
    let took = started.elapsed();
    let m = &ms[0];
    assert_eq!(field(m, "result"), &FieldValue::from("timeout"), "{m:?}");
    assert_eq!(
        field(m, "errcode"),
        &FieldValue::Int(libc::ETIMEDOUT as i64)
    );
    assert_eq!(field(m, "yes"), &FieldValue::Bool(false));
    assert_eq!(field(m, "timeout"), &FieldValue::Float(0.3));
    let rt = num(m, "response_ms");
    assert!((290.0..2000.0).contains(&rt), "response_ms {rt}");
    // PyAgent truncated 0.3 to 0 (no wait at all) or hung; we waited ~0.3 s.
    assert!(took >= Duration::from_millis(290), "{took:?}");
    drop(fillers);
}

/// A one-connection server: writes `banner` (if any), then holds the
/// connection open for a while without reading.
async fn banner_server(banner: Option<&'static str>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if let Some(b) = banner {
                    let _ = s.write_all(b.as_bytes()).await;
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
            });
        }
    });
    addr
}

#[actix_rt::test]
async fn send_expect_results() {
    let ssh = banner_server(Some("SSH-2.0-OpenSSH_9.2\r\n")).await;
    let silent = banner_server(None).await;
    // An echo server for send → expect.
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let ms = gather(&format!(
        "timeout: 1\nread_timeout: 0.3\ntarget:\n\
         \x20 OK: {{address: '{ssh}', expect: SSH-2.0}}\n\
         \x20 BAD: {{address: '{ssh}', expect: 'HTTP/1.1'}}\n\
         \x20 QUIET: {{address: '{silent}', expect: 'hello'}}\n\
         \x20 ECHO: {{address: '{echo_addr}', send: 'ping\\n', expect: 'ping'}}\n"
    ))
    .await;
    let result = |i: usize| field(&ms[i], "result").as_str().unwrap().to_string();
    assert_eq!(result(0), "success", "{:?}", ms[0]);
    assert_eq!(result(1), "string_mismatch", "{:?}", ms[1]);
    assert!(field(&ms[1], "error").as_str().unwrap().contains("SSH-2.0"));
    assert_eq!(result(2), "timeout", "{:?}", ms[2]);
    assert_eq!(result(3), "success", "{:?}", ms[3]);
    // The port is open in every case: `yes` stays PyAgent's connect check.
    for m in &ms {
        assert_eq!(field(m, "yes"), &FieldValue::Bool(true));
        assert_eq!(field(m, "errcode"), &FieldValue::Int(0));
    }
}

#[actix_rt::test]
async fn unresolvable_name_is_per_target() {
    // A label over 63 bytes: glibc rejects it without sending a DNS query.
    let bad = format!("{}.invalid:80", "a".repeat(70));
    let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let op = open.local_addr().unwrap().port();
    let ms = gather(&format!(
        "timeout: 2\ntarget: {{BAD: {{address: '{bad}'}}, OK: {{address: '127.0.0.1:{op}'}}}}"
    ))
    .await;
    assert_eq!(
        field(&ms[0], "errcode"),
        &FieldValue::Int(ERR_RESOLVE as i64)
    );
    assert!(field(&ms[0], "error")
        .as_str()
        .unwrap()
        .contains("cannot resolve"));
    assert_eq!(field(&ms[1], "yes"), &FieldValue::Bool(true));
}

#[test]
fn addresses_and_config_errors() {
    assert_eq!(split_host_port("[::1]:443").unwrap(), ("::1".into(), 443));
    assert_eq!(
        split_host_port("example.org:22").unwrap(),
        ("example.org".into(), 22)
    );
    assert_eq!(
        split_host_port(" 10.0.0.1:80 ").unwrap(),
        ("10.0.0.1".into(), 80)
    );
    for bad in [
        "::1:443",
        "[::1]443",
        "[::1",
        "host",
        "host:0",
        "host:70000",
        ":80",
    ] {
        assert!(split_host_port(bad).is_err(), "{bad}");
    }
    let p = plugin(
        "target: {A: {address: '127.0.0.1:22', timeout: 0.25}, B: {address: '127.0.0.1:22'}}",
    );
    assert_eq!(p.targets[0].timeout, Duration::from_millis(250));
    assert_eq!(p.targets[1].timeout, Duration::from_secs(5));
    for (yaml, key) in [
        ("target: {A: {address: 'nope'}}", "target.A.address"),
        ("timeout: 0", "timeout"),
        (
            "target: {A: {address: '127.0.0.1:1', timeout: -2}}",
            "target.A.timeout",
        ),
    ] {
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
        let err = Telnet::from_config(&PluginConfig::from_value("telnet", v))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(key), "{yaml}: {err}");
    }
}

#[actix_rt::test]
async fn two_hundred_targets_on_two_names_cost_two_lookups() {
    use crate::plugins::common::resolver;
    // Numeric forms getaddrinfo reads itself (inet_aton) and Rust's parser
    // does not: real look-ups through the shared resolver, nothing sent
    // anywhere, names no other test uses.
    let names = ["0x7f.0.0.1", "0177.0.0.1"];
    let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let op = open.local_addr().unwrap().port();
    let accept = tokio::spawn(async move {
        while let Ok((s, _)) = open.accept().await {
            drop(s);
        }
    });
    let mut yaml = String::from("timeout: 5\ntarget:\n");
    for i in 0..200 {
        yaml.push_str(&format!("  T{i}: {{address: '{}:{op}'}}\n", names[i % 2]));
    }
    let ms = gather(&yaml).await;
    accept.abort();
    assert_eq!(ms.len(), 200);
    for m in &ms {
        assert_eq!(field(m, "yes"), &FieldValue::Bool(true), "{m:?}");
    }
    for n in names {
        assert_eq!(resolver::global().lookups_of(n), 1, "{n}");
    }
}
