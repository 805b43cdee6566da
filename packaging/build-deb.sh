#!/usr/bin/env bash
# Builds the Debian package of the agent:
#
#   packaging/build-deb.sh                  release build (fat LTO), then the .deb
#   packaging/build-deb.sh --binary PATH    package an agent binary built elsewhere
#                                           (the CI test uses the debug build)
#   ... --output DIR                        where the .deb goes (default target/debian)
#
# Before `cargo deb` runs, the binary itself writes the man page and the
# bash, zsh and fish completions into packaging/generated/ (`agent man`,
# `agent completions <shell>`), which the deb's assets point at
# (agent-bin/Cargo.toml, [package.metadata.deb]). Needs cargo-deb
# (`cargo install cargo-deb --locked`). Prints the path of the .deb.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

binary=""
output=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --output) output=$2; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--output DIR]" >&2; exit 2 ;;
  esac
done

if ! cargo deb --version >/dev/null 2>&1; then
  echo "cargo-deb is missing: cargo install cargo-deb --locked" >&2
  exit 1
fi

target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
if [ -z "$binary" ]; then
  cargo build --release --locked -p agent-bin --features kafka
  binary="$target_dir/release/agent"
  stage_target=""
else
  # cargo deb --no-build takes target/release/agent from the target folder:
  # a private one here, so a real release build is never overwritten.
  stage_target=$(mktemp -d)
  trap 'rm -rf "$stage_target"' EXIT
  mkdir -p "$stage_target/release"
  cp "$binary" "$stage_target/release/agent"
fi
[ -x "$binary" ] || { echo "no agent binary at $binary" >&2; exit 1; }

gen="$repo/packaging/generated"
rm -rf "$gen"
mkdir -p "$gen"
"$binary" man | gzip -9n > "$gen/agent.1.gz"
"$binary" completions bash > "$gen/agent.bash"
"$binary" completions zsh > "$gen/_agent"
"$binary" completions fish > "$gen/agent.fish"

output=${output:-$target_dir/debian}
mkdir -p "$output"
if [ -n "$stage_target" ]; then
  CARGO_TARGET_DIR="$stage_target" cargo deb -p agent-bin --no-build --quiet --output "$output" >/dev/null
else
  cargo deb -p agent-bin --no-build --quiet --output "$output" >/dev/null
fi
ls -t "$output"/agent_*.deb | head -1
