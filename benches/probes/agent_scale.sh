#!/usr/bin/env bash
# The probes at scale in the real `agent` binary: TARGETS telnet + TARGETS
# curl + TARGETS ping targets (10,000 each by default) at `interval: 60`
# against `probes_bench serve` (loopback only), the agent alone under
# `ulimit -n 1024` (soft and hard: it cannot raise it), console output read
# by a counter (not the agent).
#
#   agent_scale.sh [WARMUP_SEC=70] [WINDOW_SEC=130]
#   TARGETS=n         targets per kind (default 10000)
#   INTERVAL=s        the agent's interval (default 60)
#   NOFILE=n          the agent's RLIMIT_NOFILE, soft and hard (default 1024)
#   KINDS="a b"       inputs to open (default "telnet curl ping")
#   SKIP_BUILD=1      use the binaries already built
#   AGENT=path        the agent binary (default target/release/agent)
#   HEAPTRACK=1       run the agent under heaptrack (writes $OUT_DIR/heaptrack.*)
#   OUT_DIR=dir       keep the temp folder's files there (default: removed):
#                     etc/, agent.err, polls, delivered, unhealthy, smaps
#
# Prints average and peak RSS (KB, the agent's process tree), VmHWM, CPU
# seconds per minute (benches/footprint/measure.sh), per-kind round wall
# time (median / max of the input's last gather duration, polled from
# `agent status --json`), delivered counts (console lines per kind and
# how many were healthy: telnet open, curl status 200, ping without loss;
# telnet lines with errcode=24), and the agent's fd budget and DNS cache.
# Ping needs root or CAP_NET_RAW.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
warm=${1:-70} window=${2:-130}
targets=${TARGETS:-10000}
nofile=${NOFILE:-1024}
kinds=${KINDS:-telnet curl ping}
tdir=${CARGO_TARGET_DIR:-$root/target}
agent=${AGENT:-$tdir/release/agent}
bench=$tdir/release/examples/probes_bench
interval=${INTERVAL:-60}
if [ -z "${SKIP_BUILD:-}" ]; then
  (cd "$root" && cargo build --release -p agent-bin && cargo build --release -p agent-core --example probes_bench)
fi

tmp=$(mktemp -d /tmp/agent_scale.XXXXXX)
pids=()
cleanup() {
  exec 3>&- 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${OUT_DIR:-}" ]; then mkdir -p "$OUT_DIR" && cp -r "$tmp"/. "$OUT_DIR"/; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# ---- the loopback servers (a TCP listener per telnet target, one HTTP server)
mkfifo "$tmp/hold"
PROBES_TARGETS=$targets "$bench" serve < "$tmp/hold" > "$tmp/ports" &
pids+=($!)
exec 3> "$tmp/hold" # serve runs until its stdin closes
for _ in $(seq 600); do
  [ "$(wc -l < "$tmp/ports")" -ge 2 ] && break
  sleep 0.1
done
http_port=$(sed -n 2p "$tmp/ports")
[ -n "$http_port" ] || { echo "probes_bench serve did not start" >&2; exit 1; }

# ---- the agent's etc/ -------------------------------------------------------
etc=$tmp/etc
mkdir -p "$etc/input" "$etc/output"
cat > "$etc/main.yaml" <<EOF
delay_sec: 0
reload_sec: 300
info: {node_ip: 127.0.0.1, host_name: bench}
open: [${kinds// /, }]
interval: $interval
common_output: [console]
control_socket: $tmp/agent.sock
log: {level: INFO, file: $tmp/agent.log}
EOF
echo "target: stdout" > "$etc/output/console.yaml"
{
  echo "timeout: 2"
  echo "target:"
  sed -n 1p "$tmp/ports" | tr ',' '\n' | awk '{ printf "  T%d: {address: \x27%s\x27}\n", NR - 1, $0 }'
} > "$etc/input/telnet.yaml"
{
  echo "timeout: 5"
  echo "target:"
  awk -v n="$targets" -v p="$http_port" 'BEGIN { for (i = 0; i < n; i++) printf "  C%d: {url: \x27http://127.0.0.1:%d/health?i=%d\x27}\n", i, p, i }'
} > "$etc/input/curl.yaml"
{
  # The issue's settings: 3 echoes 0.2 s apart; targets 127.1.0.1,
  # 127.1.1.1, ... 127.1.249.1, 127.2.0.1, ... (250 per second octet).
  echo "count: 3"
  echo "timeout: 1"
  echo "interval_ping: 0.2"
  echo "target:"
  awk -v n="$targets" 'BEGIN { for (i = 0; i < n; i++) printf "  P%d: {address: 127.%d.%d.1}\n", i, 1 + int(i / 250), i % 250 }'
} > "$etc/input/ping.yaml"
"$agent" -c "$etc" validate >/dev/null

# ---- run, count what the console delivers ---------------------------------
# Console lines: `>>> METRIC, name=<input> ... yes=True ... status=200 ... loss=0`
count() {
  awk '
    / name=telnet / { t++; if (/ yes=[Tt]rue /) to++; else bad(); if (/ errcode=24 /) emfile++ }
    / name=curl /   { c++; if (/ status=200 /) co++; else bad() }
    / name=ping /   { p++; if (/ loss=0(\.0)? /) po++; else bad() }
    function bad() { if (nbad++ < 30) print > "'"$tmp/unhealthy"'" }
    END { printf "telnet %d %d\ncurl %d %d\nping %d %d\nemfile %d 0\n", t, to, c, co, p, po, emfile }
  ' > "$tmp/delivered"
}
mkfifo "$tmp/out"
count < "$tmp/out" &
pids+=($!)
launch=()
[ -n "${HEAPTRACK:-}" ] && launch=(heaptrack -o "$tmp/heaptrack")
# prlimit execs the agent: same pid, its limit only (the servers keep theirs).
# heaptrack goes inside prlimit: it follows its child, not an exec.
prlimit --nofile="$nofile:$nofile" "${launch[@]}" "$agent" -c "$etc" run > "$tmp/out" 2> "$tmp/agent.err" &
apid=$!
if [ -n "${HEAPTRACK:-}" ]; then # heaptrack runs the agent as its child
  pids+=("$apid")
  for _ in $(seq 50); do c=$(pgrep -P "$apid" -x agent || true); [ -n "$c" ] && break; sleep 0.1; done
  apid=$c
fi
sleep 0.5
kill -0 "$apid" 2>/dev/null || { echo "agent did not start" >&2; cat "$tmp/agent.err" >&2; exit 1; }
pids+=("$apid")

# Each input's last gather duration and the output's count, every 2 s.
poll() {
  while kill -0 "$apid" 2>/dev/null; do
    "$agent" -c "$etc" status --json 2>/dev/null | jq -r '
      (.status.pipelines[] | .input as $i | .actors[] | select(.kind == "input")
        | "\($i) \(.stats.calls) \(.stats.last_duration_us) \(.stats.metrics_out)"),
      (.status.outputs[] | "output:\(.name) \(.stats.calls) 0 \(.stats.metrics_out)")' >> "$tmp/polls" || true
    # Packets the kernel dropped on the agent's raw ICMP sockets (full
    # receive buffer): "raw <inode> <drops>".
    inodes=$(ls -l /proc/"$apid"/fd 2>/dev/null | sed -n 's/.*socket:\[\([0-9]*\)\]/\1/p' | tr '\n' ' ') || true # an fd closing while listed fails ls: keep polling
    awk -v ino=" $inodes" 'NR > 1 && index(ino, " " $10 " ") { print "raw", $10, $NF }' /proc/net/raw /proc/net/raw6 >> "$tmp/polls" 2>/dev/null || true
    sleep 2
  done
}
poll &
pids+=($!)

read -r avg peak cpu < <("$here/../footprint/measure.sh" "$apid" "$warm" "$window")
hwm=$(awk '/^VmHWM:/{print $2}' /proc/"$apid"/status)
threads=$(ls /proc/"$apid"/task | wc -l)
cp /proc/"$apid"/smaps "$tmp/smaps" 2>/dev/null || true # for OUT_DIR
"$agent" -c "$etc" status --json > "$tmp/status.json" 2>/dev/null || true
kill -TERM "$apid"
for _ in $(seq 150); do kill -0 "$apid" 2>/dev/null || break; sleep 0.1; done
sleep 0.5 # the counter writes its totals when the agent's stdout closes

echo "agent scale: $targets targets each of: $kinds; interval ${interval}s, RLIMIT_NOFILE $nofile, warm-up ${warm}s, window ${window}s"
echo "RSS avg ${avg} KB, peak ${peak} KB, VmHWM ${hwm} KB, CPU ${cpu} s/min, threads ${threads}"
for kind in telnet curl ping; do
  # One line per gather (distinct call counts), skipping the first round.
  awk -v k="$kind" '$1 == k && $2 > 1 && !seen[$2]++ { print $3 / 1e6 }' "$tmp/polls" | sort -g > "$tmp/walls.$kind"
  n=$(wc -l < "$tmp/walls.$kind")
  if [ "$n" -gt 0 ]; then
    med=$(sed -n "$(( (n + 1) / 2 ))p" "$tmp/walls.$kind"); max=$(tail -1 "$tmp/walls.$kind")
    echo "$kind: round wall median ${med} s, max ${max} s over $n rounds"
  fi
done
gathers=$(awk '$1 ~ /^(telnet|curl|ping)$/ { if ($2 > c[$1]) { c[$1] = $2; m[$1] = $4 } }
  END { for (k in c) printf "%s %d gathers, %d metrics; ", k, c[k], m[k] }' "$tmp/polls")
echo "inputs: $gathers"
awk '$1 == "emfile" { printf "telnet lines with errcode=24: %d\n", $2; next }
  { printf "delivered %s: %d lines, %d healthy\n", $1, $2, $3 }' "$tmp/delivered"
jq -r '"fd budget: limit \(.fd_budget.soft_limit), reserved \(.fd_budget.reserved), probes \(.fd_budget.probe_capacity), peak \(.fd_budget.peak), waited \(.fd_budget.waited) of \(.fd_budget.acquired)",
  "dns: \(.dns.names) names, \(.dns.lookups) look-ups"' "$tmp/status.json" 2>/dev/null || true
awk '$1 == "raw" { if ($3 > d[$2]) d[$2] = $3 } END { for (i in d) t += d[i]; printf "ICMP packets dropped by the kernel (full socket buffer): %d\n", t }' "$tmp/polls"
grep -E '"level":"(ERRO|CRIT)|ERRO|undelivered' "$tmp/agent.err" | head -5 || true
