#!/usr/bin/env bash
# Builds the release agent once with rustc's lld (the default on
# x86_64-unknown-linux-gnu) and once with the system's GNU ld
# (`-C linker-features=-lld`, as a distribution's rustc links), and checks
# that each binary was linked by the linker it claims, is a PIE with full
# RELRO, carries no OpenSSL (TLS is rustls under libcurl: no shared
# libssl/libcrypto needed, no copy of OpenSSL inside), runs, and validates
# the shipped etc/. agent-bin/build.rs uses the
# hot-symbol ordering only when the linker takes it; with GNU ld the build
# must warn and still link.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target

linker_of() { readelf -p .comment "$1" | grep -q 'Linker: LLD' && echo lld || echo gnu-ld; }

check() {
  local name=$1 bin=$2 want=$3 log=$4
  local got
  got=$(linker_of "$bin")
  [ "$got" = "$want" ] || { echo "linkers: $name build was linked by $got, not $want" >&2; exit 1; }
  # Hardened by default: a PIE with full RELRO (issue 16).
  readelf -h "$bin" | grep -q 'Type: *DYN' ||
    { echo "linkers: $name build is not a position-independent executable" >&2; exit 1; }
  readelf -d "$bin" | grep -q 'BIND_NOW' && readelf -l "$bin" | grep -q 'GNU_RELRO' ||
    { echo "linkers: $name build lacks full RELRO (GNU_RELRO + BIND_NOW)" >&2; exit 1; }
  # No OpenSSL (issue 16): neither a shared libssl/libcrypto nor a static
  # copy. The binary is stripped, so look for what OpenSSL always brings:
  # its version banner ("OpenSSL 3.0.22 25 Aug 2026"), its config file
  # name and libcurl's OpenSSL backend. (AWS-LC, under rustls, calls itself
  # "OpenSSL 1.1.1 (compatible; AWS-LC ...)": no date, not matched.)
  local needed
  needed=$(readelf -d "$bin" | grep NEEDED || true)
  ! grep -Eq '\[lib(ssl|crypto)\.so' <<<"$needed" ||
    { echo "linkers: $name build needs a shared OpenSSL: $needed" >&2; exit 1; }
  ! grep -aEq 'OpenSSL [0-9]+\.[0-9]+\.[0-9]+[a-z]* +[0-9]{1,2} [A-Z][a-z]{2} [0-9]{4}|openssl\.cnf|vtls/openssl\.c' "$bin" ||
    { echo "linkers: $name build contains OpenSSL: $(grep -aEo 'OpenSSL [0-9][^ ]* [^(]{0,12}|openssl\.cnf|vtls/openssl\.c' "$bin" | tr -d '\0' | head -3 | tr '\n' ' ')" >&2; exit 1; }
  "$bin" --version >/dev/null
  "$bin" validate -c etc >/dev/null
  if [ "$want" = gnu-ld ]; then
    grep -q 'hot functions are not laid out together' "$log" ||
      { echo "linkers: the GNU ld build did not warn about the ordering file" >&2; exit 1; }
  else
    ! grep -q 'hot functions are not laid out together' "$log" ||
      { echo "linkers: the lld build did not use the ordering file" >&2; exit 1; }
  fi
  echo "linkers: $name: linked by $got, PIE with full RELRO, no OpenSSL, $(stat -c %s "$bin") bytes, runs and validates etc/"
}

# `-vv` prints build-script warnings even for a cached build script.
cargo build --release -p agent-bin -vv >target/linkers-lld.log 2>&1 || { tail -30 target/linkers-lld.log; exit 1; }
check lld target/release/agent lld target/linkers-lld.log

# The release profile without fat LTO: every crate is rebuilt for the new
# flags, and what is checked is the link (the linker gets the same kinds of
# objects and arguments either way). Keeps CI within its time.
RUSTFLAGS="-C linker-features=-lld" CARGO_TARGET_DIR=target/gnu-ld \
  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  cargo build --release -p agent-bin -vv >target/linkers-gnu-ld.log 2>&1 || { tail -30 target/linkers-gnu-ld.log; exit 1; }
check gnu-ld target/gnu-ld/release/agent gnu-ld target/linkers-gnu-ld.log
