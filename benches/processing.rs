//! Throughput of a typical chain: converter + discard + the cpu/mem alarm
//! rules + basicstats, on one core. Reported as metrics per second.
use agent_core::plugins::aggregators::basicstats::BasicStats;
use agent_core::plugins::processors::alarm::Alarm;
use agent_core::plugins::processors::converter::Converter;
use agent_core::plugins::processors::discard::Discard;
use agent_core::{Aggregator, Metric, PluginConfig, Processor, Str};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const BATCH: usize = 1000;

fn cfg(input: &str, yaml: &str) -> PluginConfig {
    let mut c = PluginConfig::from_value(input, serde_yaml_ng::from_str(yaml).unwrap());
    c.input = Str::new(input);
    c
}

fn batch() -> Vec<Metric> {
    (0..BATCH)
        .map(|i| {
            let name = if i % 2 == 0 { "cpu" } else { "mem" };
            Metric::new(name, 1_636_361_935_000_000_000)
                .with_tag("node_ip", "10.0.0.1")
                .with_tag("host_name", "web1")
                .with_field("percent", (i % 100) as f64)
                .with_field("max_percent", 50.0)
                .with_field("loadavg_precent_1", 10.0)
                .with_field("total", 8_348_397_568u64)
                .with_field("used", 1_234_567u64)
                .with_field("demo_discard", "x")
        })
        .collect()
}

fn chain(c: &mut Criterion) {
    let mut conv = Converter::from_config(&cfg(
        "conv",
        "{human_bytes: {fields_items: [total, used], name_prefix: human_}, get_round: {fields_items: [percent]}}",
    ))
    .unwrap();
    let mut discard = Discard::from_config(&cfg("discard", "{all: [demo_discard]}")).unwrap();
    let mut cpu = Alarm::from_config(&cfg(
        "cpu",
        "alarm: {percent: 99, max_percent: 95, loadavg_precent_1: 80}",
    ))
    .unwrap();
    let mut mem = Alarm::from_config(&cfg("mem", "alarm: {percent: 99}")).unwrap();
    let mut stats = BasicStats::new(cfg("bs", "{}").parse().unwrap());
    let mut g = c.benchmark_group("processing");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("converter+discard+cpu/mem alarms+basicstats", |b| {
        b.iter_batched(
            batch,
            |mut b| {
                conv.apply(&mut b).unwrap();
                discard.apply(&mut b).unwrap();
                cpu.apply(&mut b).unwrap();
                mem.apply(&mut b).unwrap();
                for m in &b {
                    stats.add(m);
                }
                b
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, chain);
criterion_main!(benches);
