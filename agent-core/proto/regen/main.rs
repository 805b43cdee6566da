// Regenerates agent-core's OTLP types from the vendored .proto files.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (root, out) = (&args[1], &args[2]);
    let mut c = prost_build::Config::new();
    c.out_dir(out);
    c.disable_comments(["."]);
    c.compile_protos(
        &[format!("{root}/opentelemetry/proto/collector/metrics/v1/metrics_service.proto")],
        &[root.to_string()],
    )
    .expect("protoc");
}
