#!/usr/bin/env python3
"""Minimal local CloudWatch Logs endpoint for scripts/bench-logs.sh.

Speaks just enough of the JSON 1.1 protocol (X-Amz-Target: Logs_20140328.<Op>)
for csagent's shipper and Docker's awslogs driver: CreateLogGroup,
PutRetentionPolicy, CreateLogStream, DescribeLogStreams, PutLogEvents,
GetLogEvents. It keeps counters, not events (moto stores and re-sorts every
event, which makes it the bottleneck at benchmark rates). Signatures are not
checked. GET /stats returns the counters per log group as JSON; POST /reset
clears them.

usage: bench-logs-sink.py PORT
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
GROUPS = {}  # name -> {"events", "bytes", "calls", "max_call_events", "max_call_bytes", "streams": set}


def group(name):
    g = GROUPS.get(name)
    if g is None:
        g = GROUPS[name] = {"events": 0, "bytes": 0, "calls": 0,
                            "max_call_events": 0, "max_call_bytes": 0,
                            "first_put": None, "last_put": None, "streams": set()}
    return g


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        with LOCK:
            out = {k: {**v, "streams": sorted(v["streams"])} for k, v in GROUPS.items()}
        self.reply(200, out)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(n)
        if self.path == "/reset":
            with LOCK:
                GROUPS.clear()
            return self.reply(200, {})
        op = self.headers.get("X-Amz-Target", "").split(".")[-1]
        try:
            req = json.loads(raw or b"{}")
        except ValueError:
            return self.reply(400, {"__type": "SerializationException"})
        import time
        with LOCK:
            if op == "CreateLogGroup":
                if req["logGroupName"] in GROUPS:
                    return self.reply(400, {"__type": "ResourceAlreadyExistsException", "message": "exists"})
                group(req["logGroupName"])
                return self.reply(200, {})
            if op == "CreateLogStream":
                g = group(req["logGroupName"])
                if req["logStreamName"] in g["streams"]:
                    return self.reply(400, {"__type": "ResourceAlreadyExistsException", "message": "exists"})
                g["streams"].add(req["logStreamName"])
                return self.reply(200, {})
            if op == "PutLogEvents":
                g = group(req["logGroupName"])
                events = req.get("logEvents", [])
                size = sum(len(e["message"].encode()) + 26 for e in events)
                g["events"] += len(events)
                g["bytes"] += size
                g["calls"] += 1
                g["max_call_events"] = max(g["max_call_events"], len(events))
                g["max_call_bytes"] = max(g["max_call_bytes"], size)
                now = time.time()
                g["first_put"] = g["first_put"] or now
                g["last_put"] = now
                return self.reply(200, {"nextSequenceToken": str(g["calls"])})
            if op == "DescribeLogStreams":
                g = group(req["logGroupName"])
                return self.reply(200, {"logStreams": [{"logStreamName": s} for s in sorted(g["streams"])]})
            if op == "GetLogEvents":
                return self.reply(200, {"events": [], "nextForwardToken": "f/0", "nextBackwardToken": "b/0"})
            return self.reply(200, {})


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()
