# Agent configurations and the probe load shared by run.sh and
# hot_symbols.sh (sourced). Expects $root (the repository) and $tmp (a
# scratch folder); sets up the array pids, whose processes are stopped, and
# $tmp removed, at exit.

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

agent_etc() { # DIR INTERVAL: cpu, mem, disk, network, process count only
  local d=$1/etc
  mkdir -p "$d/input" "$d/output"
  cat > "$d/main.yaml" <<EOF
delay_sec: 0
reload_sec: 300
info: {node_ip: "", host_name: ""}
open: [cpu, mem, disk, network, process]
interval: $2
common_output: [console]
log: {level: INFO, file: log/agent.log}
EOF
  # collectd's cpu plugin has no top-N processes.
  echo "process_top_num: 0" > "$d/input/cpu.yaml"
  # One metric with the count of processes named agent (the scan covers all).
  printf 'target:\n  - agent\n' > "$d/input/process.yaml"
  printf 'target: stdout\nflush_interval: %s\n' "$2" > "$d/output/console.yaml"
}

agent_shipped_etc() { # DIR INTERVAL: the shipped etc/ at INTERVAL
  cp -r "$root/etc" "$1/etc"
  sed -i "s/^interval: .*/interval: $2/" "$1/etc/main.yaml"
  sed -i "s/^interval: .*/interval: $2/" "$1"/etc/input/*.yaml
}

agent_probes_etc() { # DIR INTERVAL: shipped etc/ + 100 telnet, 100 curl, 10 ping
  agent_shipped_etc "$1" "$2"
  local d=$1/etc
  sed -i 's/^  - demo$/  - demo\n  - curl/' "$d/main.yaml"
  { echo "interval: $2"; echo "timeout: 1"; echo "worker_limit: 100"; echo "target:"
    for i in $(seq 0 99); do printf '  T%s:\n    address: 127.0.0.1:%s\n' "$i" $((PORT_BASE + i)); done
  } > "$d/input/telnet.yaml"
  { echo "interval: $2"; echo "timeout: 2"; echo "worker_limit: 30"; echo "target:"
    for i in $(seq 0 99); do printf '  U%s:\n    url: http://127.0.0.1:%s/?t=%s\n' "$i" "$HTTP_PORT" "$i"; done
  } > "$d/input/curl.yaml"
  { echo "interval: $2"; echo "count: 5"; echo "timeout: 0.7"; echo "interval_ping: 0.1"; echo "target:"
    for i in $(seq 1 10); do printf '  L%s:\n    address: 127.0.0.%s\n' "$i" "$i"; done
  } > "$d/input/ping.yaml"
}

# ---- probe load: loopback HTTP server and 100 TCP listeners ---------------
PORT_BASE=${PORT_BASE:-21000}
HTTP_PORT=${HTTP_PORT:-20999}
start_probe_targets() {
  (cd "$tmp" && exec python3 -m http.server --bind 127.0.0.1 "$HTTP_PORT" >/dev/null 2>&1) &
  pids+=($!)
  python3 - "$PORT_BASE" <<'EOF' >/dev/null 2>&1 &
import selectors, socket, sys
base = int(sys.argv[1])
sel = selectors.DefaultSelector()
for p in range(base, base + 100):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", p)); s.listen(64); s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        try:
            c, _ = key.fileobj.accept(); c.close()
        except OSError:
            pass
EOF
  pids+=($!)
  sleep 1
}

