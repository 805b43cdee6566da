#!/usr/bin/env python3
"""A loopback OpAMP server (plain-HTTP transport) for the agent's tests.

Decodes with the upstream message classes shipped in the PyPI package
opentelemetry-opamp-client (opamp_pb2), independent of the agent's own
prost code. Serves HTTPS with the certificate files the test wrote.

    server.py --port 0 --cert c.pem --key k.pem --dir STATE_DIR

STATE_DIR/port      the port it listens on (written at start)
STATE_DIR/log.jsonl one JSON line per AgentToServer received
STATE_DIR/offer.json  if present: {"hash": hex, "files": {name: text}},
                      sent as remote_config in every answer
STATE_DIR/mode      if present: "503 N" answers 503 with Retry-After: N;
                      "unavailable N" answers a ServerErrorResponse with
                      retry_info of N seconds
Answers are gzipped when the agent accepts gzip.
"""
import argparse
import gzip
import json
import os
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry._opamp.proto import opamp_pb2

LOCK = threading.Lock()


def attrs(kvs):
    return {kv.key: kv.value.string_value for kv in kvs}


def health(h):
    return {
        "healthy": h.healthy,
        "start_time_unix_nano": h.start_time_unix_nano,
        "status": h.status,
        "last_error": h.last_error,
        "components": {k: {"healthy": v.healthy, "last_error": v.last_error}
                       for k, v in h.component_health_map.items()},
    }


def record(msg, headers, size):
    r = {
        "t": time.time(),
        "uid": msg.instance_uid.hex(),
        "seq": msg.sequence_num,
        "capabilities": msg.capabilities,
        "bytes": size,
        "authorization": headers.get("Authorization", ""),
        "tenant": headers.get("X-Tenant", ""),
        "content_type": headers.get("Content-Type", ""),
    }
    if msg.HasField("agent_disconnect"):
        r["disconnect"] = True
    if msg.HasField("agent_description"):
        r["identifying"] = attrs(msg.agent_description.identifying_attributes)
        r["non_identifying"] = attrs(msg.agent_description.non_identifying_attributes)
    if msg.HasField("health"):
        r["health"] = health(msg.health)
    if msg.HasField("effective_config"):
        r["effective"] = {k: v.body.decode() for k, v in
                          msg.effective_config.config_map.config_map.items()}
    if msg.HasField("remote_config_status"):
        s = msg.remote_config_status
        r["remote_status"] = {
            "hash": s.last_remote_config_hash.hex(),
            "status": opamp_pb2.RemoteConfigStatuses.Name(s.status),
            "error": s.error_message,
        }
    return r


def read_file(d, name):
    try:
        with open(os.path.join(d, name)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: without this, Nagle and the
    # client's delayed ACK add 40 ms to every answer.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_POST(self):
        d = self.server.state_dir
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        msg = opamp_pb2.AgentToServer()
        msg.ParseFromString(body)
        mode, _, secs = (read_file(d, "mode") or "").partition(" ")
        secs = int(secs or "1")
        r = record(msg, self.headers, len(body))
        r["answer"] = mode or "ok"
        with LOCK:
            with open(os.path.join(d, "log.jsonl"), "a") as f:
                f.write(json.dumps(r) + "\n")
        if mode == "503":
            self.send_response(503)
            self.send_header("Retry-After", str(secs))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        answer = opamp_pb2.ServerToAgent(instance_uid=msg.instance_uid)
        if mode == "unavailable":
            answer.error_response.type = opamp_pb2.ServerErrorResponseType_Unavailable
            answer.error_response.error_message = "busy"
            answer.error_response.retry_info.retry_after_nanoseconds = secs * 1_000_000_000
        offer = read_file(d, "offer.json")
        if offer and mode != "unavailable":
            o = json.loads(offer)
            answer.remote_config.config_hash = bytes.fromhex(o["hash"])
            for name, text in o["files"].items():
                f = answer.remote_config.config.config_map[name]
                f.body = text.encode()
                f.content_type = "text/yaml"
        out = answer.SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            out = gzip.compress(out)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--dir", required=True)
    a = p.parse_args()
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.request_queue_size = 1024
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    srv.state_dir = a.dir
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    tmp = os.path.join(a.dir, "port.tmp")
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, os.path.join(a.dir, "port"))
    sys.stdout.flush()
    srv.serve_forever()


if __name__ == "__main__":
    main()
