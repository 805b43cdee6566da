//! PyAgent's etc/ layout: merge order, deep merge, interval inheritance,
//! and every kind of config error naming its file, key and reason.
mod common;

use agent_core::{AgentConfig, ConfigError, Plan, Registry};

use std::path::Path;
use std::time::Duration;

fn plan(etc: &Path) -> Result<Plan, ConfigError> {
    let cfg = AgentConfig::load(etc)?;
    Plan::new(&cfg, &Registry::with_builtins())
}

fn demo_interval(etc: &Path) -> Duration {
    plan(etc).unwrap().pipelines[0].interval
}

const MAIN: &str = "open: [demo]\ninterval: 60\ncommon_output: [console]\n";

#[test]
fn each_layer_wins_in_pyagent_order() {
    let layers = [
        (
            "main.yaml",
            format!("{MAIN}input:\n  demo: {{interval: 1}}\n"),
        ),
        (
            "main/main.yaml",
            "input:\n  demo: {interval: 2}\n".to_string(),
        ),
        ("input/demo.yaml", "interval: 3\n".to_string()),
        ("host.yaml", "input:\n  demo: {interval: 4}\n".to_string()),
        (
            "main/host.yaml",
            "input:\n  demo: {interval: 5}\n".to_string(),
        ),
    ];
    // With the first k layers present, layer k decides.
    for k in 1..=layers.len() {
        let files: Vec<(&str, &str)> = layers[..k].iter().map(|(p, t)| (*p, t.as_str())).collect();
        let (_d, etc) = common::etc(&files);
        assert_eq!(
            demo_interval(&etc),
            Duration::from_secs(k as u64),
            "with {k} layers"
        );
    }
}

#[test]
fn top_level_keys_follow_the_same_order() {
    let (_d, etc) = common::etc(&[
        ("main.yaml", &format!("{MAIN}reload_sec: 30\n")),
        ("main/main.yaml", "reload_sec: 40\n"),
        ("host.yaml", "reload_sec: 50\n"),
    ]);
    assert_eq!(
        AgentConfig::load(&etc)
            .unwrap()
            .main
            .reload_sec
            .as_secs_f64(),
        50.0
    );
}

#[test]
fn alarm_blocks_merge_deeply() {
    // PyAgent merged two levels deep, so a plugin file's `alarm:` dropped
    // every host-level threshold. Here host.yaml overrides one key only.
    let (_d, etc) = common::etc(&[
        ("main.yaml", MAIN),
        (
            "aggs/cpu.yaml",
            "alarm:\n  comment: web tier\n  percent: 90\n  max_percent: 95\n",
        ),
        (
            "host.yaml",
            "aggs:\n  cpu:\n    alarm:\n      percent: 50\n",
        ),
    ]);
    let cfg = AgentConfig::load(&etc).unwrap();
    let alarm = cfg
        .section("aggs", "cpu")
        .value()
        .get("alarm")
        .cloned()
        .unwrap();
    let want: serde_yaml_ng::Value =
        serde_yaml_ng::from_str("{comment: web tier, percent: 50, max_percent: 95}").unwrap();
    assert_eq!(alarm, want);
}

#[test]
fn interval_is_inherited_from_main() {
    let (_d, etc) = common::etc(&[(
        "main.yaml",
        "open: [demo]\ninterval: 7\ncommon_output: [console]\n",
    )]);
    assert_eq!(demo_interval(&etc), Duration::from_secs(7));
    let (_d, etc) = common::etc(&[("main.yaml", "open: [demo]\ncommon_output: [console]\n")]);
    assert_eq!(
        demo_interval(&etc),
        Duration::from_secs(60),
        "PyAgent default"
    );
    let (_d, etc) = common::etc(&[("main.yaml", MAIN), ("input/demo.yaml", "interval: 0.5\n")]);
    assert_eq!(demo_interval(&etc), Duration::from_millis(500));
}

#[test]
fn info_is_filled_from_the_host() {
    let (_d, etc) = common::etc(&[(
        "main.yaml",
        &format!("{MAIN}info:\n  region: eu\n  node_ip: ''\n"),
    )]);
    let cfg = AgentConfig::load(&etc).unwrap();
    let get = |k: &str| {
        cfg.info
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.to_string())
    };
    assert_eq!(get("region").as_deref(), Some("eu"));
    let ip: std::net::IpAddr = get("node_ip").unwrap().parse().expect("node_ip is an IP");
    assert!(!ip.is_unspecified());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(get("host_name").unwrap(), host.trim());
    // Order: configured keys first, filled ones after.
    assert_eq!(cfg.info[0].0, "region");
}

fn err(files: &[(&str, &str)]) -> (ConfigError, tempfile::TempDir) {
    let (d, etc) = common::etc(files);
    (plan(&etc).expect_err("config must be rejected"), d)
}

#[test]
fn yaml_syntax_error_names_file_line_and_column() {
    let (e, _d) = err(&[
        ("main.yaml", MAIN),
        ("input/demo.yaml", "interval: 5\ntarget: [a, b\n"),
    ]);
    assert!(e.file.ends_with("input/demo.yaml"), "{e}");
    assert!(
        e.reason.contains("line 3") || e.reason.contains("line 2"),
        "{e}"
    );
    assert!(e.reason.contains("column"), "{e}");
}

#[test]
fn unknown_plugins_are_named() {
    let (e, _d) = err(&[(
        "main.yaml",
        "open: [demo, cpuu]\ncommon_output: [console]\n",
    )]);
    assert!(e.file.ends_with("main.yaml"), "{e}");
    assert_eq!(e.key, "open[1]");
    assert!(e.reason.contains("unknown input plugin `cpuu`"), "{e}");
    assert!(e.reason.contains("demo"), "lists what exists: {e}");

    let (e, _d) = err(&[("main.yaml", "open: [demo]\ncommon_output: [console, es2]\n")]);
    assert_eq!(e.key, "common_output");
    assert!(e.reason.contains("unknown output plugin `es2`"), "{e}");

    let (e, _d) = err(&[
        ("main.yaml", MAIN),
        ("processor/demo.yaml", "use_plugin_nosuch: {}\n"),
    ]);
    assert!(e.file.ends_with("processor/demo.yaml"), "{e}");
    assert_eq!(e.key, "processor.demo.use_plugin_nosuch");
    assert!(
        e.reason
            .contains("unknown processor or aggregator `nosuch`"),
        "{e}"
    );
}

#[test]
fn wrong_types_name_the_file_that_set_the_key() {
    let (e, _d) = err(&[("main.yaml", MAIN), ("input/demo.yaml", "interval: soon\n")]);
    assert!(e.file.ends_with("input/demo.yaml"), "{e}");
    assert_eq!(e.key, "input.demo.interval");
    assert!(e.reason.contains("invalid type"), "{e}");

    let (e, _d) = err(&[("main.yaml", MAIN), ("host.yaml", "open: demo\n")]);
    assert!(e.file.ends_with("host.yaml"), "{e}");
    assert_eq!(e.key, "open");

    let (e, _d) = err(&[
        ("main.yaml", MAIN),
        ("output/console.yaml", "target: printer\n"),
    ]);
    assert!(e.file.ends_with("output/console.yaml"), "{e}");
    assert_eq!(e.key, "output.console.target");
    assert!(e.reason.contains("unknown variant"), "{e}");
}

#[test]
fn out_of_range_values_are_rejected() {
    for (extra, key, words) in [
        ("reload_sec: 5\n", "reload_sec", "between 10 and 86400"),
        ("delay_sec: 31\n", "delay_sec", "between 0 and 30"),
        ("interval: 0\n", "interval", "between 0.001 and 86400"),
        ("log: {rotation: huge}\n", "log.rotation", "size"),
    ] {
        let main = format!("open: [demo]\ncommon_output: [console]\n{extra}");
        let (e, _d) = err(&[("main.yaml", &main)]);
        assert_eq!(e.key, key, "{e}");
        assert!(e.reason.contains(words), "{e}");
        assert!(e.file.ends_with("main.yaml"));
    }
    let (e, _d) = err(&[("main.yaml", MAIN), ("input/demo.yaml", "interval: -1\n")]);
    assert_eq!(e.key, "input.demo.interval");
    assert!(e.file.ends_with("input/demo.yaml"));
    let (e, _d) = err(&[
        ("main.yaml", MAIN),
        ("output/console.yaml", "batch_size: 100\nbuffer_limit: 10\n"),
    ]);
    assert_eq!(e.key, "output.console.buffer_limit");
}

/// Values that used to panic `validate` or pass it and break at run time:
/// each is a config error naming its file, key and reason.
#[test]
fn hostile_values_are_config_errors() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "output/console.yaml",
            "flush_interval: -1\n",
            "output.console.flush_interval",
            "negative",
        ),
        (
            "output/console.yaml",
            "flush_interval: .nan\n",
            "output.console.flush_interval",
            "NaN",
        ),
        (
            "output/console.yaml",
            "flush_interval: .inf\n",
            "output.console.flush_interval",
            "inf",
        ),
        (
            "output/console.yaml",
            "interval: 0\n",
            "output.console.interval",
            "between 0.001",
        ),
        (
            "output/console.yaml",
            "flush_jitter: 1e300\n",
            "output.console.flush_jitter",
            "at most",
        ),
        (
            "output/console.yaml",
            "flush_jitter: 7200\n",
            "output.console.flush_jitter",
            "between 0 and 3600",
        ),
        (
            "output/console.yaml",
            "retry_max_sec: .nan\n",
            "output.console.retry_max_sec",
            "NaN",
        ),
        (
            "output/console.yaml",
            "retry_max_sec: -1\n",
            "output.console.retry_max_sec",
            "negative",
        ),
        (
            "output/console.yaml",
            "retry_max_sec: 0\n",
            "output.console.retry_max_sec",
            "between 0.001",
        ),
        (
            "output/console.yaml",
            "batch_size: 0\n",
            "output.console.batch_size",
            "between 1 and",
        ),
        (
            "output/console.yaml",
            "batch_size: 1.8446744073709552e19\n",
            "output.console.batch_size",
            "at most",
        ),
        (
            "output/console.yaml",
            "buffer_limit: -5\n",
            "output.console.buffer_limit",
            "negative",
        ),
        (
            "output/console.yaml",
            "disk_buffer: {path: x, max_bytes: -1}\n",
            "output.console.disk_buffer.max_bytes",
            "negative",
        ),
        (
            "output/console.yaml",
            "disk_buffer: {path: x, max_bytes: 0}\n",
            "output.console.disk_buffer.max_bytes",
            "positive size",
        ),
        ("main.yaml", "delay_sec: .nan\n", "delay_sec", "NaN"),
        ("main.yaml", "interval: 1e300\n", "interval", "at most"),
        (
            "main.yaml",
            "update_api_timeout: 0\n",
            "update_api_timeout",
            "between 0.001",
        ),
        (
            "main.yaml",
            "reload_sec: [1]\n",
            "reload_sec",
            "number of seconds",
        ),
        (
            "main.yaml",
            "log: {rotation: -1}\n",
            "log.rotation",
            "negative",
        ),
        (
            "main.yaml",
            "log: {rotation: 0}\n",
            "log.rotation",
            "above 0",
        ),
        (
            "main.yaml",
            "log: {retention: .nan}\n",
            "log.retention",
            "whole number",
        ),
        (
            "input/demo.yaml",
            "interval: .nan\n",
            "input.demo.interval",
            "NaN",
        ),
        (
            "aggs/demo.yaml",
            "use_plugin_basicstats: {period: 0}\n",
            "aggs.demo.use_plugin_basicstats.period",
            "between 0.001",
        ),
        (
            "aggs/demo.yaml",
            "use_plugin_basicstats: {period: .nan}\n",
            "aggs.demo.use_plugin_basicstats.period",
            "NaN",
        ),
        (
            "aggs/demo.yaml",
            "use_plugin_basicstats: {drop_original: 3}\n",
            "aggs.demo.use_plugin_basicstats.drop_original",
            "bool",
        ),
        (
            "aggs/demo.yaml",
            "alarm: {limit: .nan}\n",
            "aggs.demo.alarm.limit",
            "finite",
        ),
        (
            "aggs/demo.yaml",
            "alarm: {repeat_sec: 1e300}\n",
            "aggs.demo.alarm.repeat_sec",
            "at most",
        ),
    ];
    for (file, text, key, words) in cases {
        let (_d, etc) = if *file == "main.yaml" {
            let main = format!("open: [demo]\ncommon_output: [console]\n{text}");
            common::etc(&[("main.yaml", &main)])
        } else {
            common::etc(&[("main.yaml", MAIN), (file, text)])
        };
        let e = plan(&etc).expect_err(&format!("{file}: {text} accepted"));
        assert_eq!(e.key, *key, "{file}: {text}: {e}");
        assert!(e.reason.contains(words), "{file}: {text}: {e}");
        assert!(e.file.ends_with(file), "{file}: {text}: {e}");
    }
}

#[test]
fn missing_files_and_keys() {
    let (e, _d) = err(&[("host.yaml", "debug: true\n")]);
    assert!(e.file.ends_with("main.yaml"));
    assert!(e.reason.contains("missing"), "{e}");
    let (e, _d) = err(&[("main.yaml", "interval: 5\n")]);
    assert_eq!(e.key, "open");
    assert!(e.reason.contains("required"), "{e}");
    let (e, _d) = err(&[("main.yaml", "- a\n- b\n")]);
    assert!(e.reason.contains("mapping"), "{e}");
}

#[test]
fn an_oversized_file_is_refused_without_reading_it() {
    let big = "a: 1\n".repeat(1_000_000);
    let (e, _d) = err(&[("main.yaml", MAIN), ("input/demo.yaml", &big)]);
    assert!(e.file.ends_with("input/demo.yaml"));
    assert!(e.reason.contains("byte limit"), "{e}");
}

#[test]
fn common_processor_and_aggs_apply_to_every_input() {
    // Without registered processors the planner must still find the blocks:
    // an unknown use_plugin_ in a common block names that block's file.
    let (e, _d) = err(&[
        (
            "main.yaml",
            "open: [demo]\ncommon_output: [console]\ncommon_processor: [shared]\n",
        ),
        ("processor/shared.yaml", "use_plugin_zzz: {}\n"),
    ]);
    assert!(e.file.ends_with("processor/shared.yaml"), "{e}");
    assert_eq!(e.key, "processor.shared.use_plugin_zzz");
}

fn warnings(etc: &Path) -> Vec<String> {
    plan(etc)
        .unwrap_or_else(|e| panic!("{e}"))
        .warnings
        .iter()
        .map(|w| w.to_string())
        .collect()
}

/// A misspelled key is a warning with file, key and the nearest known key;
/// keys read by any parse of the same node, and PyAgent's own, are known.
#[test]
fn unknown_keys_are_warnings_with_a_suggestion() {
    let (_d, etc) = common::etc(&[
        ("main.yaml", "open: [demo]\ncommon_output: [console]\nintervall: 5\n"),
        ("output/console.yaml", "flush_intervall: 1\nbatch_size: 5\ntarget: stdout\n"),
        ("input/demo.yaml", "interval: 5\ncolour: blue\n"),
        (
            "aggs/demo.yaml",
            "befor: {use_plugin_rename: {fields: {a: b}}}\nuse_plugin_basicstats: {period: 10, stat: [count]}\nalarm: {limit: 5, comment: x, limt: 3}\nafterwards: 1\nthreshold:\n  - {field: value, op: '>', value: 5, for: 2}\n  - {field: value, value: 5, valeu: 6}\n",
        ),
    ]);
    let w = warnings(&etc);
    let file = |f: &str| etc.join(f).display().to_string();
    let expected = [
        format!(
            "{}: key `intervall`: unknown key; did you mean `interval`?",
            file("main.yaml")
        ),
        format!(
            "{}: key `aggs.demo.afterwards`: unknown key",
            file("aggs/demo.yaml")
        ),
        format!(
            "{}: key `aggs.demo.alarm.limt`: unknown key; did you mean `limit`?",
            file("aggs/demo.yaml")
        ),
        format!(
            "{}: key `aggs.demo.use_plugin_basicstats.stat`: unknown key; did you mean `stats`?",
            file("aggs/demo.yaml")
        ),
        format!(
            "{}: key `aggs.demo.threshold.1.valeu`: unknown key",
            file("aggs/demo.yaml")
        ),
        format!(
            "{}: key `input.demo.colour`: unknown key",
            file("input/demo.yaml")
        ),
        format!(
            "{}: key `output.console.flush_intervall`: unknown key; did you mean `flush_interval`?",
            file("output/console.yaml")
        ),
    ];
    for e in &expected {
        assert!(w.contains(e), "missing {e}\nin {w:#?}");
    }
    assert_eq!(w.len(), expected.len(), "{w:#?}");
}

/// Every registered plugin's sample, placed where it belongs, plans without
/// a single unknown-key warning; so do the shipped etc/ and the examples.
#[test]
fn samples_and_shipped_configs_have_no_unknown_keys() {
    let registry = Registry::with_builtins();
    for p in registry.list() {
        let (main, file) = match p.kind {
            agent_core::PluginKind::Input => (
                format!("open: [{}]\ncommon_output: [console]\n", p.name),
                format!("input/{}.yaml", p.name),
            ),
            agent_core::PluginKind::Output => (
                format!("open: [demo]\ncommon_output: [{}]\n", p.name),
                format!("output/{}.yaml", p.name),
            ),
            // Processor and aggregator samples say where they go in their
            // first lines (`etc/processor/<input>.yaml`, `etc/aggs/...`).
            _ => {
                let section = if p.sample.contains("etc/aggs/") {
                    "aggs"
                } else {
                    "processor"
                };
                (
                    "open: [cpu]\ncommon_output: [console]\n".to_string(),
                    format!("{section}/cpu.yaml"),
                )
            }
        };
        let (_d, etc) = common::etc(&[("main.yaml", &main), (&file, p.sample)]);
        let cfg = AgentConfig::load(&etc).unwrap_or_else(|e| panic!("{}: {e}", p.name));
        match Plan::new(&cfg, &registry) {
            Ok(plan) => assert!(plan.warnings.is_empty(), "{}: {:#?}", p.name, plan.warnings),
            Err(e) => panic!("sample of {} {}: {e}", p.kind, p.name),
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut dirs = vec![root.join("etc")];
    for e in std::fs::read_dir(root.join("examples")).unwrap() {
        let path = e.unwrap().path();
        if path.join("main.yaml").is_file() {
            dirs.push(path);
        }
    }
    for dir in dirs {
        assert!(
            warnings(&dir).is_empty(),
            "{}: {:#?}",
            dir.display(),
            warnings(&dir)
        );
    }
}

fn plan_with_env(etc: &Path, env: &[(&str, &str)]) -> Result<Plan, ConfigError> {
    let cfg = AgentConfig::load_with_env(etc, env.iter().copied())?;
    Plan::new(&cfg, &Registry::with_builtins())
}

/// `AGENT__<SECTION>__<NAME>__<KEY>` overrides every file; single-underscore
/// variables are not taken.
/// PyAgent printed each metric as it was made: with no interval configured
/// the console flushes within 0.1 s; a configured one is kept, and other
/// outputs keep the 10 s default.
#[test]
fn console_flushes_at_once_unless_configured() {
    let flush = |files: &[(&str, &str)]| {
        let (_d, etc) = common::etc(files);
        let plan = plan(&etc).unwrap();
        plan.outputs
            .iter()
            .map(|o| (o.name.clone(), o.settings.flush_every()))
            .collect::<Vec<_>>()
    };
    let main = "open: [demo]\ncommon_output: [console, file]\n";
    assert_eq!(
        flush(&[("main.yaml", main)]),
        [
            ("console".to_string(), Duration::from_millis(100)),
            ("file".to_string(), Duration::from_secs(10))
        ]
    );
    assert_eq!(
        flush(&[
            ("main.yaml", main),
            ("output/console.yaml", "interval: 5\n")
        ])[0]
            .1,
        Duration::from_secs(5)
    );
    assert_eq!(
        flush(&[
            ("main.yaml", main),
            ("output/console.yaml", "flush_interval: 2\n")
        ])[0]
            .1,
        Duration::from_secs(2)
    );
}

#[test]
fn environment_overrides_are_the_last_layer() {
    let (_d, etc) = common::etc(&[
        (
            "main.yaml",
            "open: [demo]\ninterval: 60\ncommon_output: [console]\n",
        ),
        ("input/demo.yaml", "interval: 3\n"),
        ("host.yaml", "input:\n  demo: {interval: 4}\n"),
        ("output/console.yaml", "batch_size: 10\n"),
    ]);
    let plan = plan_with_env(
        &etc,
        &[
            ("AGENT__INPUT__DEMO__INTERVAL", "7"),
            ("AGENT__OUTPUT__CONSOLE__FLUSH_INTERVAL", "0.5"),
            ("AGENT__OUTPUT__CONSOLE__BATCH_SIZE", "20"),
            ("AGENT_API_KEY", "secret"),
            ("AGENT_INTERVAL", "1"),
            ("PATH", "/bin"),
        ],
    )
    .unwrap();
    assert_eq!(plan.pipelines[0].interval, Duration::from_secs(7));
    let out = &plan.outputs[0].settings;
    assert_eq!(out.flush_every(), Duration::from_millis(500));
    assert_eq!(out.batch_size, 20);
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);

    // main.yaml keys, and lists given comma-separated.
    let cfg = AgentConfig::load_with_env(
        &etc,
        [("AGENT__INTERVAL", "30"), ("AGENT__OPEN", "demo,mem")],
    )
    .unwrap();
    assert_eq!(cfg.main.interval.as_secs_f64(), 30.0);
    assert_eq!(cfg.main.open, vec!["demo".to_string(), "mem".to_string()]);
    // Without overrides the files decide.
    assert_eq!(
        plan_with_env(&etc, &[]).unwrap().pipelines[0].interval,
        Duration::from_secs(4)
    );
}

/// A bad override is an error naming the variable, the key and the reason;
/// so is an unknown key set from the environment (a warning).
#[test]
fn bad_environment_override_names_the_variable() {
    let (_d, etc) = common::etc(&[("main.yaml", MAIN)]);
    let e = plan_with_env(&etc, &[("AGENT__INPUT__DEMO__INTERVAL", "-1")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "env AGENT__INPUT__DEMO__INTERVAL: key `input.demo.interval`: must not be negative, got -1"
    );
    let e = plan_with_env(&etc, &[("AGENT__OUTPUT__CONSOLE__FLUSH_JITTER", "nan")]).unwrap_err();
    assert!(
        e.to_string().starts_with(
            "env AGENT__OUTPUT__CONSOLE__FLUSH_JITTER: key `output.console.flush_jitter`: "
        ),
        "{e}"
    );
    let e = plan_with_env(&etc, &[("AGENT__RELOAD_SEC", "often")]).unwrap_err();
    assert_eq!(e.file, "env AGENT__RELOAD_SEC");
    assert_eq!(e.key, "reload_sec");
    let e = plan_with_env(&etc, &[("AGENT____X", "1")]).unwrap_err();
    assert_eq!(e.file, "env AGENT____X");
    let plan = plan_with_env(&etc, &[("AGENT__OUTPUT__CONSOLE__FLUSH_INTERVALL", "1")]).unwrap();
    let w: Vec<String> = plan.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        w,
        vec![
            "env AGENT__OUTPUT__CONSOLE__FLUSH_INTERVALL: key `output.console.flush_intervall`: unknown key; did you mean `flush_interval`?"
                .to_string()
        ]
    );
}

/// Alarm blocks whose keys are names (NICs, curl targets, ping targets,
/// processes) give no unknown-key warnings; a typo among the rule keys does.
#[test]
fn alarm_blocks_of_every_input_have_no_false_unknown_keys() {
    let (_d, etc) = common::etc(&[
        (
            "main.yaml",
            "open: [network, curl, ping, process, disk, telnet]\ncommon_output: [console]\n",
        ),
        ("input/curl.yaml", "target: {api: {url: 'http://127.0.0.1:1/'}}\n"),
        ("input/ping.yaml", "target: {LO: {address: 127.0.0.1}}\n"),
        ("input/process.yaml", "target: [agent]\n"),
        ("input/telnet.yaml", "target: {ssh: {address: '127.0.0.1:22'}}\n"),
        (
            "aggs/network.yaml",
            "alarm: {comment: NIC, eth9: {comment: SQL, kbps_in: 0, kbps_out: 7777, vip: {ipv4: 192.168.3.100}}}\n",
        ),
        (
            "aggs/curl.yaml",
            "alarm:\n  comment: CURL\n  all: {status: [200, 301]}\n  target:\n    api: {json: {ok: 1}, headers: {Server: nginx}}\n  use_msg_fields: {all: [errmsg], all_except: [text], api: [msg]}\n",
        ),
        (
            "aggs/ping.yaml",
            "alarm: {loss: 10, average: 100, target: {LO: {loss: 50}}, for: 2, repeat_sec: 60, recovery: true}\n",
        ),
        (
            "aggs/process.yaml",
            "alarm: {target: {agent: {min_process_num: 1, cpu_percent: 90}}}\n",
        ),
        ("aggs/disk.yaml", "alarm: {percent: 90, disk_symbol: {'/': {percent: 95}}}\n"),
        ("aggs/telnet.yaml", "alarm: {all: true, target: [ssh]}\n"),
    ]);
    assert!(warnings(&etc).is_empty(), "{:#?}", warnings(&etc));
    std::fs::write(
        etc.join("aggs/ping.yaml"),
        "alarm: {los: 10, target: {LO: {averag: 5}}}\n",
    )
    .unwrap();
    let w = warnings(&etc);
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(
        w[0].ends_with("key `aggs.ping.alarm.los`: unknown key; did you mean `loss`?"),
        "{w:#?}"
    );
    assert!(
        w[1].ends_with("key `aggs.ping.alarm.target.LO.averag`: unknown key"),
        "{w:#?}"
    );
}

/// exec and execd configs flatten shared settings (which hides what serde
/// skipped): their keys are declared, so typos there are reported too.
#[test]
fn exec_family_typos_are_reported() {
    let (_d, etc) = common::etc(&[
        ("main.yaml", "open: [exec, execd]\ncommon_output: [execd]\n"),
        (
            "input/exec.yaml",
            "commands: [[\"true\"]]\ntimout: 5\nshell: false\ndata_format: influx\n",
        ),
        (
            "input/execd.yaml",
            "command: [cat]\nsignal_wiat: 1\ninherit_env: true\n",
        ),
        (
            "output/execd.yaml",
            "command: [cat]\ndata_formt: json\nbatch_size: 5\n",
        ),
    ]);
    let w = warnings(&etc);
    let ends = [
        "key `input.exec.timout`: unknown key; did you mean `timeout`?",
        "key `input.execd.signal_wiat`: unknown key; did you mean `signal_wait`?",
        "key `output.execd.data_formt`: unknown key; did you mean `data_format`?",
    ];
    assert_eq!(w.len(), ends.len(), "{w:#?}");
    for e in ends {
        assert!(w.iter().any(|l| l.ends_with(e)), "{e} in {w:#?}");
    }
}

#[test]
fn http_family_output_typos_are_reported() {
    // es, http and influxdb flatten their client settings into the config,
    // which hides the keys serde skipped: they declare theirs.
    let (_d, etc) = common::etc(&[
        (
            "main.yaml",
            "open: [demo]\ncommon_output: [es, http, influxdb]\n",
        ),
        (
            "output/es.yaml",
            "url: http://127.0.0.1:9/v1/{es_index}/bulk\nindx: m\ntimeout: 2\nflush_intervall: 1\n",
        ),
        (
            "output/http.yaml",
            "url: http://127.0.0.1:9/write\nbearer_tokn: x\ngzip: true\n",
        ),
        (
            "output/influxdb.yaml",
            "url: http://127.0.0.1:9\ndatabse: m\nconnect_timeout: 1\n",
        ),
    ]);
    let w = warnings(&etc);
    let ends = [
        "key `output.es.indx`: unknown key; did you mean `index`?",
        "key `output.es.flush_intervall`: unknown key; did you mean `flush_interval`?",
        "key `output.http.bearer_tokn`: unknown key; did you mean `bearer_token`?",
        "key `output.influxdb.databse`: unknown key; did you mean `database`?",
    ];
    assert_eq!(w.len(), ends.len(), "{w:#?}");
    for e in ends {
        assert!(w.iter().any(|l| l.ends_with(e)), "{e} in {w:#?}");
    }
}
