#!/usr/bin/env bash
# Regenerates agent-core/src/plugins/outputs/otlp/proto/*.rs from the
# vendored .proto files with prost-build 0.14 (needs protoc: Debian
# protobuf-compiler). The generated code is committed so that building the
# agent needs neither protoc nor a build script.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../src/plugins/outputs/otlp/proto"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src"
cp "$here/regen/main.rs" "$tmp/src/main.rs"
cat > "$tmp/Cargo.toml" <<'TOML'
[package]
name = "otlp-regen"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
prost-build = "=0.14.6"
[workspace]
TOML
rm -f "$out"/opentelemetry.*.rs
cargo run --quiet --manifest-path "$tmp/Cargo.toml" -- "$here" "$out"
ls -l "$out"
