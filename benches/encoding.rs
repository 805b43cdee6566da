//! Encoding throughput of the output formats: InfluxDB line protocol, the
//! flat JSON array (es/http/file) and the Prometheus exposition (series
//! store update + render). Target: at least 1,500,000 metrics/s each on one
//! core; the `_probes` variants reshape telnet metrics by their schema. Run: `cargo bench -p agent-core --bench encoding`.
use agent_core::format::{json, line_protocol, prometheus};
use agent_core::Metric;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};

const N: usize = 10_000;

/// A realistic batch: 100 "hosts" × 100 NICs-like series, 2 info tags plus
/// one own tag, 8 fields of mixed types (as the network input produces).
fn batch() -> Vec<Metric> {
    let ts = 1_795_601_723_000_000_000;
    (0..N)
        .map(|i| {
            Metric::new("network", ts)
                .with_tag("node_ip", "10.0.0.5")
                .with_tag("host_name", "web-01.example")
                .with_tag("nic", format!("eth{}", i % 100))
                .with_field("bytes_sent", 1_234_567_890u64 + i as u64)
                .with_field("bytes_recv", 9_876_543_210u64 + i as u64)
                .with_field("errin", 0u64)
                .with_field("dropin", i as i64)
                .with_field("kbps_in", 1234.5 + i as f64)
                .with_field("kbps_out", 0.25)
                .with_field("isup", true)
                .with_field("human_kbps_in", "1.2 Mbps")
        })
        .collect()
}

/// Probe results (telnet): identity in fields, reshaped into tags by the
/// schema in the dimensional encoders. 1,000 targets.
fn probes() -> Vec<Metric> {
    let ts = 1_795_601_723_000_000_000;
    (0..N)
        .map(|i| {
            Metric::new("telnet", ts)
                .with_tag("node_ip", "10.0.0.5")
                .with_tag("host_name", "web-01.example")
                .with_field("tag", format!("target {}", i % 1000))
                .with_field("address", format!("10.0.{}.{}:443", i % 250, i % 7))
                .with_field("as_ipv6", false)
                .with_field("timeout", 5.0)
                .with_field("yes", true)
                .with_field("errcode", 0i64)
                .with_field("response_ms", 0.25 + i as f64)
                .with_field("result", "success")
        })
        .collect()
}

fn encoding(c: &mut Criterion) {
    let metrics = batch();
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(N as u64));
    g.measurement_time(Duration::from_secs(4));
    g.sample_size(30);

    let mut out = String::with_capacity(4 << 20);
    let opts = line_protocol::Options::default();
    g.bench_function("line_protocol", |b| {
        b.iter(|| {
            out.clear();
            black_box(line_protocol::write_batch(
                black_box(&metrics),
                &opts,
                &mut out,
            ));
        })
    });

    let probe_metrics = probes();
    let dimensional = line_protocol::Options::dimensional();
    g.bench_function("line_protocol_dimensional_probes", |b| {
        b.iter(|| {
            out.clear();
            black_box(line_protocol::write_batch(
                black_box(&probe_metrics),
                &dimensional,
                &mut out,
            ));
        })
    });

    let mut enc = json::Encoder::new(true);
    g.bench_function("json_array", |b| {
        b.iter(|| {
            out.clear();
            enc.write_array(black_box(&metrics), &mut out);
            black_box(out.len());
        })
    });

    let mut store =
        prometheus::SeriesStore::new(prometheus::Options::default(), Duration::from_secs(60));
    g.bench_function("prometheus_update_and_render", |b| {
        b.iter(|| {
            let now = Instant::now();
            for m in black_box(&metrics) {
                store.add(m, now);
            }
            out.clear();
            store.render(&mut out);
            black_box(out.len());
        })
    });
    let mut probe_store =
        prometheus::SeriesStore::new(prometheus::Options::default(), Duration::from_secs(60));
    g.bench_function("prometheus_update_and_render_probes", |b| {
        b.iter(|| {
            let now = Instant::now();
            for m in black_box(&probe_metrics) {
                probe_store.add(m, now);
            }
            out.clear();
            probe_store.render(&mut out);
            black_box(out.len());
        })
    });
    g.finish();
}

criterion_group!(benches, encoding);
criterion_main!(benches);
