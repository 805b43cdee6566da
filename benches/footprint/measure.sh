#!/usr/bin/env bash
# Measures one running process tree: average and peak RSS (KB) and CPU
# seconds per minute (summed /proc/<pid>/task/*/schedstat, ns precision),
# over a window after a warm-up.
#   measure.sh PID WARMUP_SEC WINDOW_SEC
# Prints: avg_rss_kb peak_rss_kb cpu_sec_per_min
set -euo pipefail
pid=$1 warm=$2 window=$3

tree() { # pid and all its descendants
  local p=$1; echo "$p"
  for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do tree "$c"; done
}
cpu_ns() { # CPU time of every thread of the tree, ns (schedstat: ns precision)
  local sum=0
  for p in $(tree "$pid"); do
    for t in /proc/"$p"/task/*/schedstat; do
      [ -r "$t" ] || continue
      read -r ns _ < "$t" || continue
      sum=$((sum + ns))
    done
  done
  echo "$sum"
}
rss_kb() {
  local sum=0
  for p in $(tree "$pid"); do
    v=$(awk '/^VmRSS:/{print $2}' /proc/"$p"/status 2>/dev/null || echo 0)
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}

sleep "$warm"
kill -0 "$pid"
t0=$(cpu_ns); start=$(date +%s.%N)
total=0 n=0 peak=0
end=$(( $(date +%s) + window ))
while [ "$(date +%s)" -lt "$end" ]; do
  r=$(rss_kb); total=$((total + r)); n=$((n + 1)); [ "$r" -gt "$peak" ] && peak=$r
  sleep 1
done
t1=$(cpu_ns); stop=$(date +%s.%N)
echo "$((total / n)) $peak $(echo "scale=4; ($t1 - $t0) / 1000000000 * 60 / ($stop - $start)" | bc)"
