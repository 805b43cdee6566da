#!/usr/bin/env bash
# Time from exec to the first console line of `agent run` (delay_sec 0,
# console output with batch_size 1 so the first metric is written at once),
# and the supervisor's own `startup_us`. Median of RUNS.
#   startup.sh [RUNS] [AGENT]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
runs=${1:-10}
agent=${2:-${AGENT:-$root/target/release/agent}}
tmp=$(mktemp -d /tmp/startup.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/etc/output"
cat > "$tmp/etc/main.yaml" <<YAML
delay_sec: 0
info: {node_ip: "", host_name: ""}
open: [mem, cpu, disk, network]
interval: 10
common_output: [console]
log: {level: INFO, file: log/agent.log}
YAML
printf 'target: stdout\nbatch_size: 1\nflush_interval: 10\n' > "$tmp/etc/output/console.yaml"
python3 - "$agent" "$tmp/etc" "$runs" <<'PY'
import os, re, signal, statistics, subprocess, sys, time
agent, etc, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
first, sup = [], []
for _ in range(runs):
    t0 = time.monotonic()
    p = subprocess.Popen([agent, "-c", etc, "run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = p.stdout.readline()
    first.append((time.monotonic() - t0) * 1000)
    assert line.startswith(b">>>"), line
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=15)
    m = re.search(rb"startup_us: (\d+)", err)
    if m:
        sup.append(int(m.group(1)) / 1000)
print(f"exec to first console line: median {statistics.median(first):.1f} ms "
      f"(min {min(first):.1f}, max {max(first):.1f}, {runs} runs)")
if sup:
    print(f"supervisor startup_us: median {statistics.median(sup):.2f} ms")
PY
