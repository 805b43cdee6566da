#!/bin/sh
# exec_uptime.sh — an `exec` input plugin written as a shell script.
#
# Prints one metric in InfluxDB line protocol:
#   uptime,source=proc uptime_sec=<float>,idle_sec=<float>,load1=<float>,users=<int>i
# The agent runs it every interval (see examples/etc-exec/) and parses the
# line; the `info` tags (node_ip, host_name) are added by the agent.
# A non-zero exit status with a message on stderr is reported as a gather error.
set -eu
if [ ! -r /proc/uptime ]; then
    echo "exec_uptime.sh: /proc/uptime is not readable" >&2
    exit 1
fi
read -r up idle < /proc/uptime
read -r load1 _rest < /proc/loadavg
# Logged-in users; 0 when `who` is missing.
users=$(who 2>/dev/null | wc -l | tr -d ' ')
printf 'uptime,source=proc uptime_sec=%s,idle_sec=%s,load1=%s,users=%si\n' \
    "$up" "$idle" "$load1" "${users:-0}"
