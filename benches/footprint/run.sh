#!/usr/bin/env bash
# Footprint of the agent next to collectd, prometheus-node-exporter and
# netdata, each run alone with a generated config in a temp dir, collecting
# the same things (cpu, memory, disk, network, process count) at the same
# interval. See README.md in this folder.
#
#   run.sh [WARMUP_SEC] [WINDOW_SEC] [RUNS] [INTERVALS] [SUBJECTS]
#     defaults: 30 120 3 "10 1" "agent collectd node_exporter netdata agent_etc agent_probes"
#   AGENT=path/to/agent (default target/release/agent, built when missing)
#
# Prints a Markdown table (median of the runs) and writes the raw rows to
# $OUT (default benches/footprint/results.tsv).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
warm=${1:-30} window=${2:-120} runs=${3:-3}
intervals=${4:-"10 1"}
subjects=${5:-"agent collectd node_exporter netdata agent_etc agent_probes"}
agent=${AGENT:-$root/target/release/agent}
out=${OUT:-$here/results.tsv}
tmp=$(mktemp -d /tmp/footprint.XXXXXX)
# pids, cleanup at exit; agent_etc, agent_shipped_etc, agent_probes_etc,
# start_probe_targets
source "$here/agent_configs.sh"

# ---- peers from Debian; their own services stay stopped -------------------
need=()
command -v collectd >/dev/null || need+=(collectd-core)
command -v prometheus-node-exporter >/dev/null || need+=(prometheus-node-exporter)
command -v netdata >/dev/null || need+=(netdata)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
for s in collectd prometheus-node-exporter netdata; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$s" 2>/dev/null; then
    systemctl stop "$s"
  fi
  # Without systemd (containers) the Debian init scripts may have started them.
  service "$s" stop >/dev/null 2>&1 || true
done
[ -x "$agent" ] || (cd "$root" && cargo build --release -p agent-bin)

# ---- configs ---------------------------------------------------------------
collectd_conf() { # DIR INTERVAL
  mkdir -p "$1/csv"
  cat > "$1/collectd.conf" <<EOF
Interval $2
BaseDir "$1"
PIDFile "$1/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin cpu
LoadPlugin memory
LoadPlugin df
LoadPlugin disk
LoadPlugin interface
LoadPlugin load
LoadPlugin processes
LoadPlugin csv
<Plugin csv>
  DataDir "$1/csv"
</Plugin>
EOF
}

netdata_conf() { # DIR INTERVAL
  mkdir -p "$1/cache" "$1/lib" "$1/log" "$1/run"
  cat > "$1/netdata.conf" <<EOF
[global]
  run as user = root
  update every = $2
  memory mode = ram
  history = 3600
[db]
  mode = ram
  update every = $2
[directories]
  cache = $1/cache
  lib = $1/lib
  log = $1/log
  run = $1/run
[logs]
  debug log = none
  error log = $1/log/error.log
  access log = none
[web]
  mode = none
[health]
  enabled = no
[ml]
  enabled = no
[registry]
  enabled = no
[statsd]
  enabled = no
[plugins]
  proc = yes
  diskspace = yes
  cgroups = no
  tc = no
  idlejitter = no
  apps = no
  python.d = no
  charts.d = no
  go.d = no
  node.d = no
  ebpf = no
  perf = no
  slabinfo = no
  timex = no
  checks = no
EOF
}

# ---- one measurement ------------------------------------------------------
scraper_pid=
start_subject() { # NAME INTERVAL DIR -> sets subject_pid and binary
  local name=$1 iv=$2 d=$3
  case $name in
    agent) agent_etc "$d" "$iv"; binary=$agent
      "$agent" -c "$d/etc" run >/dev/null 2>"$d/stderr" & ;;
    agent_etc) agent_shipped_etc "$d" "$iv"; binary=$agent
      "$agent" -c "$d/etc" run >/dev/null 2>"$d/stderr" & ;;
    agent_probes) agent_probes_etc "$d" "$iv"; binary=$agent
      "$agent" -c "$d/etc" run >/dev/null 2>"$d/stderr" & ;;
    collectd) collectd_conf "$d" "$iv"; binary=$(command -v collectd)
      collectd -f -C "$d/collectd.conf" >/dev/null 2>"$d/stderr" & ;;
    node_exporter) binary=$(command -v prometheus-node-exporter)
      prometheus-node-exporter --web.listen-address=127.0.0.1:19100 \
        --collector.disable-defaults --collector.cpu --collector.meminfo \
        --collector.diskstats --collector.filesystem --collector.netdev \
        --collector.loadavg --collector.processes >/dev/null 2>"$d/stderr" & ;;
    netdata) netdata_conf "$d" "$iv"; binary=$(command -v netdata)
      netdata -D -c "$d/netdata.conf" >/dev/null 2>"$d/stderr" & ;;
    *) echo "unknown subject $name" >&2; return 1 ;;
  esac
  subject_pid=$!
  pids+=("$subject_pid")
  if [ "$name" = node_exporter ]; then
    # node_exporter collects only when scraped: scrape it at the interval.
    # The scraper is a separate process tree and is not counted.
    (sleep 1; while :; do curl -s -o /dev/null --max-time 5 http://127.0.0.1:19100/metrics; sleep "$iv"; done) &
    scraper_pid=$!
    pids+=("$scraper_pid")
  fi
}

stop_subject() {
  [ -n "$scraper_pid" ] && { kill "$scraper_pid" 2>/dev/null || true; wait "$scraper_pid" 2>/dev/null || true; scraper_pid=; }
  kill -TERM "$subject_pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$subject_pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$subject_pid" 2>/dev/null || true
  wait "$subject_pid" 2>/dev/null || true
}

case " $subjects " in *" agent_probes "*) start_probe_targets ;; esac

: > "$out"
echo "# warm-up ${warm}s, window ${window}s, ${runs} run(s), $(nproc) cores, $(date -u +%FT%TZ)" >&2
for iv in $intervals; do
  for run in $(seq "$runs"); do
    for s in $subjects; do
      d=$(mktemp -d "$tmp/$s.XXXX")
      start_subject "$s" "$iv" "$d"
      if ! r=$("$here/measure.sh" "$subject_pid" "$warm" "$window" 2>/dev/null); then
        echo "$s (interval $iv) died; stderr:" >&2; tail -5 "$d/stderr" >&2 || true
        r="NA NA NA"
      fi
      stop_subject
      size=$(stat -c %s "$(readlink -f "$binary")")
      printf '%s\t%s\t%s\t%s\t%s\n' "$iv" "$run" "$s" "$r" "$size" | tr ' ' '\t' >> "$out"
      echo "interval=$iv run=$run $s: avg_rss_kb peak_rss_kb cpu_s_per_min = $r" >&2
    done
  done
done

# ---- table: median over the runs; ratio = agent (same config) / peer ------
python3 - "$out" <<'EOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l.strip()]
names = {"agent": "agent (same inputs as the peers)", "collectd": "collectd",
         "node_exporter": "prometheus-node-exporter (scraped at the interval)",
         "netdata": "netdata", "agent_etc": "agent (shipped etc/)",
         "agent_probes": "agent (shipped etc/ + 100 telnet, 100 curl, 10 ping)"}
def med(xs):
    xs = [float(x) for x in xs if x != "NA"]
    return statistics.median(xs) if xs else float("nan")
data = {}
for iv, run, s, avg, peak, cpu, size in rows:
    d = data.setdefault((iv, s), {"avg": [], "peak": [], "cpu": [], "size": size})
    d["avg"].append(avg); d["peak"].append(peak); d["cpu"].append(cpu)
print("| interval | process | avg RSS KB | peak RSS KB | CPU s/min | binary MB | agent/peer RSS | agent/peer CPU |")
print("|---|---|---|---|---|---|---|---|")
for (iv, s), d in data.items():
    a = data.get((iv, "agent"))
    avg, peak, cpu = med(d["avg"]), med(d["peak"]), med(d["cpu"])
    ratio_rss = ratio_cpu = "-"
    if a and s not in ("agent", "agent_etc", "agent_probes"):
        ratio_rss = f"{med(a['avg']) / avg:.2f}" if avg else "-"
        ratio_cpu = f"{med(a['cpu']) / cpu:.2f}" if cpu else "-"
    print(f"| {iv} s | {names.get(s, s)} | {avg:.0f} | {peak:.0f} | {cpu:.4f} | "
          f"{int(d['size']) / 1e6:.1f} | {ratio_rss} | {ratio_cpu} |")
EOF
