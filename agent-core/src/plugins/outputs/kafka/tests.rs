use super::*;
use crate::config::PluginConfig;

fn build(yaml: &str) -> PluginResult<KafkaOutput> {
    KafkaOutput::new(&PluginConfig::from_value(
        "kafka",
        serde_yaml_ng::from_str(yaml).unwrap(),
    ))
}

#[test]
fn config_errors_name_the_key() {
    for (yaml, key) in [
        ("brokers: []", "brokers"),
        ("brokers: [localhost]", "brokers[0]"),
        ("brokers: ['a:1', 'b:0']", "brokers[1]"),
        ("brokers: ['a:99999']", "brokers[0]"),
        ("brokers: ['a:1']\ntopic: ''", "topic"),
        ("brokers: ['a:1']\ntopic: 'a b'", "topic"),
        ("brokers: ['a:1']\ntopic: 'x-{name'", "topic"),
        ("brokers: ['a:1']\ntopic: 'x-}'", "topic"),
        ("brokers: ['a:1']\ntopic: 'x-{}'", "topic"),
        ("brokers: ['a:1']\nformat: avro", "format"),
        ("brokers: ['a:1']\ncompression: zstd", "compression"),
        ("brokers: ['a:1']\nrequired_acks: 2", "required_acks"),
        ("brokers: ['a:1']\nrequired_acks: some", "required_acks"),
        ("brokers: ['a:1']\ntimeout: 0", "timeout"),
        ("brokers: ['a:1']\ntimeout: 120", "timeout"),
        ("brokers: ['a:1']\nclient_id: 'a b'", "client_id"),
    ] {
        let e = build(yaml).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(&format!("`kafka.{key}`")), "{yaml}: {e}");
    }
    let ok = build("brokers: ['127.0.0.1:9092', '[::1]:9093']\nrequired_acks: -1").unwrap();
    assert_eq!(ok.acks, "all");
}

#[test]
fn topic_templates_take_the_name_and_tags() {
    let parts = parse_template("agent.{host_name}.{name}-x").unwrap();
    let m = Metric::new("cpu", 0).with_tag("host_name", "web 1/ü");
    let mut t = String::new();
    render_topic(&parts, &m, &mut t);
    assert_eq!(t, "agent.web_1__.cpu-x");
    let parts = parse_template("{region}").unwrap();
    render_topic(&parts, &m, &mut t);
    assert_eq!(t, "_", "a missing tag leaves no empty topic");
}
