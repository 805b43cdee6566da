//! Against a real mosquitto (Debian package) on a free loopback port, read
//! back with mosquitto_sub (mosquitto-clients).
use super::*;
use crate::config::PluginConfig;
use crate::plugins::common::broker_test::{certs, free_port, mosquitto, require, Sub};

fn output(yaml: &str) -> PluginResult<MqttOutput> {
    MqttOutput::new(&PluginConfig::from_value(
        "mqtt",
        serde_yaml_ng::from_str(yaml).unwrap(),
    ))
}

fn batch(n: u64) -> Vec<Metric> {
    (0..n)
        .map(|i| {
            Metric::new("disk", 1_700_000_000_000_000_000 + i as i64)
                .with_tag("host_name", "web/1+#")
                .with_tag("mount", "/var")
                .with_field("seq", i)
        })
        .collect()
}

fn seqs(lines: &[String]) -> Vec<u64> {
    let mut v: Vec<u64> = lines
        .iter()
        .map(|l| {
            let (_, p) = l.split_once(' ').unwrap();
            let j: serde_json::Value = serde_json::from_str(p).unwrap();
            j["seq"].as_u64().unwrap()
        })
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn config_errors_name_the_key() {
    for (yaml, key, why) in [
        ("servers: []", "servers", "at least one"),
        ("servers: ['http://x']", "servers[0]", "unknown scheme"),
        ("qos: 3", "qos", "0, 1 or 2"),
        ("qos: -1", "qos", ""),
        ("topic: 'a/+/b'", "topic", "wildcards"),
        ("topic: 'a/#'", "topic", "wildcards"),
        ("topic: ''", "topic", "1 to 65535"),
        (
            "topic: 'a/{hostname}'",
            "topic",
            "unknown placeholder `{hostname}`",
        ),
        ("client_id: ''", "client_id", "1 to 65535"),
        ("password: p", "password", "needs `username`"),
        ("keepalive: 70000", "keepalive", ""),
        ("connect_timeout: .nan", "connect_timeout", ""),
        (
            "ca_file: /nonexistent.pem",
            "ca_file",
            "not a readable file",
        ),
    ] {
        let e = output(yaml)
            .err()
            .unwrap_or_else(|| panic!("{yaml} accepted"))
            .to_string();
        assert!(e.contains(key) && e.contains(why), "{yaml}: {e}");
    }
}

#[test]
fn default_client_id_is_stable_and_plain() {
    let a = output("{}").unwrap();
    let b = output("{}").unwrap();
    assert_eq!(a.client_id, b.client_id);
    assert!(a.client_id.starts_with("agent-mqtt-"), "{}", a.client_id);
    assert!(a
        .client_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-'));
}

#[actix_rt::test]
async fn every_qos_is_delivered_with_topic_and_payload() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = mosquitto(dir.path(), port, "");
    let sub = Sub::start(&broker, port, 2, &[]);
    let mut sent = 0;
    for qos in [0u8, 1, 2] {
        let mut out = output(&format!(
            "servers: ['tcp://127.0.0.1:{port}']\nqos: {qos}\ntopic: 'agent/{{host_name}}/{{name}}/{{tag:mount}}'\nclient_id: q{qos}\n"
        ))
        .unwrap();
        out.connect().await.unwrap();
        out.write(&batch(100)).await.unwrap();
        out.close().await.unwrap();
        sent += 100;
        let lines = sub.wait_for(sent).await;
        assert_eq!(lines.len(), sent, "qos {qos}");
        let last: Vec<String> = lines[sent - 100..].to_vec();
        for l in &last {
            let (topic, _) = l.split_once(' ').unwrap();
            // `/`, `+` and `#` in values cannot be topic levels or wildcards.
            assert_eq!(topic, "agent/web_1__/disk/_var");
        }
        assert_eq!(seqs(&last), (0..100).collect::<Vec<_>>(), "qos {qos}");
        let log = broker.log_text();
        assert!(
            log.contains(&format!("Received PUBLISH from q{qos} (d0, q{qos}")),
            "qos {qos}"
        );
    }
}

#[actix_rt::test]
async fn influx_payload_and_retain() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = mosquitto(dir.path(), port, "");
    let mut out = output(&format!(
        "servers: ['127.0.0.1:{port}']\nformat: influx\nretain: true\ntopic: 'r/{{name}}'\n"
    ))
    .unwrap();
    out.write(&batch(1)).await.unwrap();
    // A reader that comes later gets the retained message.
    let sub = Sub::start(&broker, port, 1, &[]);
    // The payload ends in a newline: mosquitto_sub prints an empty line.
    let lines = sub.wait_for(2).await;
    assert_eq!(
        lines,
        vec![
            "r/disk disk,host_name=web/1+#,mount=/var seq=0u 1700000000000000000".to_string(),
            String::new()
        ]
    );
}

#[actix_rt::test]
async fn write_fails_while_the_broker_is_down_and_resumes_after() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = mosquitto(dir.path(), port, "");
    let mut out = output(&format!(
        "servers: ['tcp://127.0.0.1:{port}']\ntimeout: 2\nconnect_timeout: 1\n"
    ))
    .unwrap();
    out.write(&batch(3)).await.unwrap();
    drop(broker);
    // QoS 1: no PUBACK, no success (the broker of telegraf#14750 would
    // have been told "written").
    let e = out.write(&batch(3)).await.unwrap_err().to_string();
    println!("while down: {e}");
    assert!(out.write(&batch(3)).await.is_err());
    let broker = mosquitto(dir.path(), port, "");
    let sub = Sub::start(&broker, port, 1, &[]);
    out.write(&batch(3)).await.unwrap();
    assert_eq!(seqs(&sub.wait_for(3).await), vec![0, 1, 2]);
}

#[actix_rt::test]
async fn idle_connection_past_keepalive_is_checked_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = mosquitto(dir.path(), port, "");
    let sub = Sub::start(&broker, port, 1, &[]);
    let mut out = output(&format!(
        "servers: ['tcp://127.0.0.1:{port}']\nkeepalive: 1\nclient_id: idle\n"
    ))
    .unwrap();
    out.write(&batch(1)).await.unwrap();
    // The broker drops a client silent for 1.5 keep-alives.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    out.write(&batch(2)).await.unwrap();
    assert_eq!(seqs(&sub.wait_for(3).await), vec![0, 0, 1]);
}

#[actix_rt::test]
async fn credentials_and_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let st = std::process::Command::new(require("mosquitto_passwd", "mosquitto"))
        .args(["-c", "-b"])
        .arg(&passwd)
        .args(["agent", "s3cret"])
        .status()
        .unwrap();
    assert!(st.success());
    let port = free_port();
    let _broker = mosquitto(
        dir.path(),
        port,
        &format!("allow_anonymous false\npassword_file {}", passwd.display()),
    );
    let base = format!("servers: ['tcp://127.0.0.1:{port}']\n");
    let e = output(&format!("{base}username: agent\npassword: wrong\n"))
        .unwrap()
        .connect()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("refused"), "{e}");
    let mut good = output(&format!("{base}username: agent\npassword: s3cret\n")).unwrap();
    good.write(&batch(1)).await.unwrap();
    let mut in_url = output(&format!(
        "servers: ['tcp://agent:s3cret@127.0.0.1:{port}']\n"
    ))
    .unwrap();
    in_url.write(&batch(1)).await.unwrap();
}

#[actix_rt::test]
async fn tls_verifies_the_broker_and_sends_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path());
    let port = free_port();
    let broker = mosquitto(
        dir.path(),
        port,
        &format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true",
            c.ca.display(),
            c.server_cert.display(),
            c.server_key.display()
        ),
    );
    let base = format!("servers: ['ssl://localhost:{port}']\ntimeout: 3\nconnect_timeout: 3\n");
    let client = format!(
        "tls_cert: {}\ntls_key: {}\n",
        c.client_cert.display(),
        c.client_key.display()
    );
    let mut good = output(&format!("{base}ca_file: {}\n{client}", c.ca.display())).unwrap();
    good.write(&batch(2)).await.unwrap();
    let e = output(&format!("{base}{client}"))
        .unwrap()
        .connect()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("TLS") || e.contains("certificate"), "{e}");
    assert!(output(&format!("{base}ca_file: {}\n", c.ca.display()))
        .unwrap()
        .connect()
        .await
        .is_err());
    let mut insecure = output(&format!("{base}insecure_skip_verify: true\n{client}")).unwrap();
    insecure.write(&batch(1)).await.unwrap();
    assert!(broker.log_text().contains("PUBLISH"));
}
