#!/usr/bin/env bash
# Writes agent-bin/hot-symbols.txt: the functions the agent runs once it has
# settled (every interval, aggregation period and alarm check, not start-up
# or shutdown), for the linker to lay out together (agent-bin/build.rs).
# Code spread over the whole text costs a resident page for each function
# that runs; packed, the same functions fill a few pages.
#
#   hot_symbols.sh [WARMUP_SEC] [WINDOW_SEC]      defaults: 25 70
#
# Builds the release agent with its symbol table (AGENT_KEEP_SYMBOLS=1:
# same code and symbol names as the stripped build), runs it under
# valgrind's callgrind on three configurations of benches/footprint
# (the peers' inputs, the shipped etc/, the shipped etc/ with the probe
# load), zeroes the counters after the warm-up and lists every function of
# the agent binary that ran during the window. Order: what the peers'
# inputs run, then what the shipped etc/ adds, then what the probes add.
# Needs root (ping), valgrind, python3. Rerun after large code changes:
# names that no longer exist are skipped by the linker.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
warm=${1:-25} window=${2:-70}
tmp=$(mktemp -d /tmp/hot-symbols.XXXXXX)
source "$here/agent_configs.sh"
command -v valgrind >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind >/dev/null
}

# FEATURES=kafka: list the functions of that build (the .deb's) instead;
# cargo features change crate hashes and so every mangled name. APPEND=1
# keeps the names already in the list and adds the new ones after them, so
# one list serves both builds (the linker skips names a build lacks).
features=${FEATURES:-} append=${APPEND:-0}
(cd "$root" && AGENT_KEEP_SYMBOLS=1 cargo build --release -p agent-bin ${features:+--features "$features"})
agent=$tmp/agent
cp "${CARGO_TARGET_DIR:-$root/target}/release/agent" "$agent"
start_probe_targets

# Interval 2 s: more intervals in the window, the same code as at 10 s.
for cfg in agent_etc agent_shipped_etc agent_probes_etc; do
  mkdir -p "$tmp/$cfg"
  "$cfg" "$tmp/$cfg" 2
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$tmp/$cfg/callgrind.out" \
    "$agent" -c "$tmp/$cfg/etc" run >/dev/null 2>"$tmp/$cfg/stderr" &
  pid=$!
  pids+=("$pid")
  sleep "$warm"
  callgrind_control -z "$pid" >/dev/null
  sleep "$window"
  callgrind_control -d "$pid" >/dev/null
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  echo "$cfg: $(ls "$tmp/$cfg"/callgrind.out.* | wc -l) dump(s)" >&2
done

python3 - "$agent" "$tmp" "$root/agent-bin/hot-symbols.txt" "$append" <<'EOF'
import glob, re, sys
agent, tmp, out, append = sys.argv[1:]
def ran(cfg):
    """Functions of the agent binary with a cost in the dumps after zeroing."""
    names = set()
    for path in glob.glob(f"{tmp}/{cfg}/callgrind.out.*"):
        if path.endswith(".out"):
            continue  # the final dump at exit (shutdown code), not the window
        files, fns, cur_ob, in_agent = {}, {}, None, False
        for line in open(path, errors="replace"):
            m = re.match(r"^(c?)(ob|fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
            if not m:
                continue
            called, kind, ident, name = m.groups()
            table = files if kind == "ob" else fns
            if name:
                table[ident] = name
            if called:
                continue
            if kind == "ob":
                in_agent = files.get(ident) == agent
            elif in_agent and fns.get(ident):
                names.add(fns[ident])
    return names
seen, order = set(), []
if append == "1":
    order = [l.rstrip("\n") for l in open(out) if l.strip()]
    seen = set(order)
for cfg in ("agent_etc", "agent_shipped_etc", "agent_probes_etc"):
    new = sorted(ran(cfg) - seen)
    print(f"{cfg}: {len(new)} more functions", file=sys.stderr)
    order += new
    seen |= set(new)
with open(out, "w") as f:
    f.write("".join(n + "\n" for n in order))
print(f"{len(order)} functions -> {out}", file=sys.stderr)
EOF
