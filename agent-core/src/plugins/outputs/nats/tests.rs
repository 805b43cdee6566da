//! Against a real nats-server (Debian package) on a free loopback port.
use super::*;
use crate::config::PluginConfig;
use crate::plugins::common::broker_test::{certs, free_port, nats_server};

fn output(yaml: &str) -> PluginResult<NatsOutput> {
    NatsOutput::new(&PluginConfig::from_value(
        "nats",
        serde_yaml_ng::from_str(yaml).unwrap(),
    ))
}

fn batch(n: u64) -> Vec<Metric> {
    (0..n)
        .map(|i| {
            Metric::new("disk", 1_700_000_000_000_000_000 + i as i64)
                .with_tag("host_name", "web.1 a")
                .with_field("seq", i)
                .with_field("free", 1.5)
        })
        .collect()
}

/// A subscriber on its own connection (our protocol code, as a reader).
async fn subscriber(port: u16, subject: &str) -> Conn {
    let server = Server {
        host: "127.0.0.1".into(),
        port,
        tls: false,
        user: None,
    };
    let auth = protocol::Auth {
        user: None,
        token: None,
    };
    let mut c = Conn::connect(&server, None, &auth, true).await.unwrap();
    c.queue_raw(format!("SUB {subject} 7\r\n").as_bytes());
    c.flush_and_ping().await.unwrap();
    c
}

#[test]
fn config_errors_name_the_key() {
    for (yaml, key, why) in [
        ("servers: []", "servers", "at least one"),
        ("servers: ['http://x']", "servers[0]", "unknown scheme"),
        ("subject: 'a.*.b'", "subject", "wildcards"),
        ("subject: 'a..b'", "subject", "empty token"),
        ("subject: 'a.{nmae}'", "subject", "unknown placeholder"),
        ("token: t\nusername: u", "token", "not both"),
        (
            "jetstream: {stream: 'A.B'}",
            "jetstream.stream",
            "not a stream name",
        ),
        (
            "jetstream: {stream: A, subjects: ['a.>.b']}",
            "jetstream.subjects[0]",
            "must be whole tokens",
        ),
        (
            "jetstream: {stream: A, duplicate_window: -1}",
            "jetstream.duplicate_window",
            "",
        ),
        ("timeout: 0", "timeout", ""),
        (
            "ca_file: /nonexistent.pem",
            "ca_file",
            "not a readable file",
        ),
        ("tls_cert: /etc/hostname", "tls_key", "both"),
    ] {
        let e = output(yaml)
            .err()
            .unwrap_or_else(|| panic!("{yaml} accepted"))
            .to_string();
        assert!(e.contains(key) && e.contains(why), "{yaml}: {e}");
    }
}

#[test]
fn default_stream_subjects_put_a_wildcard_for_each_placeholder_token() {
    let o = output("subject: 'agent.{host_name}.x{name}.y'\njetstream: {stream: S}").unwrap();
    assert_eq!(o.stream_subjects, vec!["agent.*.*.y".to_string()]);
}

#[test]
fn msg_id_is_stable_and_tells_metrics_apart() {
    let a = batch(2);
    assert_eq!(msg_id(&a[0]), msg_id(&a[0].clone()));
    assert_eq!(msg_id(&a[0]).len(), 32);
    assert_ne!(msg_id(&a[0]), msg_id(&a[1]));
    let mut b = a[0].clone();
    b.set_field("free", 1.25);
    assert_ne!(msg_id(&a[0]), msg_id(&b));
    // Same text, other type: another metric.
    let s = Metric::new("m", 1).with_field("v", 1i64);
    let u = Metric::new("m", 1).with_field("v", 1u64);
    assert_ne!(msg_id(&s), msg_id(&u));
}

#[actix_rt::test]
async fn core_publish_is_received_and_survives_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = nats_server(dir.path(), port, &[]);
    let mut sub = subscriber(port, "agent.>").await;
    let mut out = output(&format!(
        "servers: ['nats://127.0.0.1:{port}']\nformat: influx\ntimeout: 2\nconnect_timeout: 1\n"
    ))
    .unwrap();
    out.connect().await.unwrap();
    out.write(&batch(5)).await.unwrap();
    for i in 0..5 {
        let (subject, payload) = sub.next_msg().await.unwrap();
        assert_eq!(subject, "agent.web_1_a.disk");
        assert_eq!(
            String::from_utf8(payload).unwrap(),
            format!(
                "disk,host_name=web.1\\ a seq={i}u,free=1.5 {}\n",
                1_700_000_000_000_000_000u64 + i
            )
        );
    }
    drop(server);
    let e = out.write(&batch(1)).await.unwrap_err().to_string();
    println!("while down: {e}");
    let _server = nats_server(dir.path(), port, &[]);
    let mut sub = subscriber(port, "agent.>").await;
    out.write(&batch(3)).await.unwrap();
    for _ in 0..3 {
        sub.next_msg().await.unwrap();
    }
}

#[actix_rt::test]
async fn jetstream_stream_is_created_and_a_replayed_batch_is_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let sd = dir.path().join("js");
    let _server = nats_server(dir.path(), port, &["-js", "-sd", sd.to_str().unwrap()]);
    let mut out = output(&format!(
        "servers: ['nats://127.0.0.1:{port}']\nsubject: 'm.{{name}}'\njetstream: {{stream: M, duplicate_window: 600}}\n"
    ))
    .unwrap();
    out.connect().await.unwrap();
    let b = batch(300);
    out.write(&b).await.unwrap();
    assert_eq!(out.duplicates, 0);
    // The same batch again, as the disk buffer replays it after a crash
    // between the PubAcks and its commit.
    out.write(&b).await.unwrap();
    assert_eq!(out.duplicates, 300);
    let mut probe = subscriber(port, "nothing").await;
    let info = probe.request("$JS.API.STREAM.INFO.M", b"").await.unwrap();
    let Reply::Payload(body) = info else {
        panic!("{info:?}")
    };
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["state"]["messages"], 300, "{v}");
    assert_eq!(v["config"]["subjects"], serde_json::json!(["m.*"]));
    assert_eq!(v["config"]["duplicate_window"], 600_000_000_000u64);
    // A subject no stream takes: every message fails, the write fails.
    let mut other = output(&format!(
        "servers: ['nats://127.0.0.1:{port}']\nsubject: 'other.{{name}}'\njetstream: {{stream: M, create: false}}\n"
    ))
    .unwrap();
    other.connect().await.unwrap();
    let e = other.write(&batch(2)).await.unwrap_err().to_string();
    assert!(e.contains("no JetStream stream listens"), "{e}");
}

#[actix_rt::test]
async fn jetstream_on_a_server_without_it_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = nats_server(dir.path(), port, &[]);
    let mut out = output(&format!(
        "servers: ['nats://127.0.0.1:{port}']\njetstream: {{stream: M}}\n"
    ))
    .unwrap();
    let e = out.connect().await.unwrap_err().to_string();
    assert!(e.contains("JetStream is not enabled"), "{e}");
}

#[actix_rt::test]
async fn credentials_are_sent_and_refusals_reported() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = nats_server(dir.path(), port, &["--user", "agent", "--pass", "s3cret"]);
    let url = format!("nats://127.0.0.1:{port}");
    let mut bad = output(&format!(
        "servers: ['{url}']\nusername: agent\npassword: wrong\n"
    ))
    .unwrap();
    let e = bad.connect().await.unwrap_err().to_string();
    assert!(e.contains("Authorization Violation"), "{e}");
    let mut good = output(&format!(
        "servers: ['{url}']\nusername: agent\npassword: s3cret\n"
    ))
    .unwrap();
    good.connect().await.unwrap();
    good.write(&batch(2)).await.unwrap();
    let mut in_url = output(&format!(
        "servers: ['nats://agent:s3cret@127.0.0.1:{port}']\n"
    ))
    .unwrap();
    in_url.write(&batch(1)).await.unwrap();
    let port2 = free_port();
    let _server2 = nats_server(dir.path(), port2, &["--auth", "t0ken"]);
    let mut tok = output(&format!("servers: ['127.0.0.1:{port2}']\ntoken: t0ken\n")).unwrap();
    tok.write(&batch(1)).await.unwrap();
}

#[actix_rt::test]
async fn tls_verifies_the_server_and_sends_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path());
    let port = free_port();
    let _server = nats_server(
        dir.path(),
        port,
        &[
            "--tls",
            "--tlscert",
            c.server_cert.to_str().unwrap(),
            "--tlskey",
            c.server_key.to_str().unwrap(),
            "--tlsverify",
            "--tlscacert",
            c.ca.to_str().unwrap(),
        ],
    );
    let base = format!("servers: ['tls://localhost:{port}']\ntimeout: 3\nconnect_timeout: 3\n");
    let mut good = output(&format!(
        "{base}ca_file: {}\ntls_cert: {}\ntls_key: {}\n",
        c.ca.display(),
        c.client_cert.display(),
        c.client_key.display()
    ))
    .unwrap();
    good.connect().await.unwrap();
    good.write(&batch(3)).await.unwrap();
    // The system's CAs do not know the test CA.
    let mut unknown_ca = output(&format!(
        "{base}tls_cert: {}\ntls_key: {}\n",
        c.client_cert.display(),
        c.client_key.display()
    ))
    .unwrap();
    let e = unknown_ca.connect().await.unwrap_err().to_string();
    assert!(e.contains("TLS") || e.contains("certificate"), "{e}");
    // No client certificate: the server refuses.
    let mut no_cert = output(&format!("{base}ca_file: {}\n", c.ca.display())).unwrap();
    assert!(no_cert.connect().await.is_err());
    let mut insecure = output(&format!(
        "{base}insecure_skip_verify: true\ntls_cert: {}\ntls_key: {}\n",
        c.client_cert.display(),
        c.client_key.display()
    ))
    .unwrap();
    insecure.connect().await.unwrap();
    insecure.write(&batch(1)).await.unwrap();
}
