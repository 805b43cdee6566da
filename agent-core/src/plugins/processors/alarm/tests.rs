//! Golden tests: a metric and a config in, the exact alarm lines out.
use super::*;
use crate::format::console::line;

const TS: i64 = 1_636_361_935_000_000_000;

fn alarm(input: &str, yaml: &str) -> Alarm {
    let mut cfg = PluginConfig::from_value(
        &format!("aggs.{input}"),
        serde_yaml_ng::from_str(yaml).unwrap(),
    );
    cfg.input = Str::new(input);
    Alarm::from_config(&cfg).unwrap()
}

fn metric(name: &str) -> Metric {
    Metric::new(name, TS)
        .with_tag("node_ip", "0.0.0.1")
        .with_tag("host", "Host001")
}

/// Console lines of the batch after the processor, TZ fixed to UTC.
fn run(a: &mut Alarm, mut batch: Vec<Metric>) -> Vec<String> {
    std::env::set_var("TZ", "UTC");
    a.apply(&mut batch).unwrap();
    batch.iter().map(line).collect()
}

fn alarms(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .filter(|l| l.starts_with(">>> ALARM"))
        .map(|l| l.split_once("host=Host001 ").map_or(l.as_str(), |(_, r)| r))
        .collect()
}

const HEAD: &str = ">>> ALARM, name=ping time=2021-11-08T08:58:55+00:00 timestamp=1636361935 node_ip=0.0.0.1 host=Host001";

#[test]
fn ping_golden_line_and_order() {
    let mut a = alarm(
        "ping",
        "alarm: {loss: 100, target: {谷歌IP: {average: 350, loss: 40}}}",
    );
    let m = metric("ping")
        .with_field("tag", "测试网络不通")
        .with_field("address", "123.0.0.45")
        .with_field("loss", 100i64)
        .with_field("average", 5000.0)
        .with_field("maximum", 5000.0);
    let m2 = metric("ping")
        .with_field("tag", "谷歌IP")
        .with_field("address", "8.8.8.8")
        .with_field("loss", 0i64)
        .with_field("average", 350.0)
        .with_field("maximum", 400.0);
    let lines = run(&mut a, vec![m, m2]);
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines[0],
        format!("{HEAD} code=monitor_metric_alarm info=测试网络不通 丢包比例过高(%): 100>=100.0 tag=测试网络不通 more=123.0.0.45")
    );
    assert!(lines[1].starts_with(">>> METRIC, name=ping") && lines[1].contains("tag=测试网络不通"));
    // Target thresholds win; loss 0 < 40, the average (inclusive) fires.
    assert_eq!(
        alarms(&lines)[1],
        "code=monitor_metric_alarm info=谷歌IP 平均延迟过高(ms): 350.0>=350.0 tag=谷歌IP more=8.8.8.8"
    );
    assert!(lines[3].starts_with(">>> METRIC"));
}

#[test]
fn cpu_first_match_process_top_and_zero_threshold() {
    let yaml = "alarm: {comment: CPU, percent: 82.3, max_percent: 90.5, loadavg_precent_1: 0}";
    let mut a = alarm("cpu", yaml);
    let busy = metric("cpu")
        .with_field("percent", 85.0)
        .with_field("max_percent", 99.0)
        .with_field("loadavg_precent_1", 12.5)
        .with_field("process_top_0_pid", 42i64)
        .with_field("process_top_0_name", "java")
        .with_field("process_top_0_cpu_percent", 80.1)
        .with_field("process_top_1_pid", 7i64)
        .with_field("process_top_1_name", "sh")
        .with_field("process_top_1_cpu_percent", 1.0);
    let calm = metric("cpu")
        .with_field("percent", 10.0)
        .with_field("max_percent", 20.0)
        .with_field("loadavg_precent_1", 0.0);
    let lines = run(&mut a, vec![busy, calm]);
    assert_eq!(
        alarms(&lines),
        [
            "code=monitor_metric_alarm info=CPU 总使用率过高(%): 85.0>=82.3 more=42.java(80.1%), 7.sh(1.0%)",
            // A 0 threshold counts (PyAgent read it as unset).
            "code=monitor_metric_alarm info=系统平均负载过高(%): 0.0>=0.0 more=CPU",
        ]
    );
    let mut a = alarm("cpu", "alarm: {max_percent: 90, use_process_top: false}");
    let lines = run(&mut a, vec![metric("cpu").with_field("max_percent", 90i64)]);
    assert_eq!(
        alarms(&lines),
        ["code=monitor_metric_alarm info=CPU 单核使用率过高(%): 90>=90.0"]
    );
}

#[test]
fn mem_and_disk() {
    let mut a = alarm(
        "mem",
        "alarm: {comment: 内存, percent: 54.3, code: mem_code}",
    );
    let lines = run(&mut a, vec![metric("mem").with_field("percent", 54.3)]);
    assert_eq!(
        alarms(&lines),
        ["code=mem_code info=内存占用率过高(%): 54.3>=54.3 more=内存"]
    );

    let mut a = alarm(
        "disk",
        "alarm: {percent: 80, disk_symbol: {'C:\\': {percent: 90}, /data: null}}",
    );
    let d = |mount: &str, p: f64| {
        metric("disk")
            .with_tag("mountpoint", mount)
            .with_field("percent", p)
    };
    let lines = run(
        &mut a,
        vec![
            d("c:\\", 91.0),
            d("/data", 80.0),
            d("/", 99.0),
            d("/DATA", 79.9),
        ],
    );
    assert_eq!(
        alarms(&lines),
        [
            "mountpoint=c:\\ code=monitor_metric_alarm info=磁盘 c 占用率高(%): 91.0>=90.0",
            "mountpoint=/data code=monitor_metric_alarm info=磁盘 /data 占用率高(%): 80.0>=80.0",
        ]
    );
}

#[test]
fn network_bandwidth_and_vip_watch() {
    let yaml = "plugin: network\nalarm: {eth9: {comment: SQL 集群, kbps_in: 0, kbps_out: 7777, vip: {ipv4: 192.168.3.100}}}";
    let mut a = alarm("network-vip-test", yaml);
    let n = |ips: &str, kin: f64| {
        metric("network")
            .with_tag("nic", "eth9")
            .with_field("kbps_in", kin)
            .with_field("kbps_out", 1.0)
            .with_field("ipv4", ips)
    };
    let lines = run(&mut a, vec![n("10.0.0.1,192.168.3.100", 0.0)]);
    assert_eq!(
        alarms(&lines),
        ["nic=eth9 code=monitor_metric_alarm info=eth9 流入带宽(kbps): 0.0>=0.0 tag=eth9 more=SQL 集群"]
    );
    let mut later = n("10.0.0.1", 0.0);
    later.timestamp_ns += 60_000_000_000;
    let lines = run(&mut a, vec![later.clone()]);
    assert_eq!(
        alarms(&lines)[1],
        "nic=eth9 code=monitor_metric_alarm info=eth9 减少 IP: 192.168.3.100 tag=eth9 flag=vip_dec_1636361995 more=SQL 集群"
    );
    later.set_field("ipv4", "192.168.3.100, 10.0.0.1");
    let lines = run(&mut a, vec![later]);
    assert!(alarms(&lines)[1]
        .contains("info=eth9 增加 IP: 192.168.3.100 tag=eth9 flag=vip_inc_1636361995"));
}

#[test]
fn telnet_and_demo() {
    let mut a = alarm("telnet", "alarm: {all: false, target: [web]}");
    let t = |tag: &str, yes: bool| {
        metric("telnet")
            .with_field("tag", tag)
            .with_field("address", "127.0.0.1:1")
            .with_field("yes", yes)
            .with_field("errcode", 111i64)
    };
    let lines = run(
        &mut a,
        vec![t("web", false), t("other", false), t("web", true)],
    );
    assert_eq!(
        alarms(&lines),
        ["code=monitor_metric_alarm info=web - Telnet 端口不通 tag=web more=127.0.0.1:1"]
    );
    let mut a = alarm("demo", "alarm: {comment: 数字比较, limit: 15}");
    let lines = run(
        &mut a,
        vec![
            metric("demo").with_field("x", 7i64),
            metric("demo").with_field("x", 15i64),
        ],
    );
    assert_eq!(
        alarms(&lines),
        ["code=monitor_metric_alarm info=示例报警数据 tag=demo flag=test more=报警附加消息"]
    );
}

#[test]
fn curl_checks_and_msg_fields() {
    let yaml = r#"
alarm:
  comment: CURL
  all: {status: [200, 301]}
  target:
    api: {json: {ok: 1}, headers: {Server: nginx}}
    charge: {metric: {ok: 1, msg: ''}}
    text: {contains: baidu.com}
  use_msg_fields: {all: [errmsg, exception], all_except: [text], charge: [msg]}
"#;
    let mut a = alarm("curl", yaml);
    let c = |tag: &str, status: i64, resp: &str| {
        metric("curl")
            .with_field("tag", tag)
            .with_field("url", format!("http://127.0.0.1/{tag}"))
            .with_field("status", status)
            .with_field("response", resp)
            .with_field("headers", r#"{"server": "nginx"}"#)
    };
    let lines = run(
        &mut a,
        vec![
            c("down", 504, "").with_field("exception", "timeout"),
            c("api", 200, r#"{"ok": 0}"#),
            c("api", 200, "[1]"),
            c("charge", 200, "")
                .with_field("ok", 1i64)
                .with_field("msg", "余额不足"),
            c("text", 200, "hello"),
            c("api", 200, r#"{"ok": 1}"#),
        ],
    );
    let got: Vec<&str> = alarms(&lines)
        .iter()
        .map(|l| l.split_once("info=").unwrap().1)
        .collect();
    assert_eq!(
        got,
        [
            "down - HTTP 状态码错误: 504 timeout tag=down more=http://127.0.0.1/down",
            "api - 返回值: ok != 1 tag=api more=http://127.0.0.1/api",
            "api - 返回值不是有效JSON键值对 tag=api more=http://127.0.0.1/api",
            "charge - 数据项: msg !=  余额不足 tag=charge more=http://127.0.0.1/charge",
            "text - 返回值不包含: baidu.com tag=text more=http://127.0.0.1/text",
        ]
    );
}

#[test]
fn process_counts_and_absent_process() {
    let yaml = "alarm: {target: {nginx: {comment: web, min_process_num: 1, max_process_num: 2, cpu_percent: 20}, mysqld: {min_process_num: 1}, bash: {memory_percent: 0.5}}}";
    let mut a = alarm("process", yaml);
    let p = |name: &str, cpu: f64, mem: f64| {
        metric("process")
            .with_field("name", name)
            .with_field("cpu_percent", cpu)
            .with_field("memory_percent", mem)
    };
    let lines = run(
        &mut a,
        vec![
            p("bash", 0.0, 0.333),
            p("nginx", 15.0, 1.0),
            p("nginx", 5.5, 1.0),
            p("bash", 0.0, 0.333),
        ],
    );
    assert_eq!(
        alarms(&lines),
        [
            "code=monitor_metric_alarm info=bash 内存占用过高(%): 0.67>=0.5",
            // Absent: alarms instead of crashing, placed first.
            "code=monitor_metric_alarm info=mysqld 进程数小于配置: 0<1",
            "code=monitor_metric_alarm info=nginx CPU占用过高(%): 20.5>=20.0 more=web",
        ]
    );
    // Each alarm sits just before the first metric of its process.
    let pos = |s: &str| lines.iter().position(|l| l.contains(s)).unwrap();
    assert_eq!(pos("nginx CPU") + 1, pos("name=nginx"));
    assert_eq!(pos("bash 内存") + 2, pos("name=bash"));
}

#[test]
fn generic_threshold_and_bad_data_reported() {
    let yaml = r#"
threshold:
  - {field: x, op: '<', value: 10, message: 'x too low: {value}'}
  - {field: state, op: '!=', value: up, tag: svc}
"#;
    let mut a = alarm("custom", yaml);
    let mut batch = vec![
        metric("custom").with_field("x", 3i64),
        metric("custom").with_field("x", "NaN-ish"),
        metric("custom")
            .with_field("tag", "svc")
            .with_field("state", "down")
            .with_field("x", 11i64),
    ];
    let err = a.apply(&mut batch).unwrap_err().to_string();
    assert!(
        err.contains("1 check(s)") && err.contains("not a number"),
        "{err}"
    );
    let lines: Vec<String> = batch.iter().map(line).collect();
    let got = alarms(&lines);
    assert_eq!(got.len(), 2);
    assert!(got[0].contains("info=x too low: 3"), "{}", got[0]);
    assert!(
        got[1].contains("info=state: down!=up tag=svc"),
        "{}",
        got[1]
    );
    assert_eq!(batch.len(), 5);
}

#[test]
fn state_for_repeat_recovery_survive_rebuild() {
    // A unique input name: the store is process-wide.
    let input = "mem-state-test";
    let yaml = |comment: &str| {
        format!("plugin: mem\nalarm: {{comment: {comment}, percent: 80, for: 3, repeat_sec: 120, recovery: true}}")
    };
    let at = |secs: i64, p: f64| {
        let mut m = metric("mem").with_field("percent", p);
        m.timestamp_ns = TS + secs * 1_000_000_000;
        vec![m]
    };
    let mut a = alarm(input, &yaml("one"));
    assert!(alarms(&run(&mut a, at(0, 90.0))).is_empty());
    assert!(alarms(&run(&mut a, at(60, 90.0))).is_empty());
    // Reconfigure an unrelated key: the core rebuilds from the factory.
    let mut a = alarm(input, &yaml("two"));
    let lines = run(&mut a, at(120, 91.0));
    assert_eq!(
        alarms(&lines),
        ["code=monitor_metric_alarm info=内存占用率过高(%): 91.0>=80.0 more=two"]
    );
    // Active: suppressed until repeat_sec has passed.
    assert!(alarms(&run(&mut a, at(180, 95.0))).is_empty());
    let mut a = alarm(input, &yaml("three"));
    assert_eq!(alarms(&run(&mut a, at(240, 95.0))).len(), 1);
    let lines = run(&mut a, at(300, 10.0));
    assert_eq!(
        alarms(&lines),
        ["code=monitor_metric_alarm info=已恢复: 内存占用率过高(%): 95.0>=80.0 flag=recover more=three"]
    );
    assert!(alarms(&run(&mut a, at(360, 10.0))).is_empty());
}

#[test]
fn bad_configs_name_the_key() {
    let cfg = |y: &str| {
        let mut c = PluginConfig::from_value("aggs.cpu", serde_yaml_ng::from_str(y).unwrap());
        c.input = Str::new("cpu");
        Alarm::from_config(&c).err().unwrap()
    };
    assert_eq!(cfg("alarm: {percent: high}").key, "aggs.cpu.alarm.percent");
    assert_eq!(
        cfg("threshold: [{field: x, op: '=>', value: 1}]").key,
        "aggs.cpu.threshold[0].op"
    );
    assert_eq!(
        cfg("alarm: {repeat_sec: -1}").key,
        "aggs.cpu.alarm.repeat_sec"
    );
}
