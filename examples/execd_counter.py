#!/usr/bin/env python3
"""execd_counter.py — an `execd` input plugin written in Python.

The agent keeps this program running (see examples/etc-execd/) and, with
`signal: STDIN`, writes a newline to its stdin at every gather. For each
newline it prints one metric and flushes:

    influx (default): counter,script=execd_counter count=3i,pid=1234i
    json:             {"name": "counter", "count": 3, "pid": 1234}

Usage: execd_counter.py [influx|json]
It exits when its stdin closes (the agent stopped it) or on SIGTERM.
"""
import json
import os
import sys


def main() -> int:
    fmt = sys.argv[1] if len(sys.argv) > 1 else "influx"
    if fmt not in ("influx", "json"):
        print(f"unknown format {fmt!r}; use influx or json", file=sys.stderr)
        return 2
    count = 0
    for _ in sys.stdin:
        count += 1
        if fmt == "json":
            print(json.dumps({"name": "counter", "count": count, "pid": os.getpid()}))
        else:
            print(f"counter,script=execd_counter count={count}i,pid={os.getpid()}i")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
