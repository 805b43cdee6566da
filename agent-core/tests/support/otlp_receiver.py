#!/usr/bin/env python3
"""A loopback OTLP/HTTP metrics receiver for the otlp output's tests.

Decodes every request with the upstream `opentelemetry-proto` package (PyPI,
installed by .ci/run), not with anything written in this project, and
appends one JSON line per request to --out:

    {"n": 1, "status": 200, "headers": {...}, "request": {...}}

`request` is the decoded ExportMetricsServiceRequest as protobuf's own JSON
mapping (field names as in the .proto, 64-bit integers as strings), or
`null` with an `error` when the body did not decode.

--script is a JSON list of replies for the first requests, in order, e.g.
[{"status": 503, "retry_after": "1"}, {"status": 200, "rejected": 2,
"message": "bad point"}]; after it, every request gets 200 with an empty
ExportMetricsServiceResponse. Prints "listening PORT" once bound.
"""
import argparse
import gzip
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def rpc_status(code, message):
    """google.rpc.Status{code, message} (googleapis' protos are not needed
    for two fields)."""
    msg = message.encode()
    return b"\x08" + varint(code) + b"\x12" + varint(len(msg)) + msg


class Receiver(ThreadingHTTPServer):
    # SIGTERM stops gracefully: requests in flight are answered (a request
    # recorded here is always answered), then the process exits.
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True
    # The agent may open several connections at once (field-notes: the
    # default backlog of 5 drops SYNs).
    request_queue_size = 128


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--script", default="[]")
    args = ap.parse_args()
    script = json.loads(args.script)
    lock = threading.Lock()
    state = {"n": 0}
    out = open(args.out, "a", encoding="utf-8")
    stopping = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Idle keep-alive connections close, so a stop does not wait on them.
        timeout = 2

        def log_message(self, *a):
            pass

        def reply(self, status, body, ctype="application/x-protobuf", extra=()):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            if stopping.is_set():
                self.close_connection = True

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            with lock:
                state["n"] += 1
                n = state["n"]
                action = script[n - 1] if n <= len(script) else {"status": 200}
            record = {"n": n, "path": self.path, "headers": headers, "request": None}
            status = action.get("status", 200)
            try:
                if self.path != "/v1/metrics":
                    raise ValueError(f"unexpected path {self.path}")
                if headers.get("content-type") != "application/x-protobuf":
                    raise ValueError(f"content-type {headers.get('content-type')}")
                body = raw
                if headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(raw)
                req = metrics_service_pb2.ExportMetricsServiceRequest()
                req.ParseFromString(body)
                record["request"] = json_format.MessageToDict(
                    req, preserving_proto_field_name=True
                )
            except Exception as e:  # noqa: BLE001 - reported to the test
                record["error"] = f"{type(e).__name__}: {e}"
                status = 400
            record["status"] = status
            with lock:
                out.write(json.dumps(record) + "\n")
                out.flush()
            if status == 200:
                resp = metrics_service_pb2.ExportMetricsServiceResponse()
                if "rejected" in action or "message" in action:
                    resp.partial_success.rejected_data_points = action.get("rejected", 0)
                    resp.partial_success.error_message = action.get("message", "")
                self.reply(200, resp.SerializeToString())
                return
            extra = []
            if "retry_after" in action:
                extra.append(("Retry-After", action["retry_after"]))
            message = record.get("error") or action.get("message", "refused by the test")
            self.reply(status, rpc_status(status, message), extra=extra)

    srv = Receiver(("127.0.0.1", args.port), Handler)

    def stop(*_):
        stopping.set()
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"listening {srv.server_address[1]}", flush=True)
    srv.serve_forever()
    srv.server_close()
    out.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
