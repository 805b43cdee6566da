//! PyAgent's processor and aggs layout through the real planner: per-input
//! processor files, common_processor/common_aggs, befor/after hooks, the
//! alarm stage (also for threshold-only blocks), `plugin:` choosing the
//! rules, and host.yaml thresholds deep-merged into a plugin file's alarm.
mod common;

use agent_core::config::StageKind;
use agent_core::plugins::processors::alarm::Alarm;
use agent_core::{AgentConfig, Metric, MetricKind, Plan, Processor, Registry};
use common::*;

#[test]
fn stages_in_pyagent_order_and_merged_thresholds() {
    let (_dir, etc) = etc(&[
        (
            "main.yaml",
            "open: [demo, other]\ncommon_output: []\ncommon_processor: [shared]\ncommon_aggs: [sharedaggs]\n",
        ),
        ("input/other.yaml", "plugin: demo\n"),
        ("processor/demo.yaml", "use_plugin_converter: {get_round: {fields_suffix: [_float]}}\n"),
        ("processor/other.yaml", "use_plugin_rename: {fields: {x: y}}\n"),
        ("processor/shared.yaml", "use_plugin_filter: {fielddrop: [testin]}\n"),
        (
            "aggs/demo.yaml",
            "befor: {use_plugin_rename: {fields: {total: count}}}\nalarm: {comment: c, limit: 15}\nthreshold: [{field: x, op: '>=', value: 20}]\nuse_plugin_basicstats: {period: 60}\nafter: {use_plugin_discard: {all: [demo_discard]}}\n",
        ),
        ("aggs/other.yaml", "threshold: [{field: x, op: '>', value: 1000}]\n"),
        ("aggs/sharedaggs.yaml", "use_plugin_discard: {all: [test_float]}\n"),
        // Host-level override of one threshold: must not drop `comment`.
        ("host.yaml", "aggs: {demo: {alarm: {limit: 31}}}\n"),
    ]);
    let cfg = AgentConfig::load(&etc).unwrap();
    let plan = Plan::new(&cfg, &Registry::with_builtins()).unwrap();
    let demo = &plan.pipelines[0];
    let names: Vec<&str> = demo.stages.iter().map(|s| s.plugin.as_str()).collect();
    assert_eq!(
        names,
        [
            "converter",
            "filter",
            "rename",
            "alarm",
            "basicstats",
            "discard",
            "discard"
        ]
    );
    assert_eq!(demo.stages[4].kind, StageKind::Aggregator);
    let other = &plan.pipelines[1];
    let names: Vec<&str> = other.stages.iter().map(|s| s.plugin.as_str()).collect();
    // Threshold-only block: the alarm stage is planned too.
    assert_eq!(names, ["rename", "filter", "alarm", "discard"]);

    let alarm_stage = &demo.stages[3];
    assert_eq!(alarm_stage.config.input, "demo");
    let mut alarm = Alarm::from_config(&alarm_stage.config).unwrap();
    let mut batch = vec![Metric::new("demo", 0).with_field("x", 20i64)];
    alarm.apply(&mut batch).unwrap();
    let alarms: Vec<&Metric> = batch
        .iter()
        .filter(|m| m.kind == MetricKind::Alarm)
        .collect();
    // limit 31 from host.yaml (20 < 31), and the threshold's `more` falls
    // back to the file's `comment`, which the merge kept.
    assert_eq!(alarms.len(), 2, "{batch:?}");
    assert_eq!(alarms[0].field("info").unwrap().to_string(), "示例报警数据");
    assert_eq!(alarms[1].field("info").unwrap().to_string(), "x: 20>=20");
    assert_eq!(alarms[1].field("more").unwrap().to_string(), "c");

    // `other` runs the demo input, so an `alarm:` there would use demo's
    // rules; its threshold rule is what applies here.
    let mut alarm = Alarm::from_config(&other.stages[2].config).unwrap();
    let mut batch = vec![Metric::new("other", 0).with_field("x", 1001i64)];
    alarm.apply(&mut batch).unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(batch[0].name, "other");
    assert_eq!(batch[0].field("info").unwrap().to_string(), "x: 1001>1000");
}
