#!/usr/bin/env bash
# The probes at scale in the real `agent` binary: 1,000 telnet + 1,000 curl
# + 1,000 ping targets at a 10 s interval against `probes_bench serve`
# (loopback only), console output read by a counter (not the agent).
#
#   agent_scale.sh [WARMUP_SEC=30] [WINDOW_SEC=60]
#   SKIP_BUILD=1      use the binaries already built
#   AGENT=path        the agent binary (default target/release/agent)
#   HEAPTRACK=1       run the agent under heaptrack (writes $OUT_DIR/heaptrack.*)
#   OUT_DIR=dir       keep the temp folder's files there (default: removed):
#                     etc/, agent.err, polls, delivered, unhealthy, smaps
#
# Prints average and peak RSS (KB, the agent's process tree), VmHWM, CPU
# seconds per minute (benches/footprint/measure.sh), per-kind round wall
# time (median / max of the input's last gather duration, polled from
# `agent status --json`), and delivered counts (console lines per kind and
# how many were healthy: telnet open, curl status 200, ping without loss).
# Ping needs root or CAP_NET_RAW.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
warm=${1:-30} window=${2:-60}
tdir=${CARGO_TARGET_DIR:-$root/target}
agent=${AGENT:-$tdir/release/agent}
bench=$tdir/release/examples/probes_bench
interval=10
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

# ---- the loopback servers (1,000 TCP listeners, one HTTP server) ----------
mkfifo "$tmp/hold"
"$bench" serve < "$tmp/hold" > "$tmp/ports" &
pids+=($!)
exec 3> "$tmp/hold" # serve runs until its stdin closes
for _ in $(seq 300); do
  [ "$(wc -l < "$tmp/ports")" -ge 2 ] && break
  sleep 0.1
done
telnet_ports=$(sed -n 1p "$tmp/ports")
http_port=$(sed -n 2p "$tmp/ports")
[ -n "$http_port" ] || { echo "probes_bench serve did not start" >&2; exit 1; }

# ---- the agent's etc/ -------------------------------------------------------
etc=$tmp/etc
mkdir -p "$etc/input" "$etc/output"
cat > "$etc/main.yaml" <<EOF
delay_sec: 0
reload_sec: 300
info: {node_ip: 127.0.0.1, host_name: bench}
open: [telnet, curl, ping]
interval: $interval
common_output: [console]
control_socket: $tmp/agent.sock
log: {level: INFO, file: $tmp/agent.log}
EOF
echo "target: stdout" > "$etc/output/console.yaml"
{
  echo "timeout: 2"
  echo "target:"
  i=0
  for p in ${telnet_ports//,/ }; do echo "  T$i: {address: '127.0.0.1:$p'}"; i=$((i + 1)); done
} > "$etc/input/telnet.yaml"
{
  echo "timeout: 5"
  echo "target:"
  for i in $(seq 0 999); do echo "  C$i: {url: 'http://127.0.0.1:$http_port/health?i=$i'}"; done
} > "$etc/input/curl.yaml"
{
  # PyAgent's defaults: 60 echoes 0.1 s apart, 0.7 s timeout.
  echo "count: 60"
  echo "timeout: 0.7"
  echo "interval_ping: 0.1"
  echo "target:"
  for i in $(seq 0 999); do echo "  P$i: {address: 127.0.$((1 + i / 250)).$((1 + i % 250))}"; done
} > "$etc/input/ping.yaml"
"$agent" -c "$etc" validate >/dev/null

# ---- run, count what the console delivers ---------------------------------
# Console lines: `>>> METRIC, name=<input> ... yes=True ... status=200 ... loss=0`
count() {
  awk '
    / name=telnet / { t++; if (/ yes=[Tt]rue /) to++; else bad() }
    / name=curl /   { c++; if (/ status=200 /) co++; else bad() }
    / name=ping /   { p++; if (/ loss=0(\.0)? /) po++; else bad() }
    function bad() { if (nbad++ < 30) print > "'"$tmp/unhealthy"'" }
    END { printf "telnet %d %d\ncurl %d %d\nping %d %d\n", t, to, c, co, p, po }
  ' > "$tmp/delivered"
}
mkfifo "$tmp/out"
count < "$tmp/out" &
pids+=($!)
launch=()
[ -n "${HEAPTRACK:-}" ] && launch=(heaptrack -o "$tmp/heaptrack")
"${launch[@]}" "$agent" -c "$etc" run > "$tmp/out" 2> "$tmp/agent.err" &
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
    inodes=$(ls -l /proc/"$apid"/fd 2>/dev/null | sed -n 's/.*socket:\[\([0-9]*\)\]/\1/p' | tr '\n' ' ')
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
kill -TERM "$apid"
for _ in $(seq 150); do kill -0 "$apid" 2>/dev/null || break; sleep 0.1; done
sleep 0.5 # the counter writes its totals when the agent's stdout closes

echo "agent scale: 1000 telnet + 1000 curl + 1000 ping, interval ${interval}s, warm-up ${warm}s, window ${window}s"
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
awk '{ printf "delivered %s: %d lines, %d healthy\n", $1, $2, $3 }' "$tmp/delivered"
awk '$1 == "raw" { if ($3 > d[$2]) d[$2] = $3 } END { for (i in d) t += d[i]; printf "ICMP packets dropped by the kernel (full socket buffer): %d\n", t }' "$tmp/polls"
grep -E '"level":"(ERRO|CRIT)|ERRO|undelivered' "$tmp/agent.err" | head -5 || true
