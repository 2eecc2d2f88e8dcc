"""A stand-in for the Anthropic Messages API, for tests: it records which key each
request carried and answers just enough for `claude -p` to finish.

Usage: python3 server.py PORT RECORD_FILE [REVOKED_FILE]

- every request appends one JSON line to RECORD_FILE:
  {"method", "path", "x_api_key", "authorization", "status"} (the headers as sent, or
  null, and the status answered);
- a request whose x-api-key is a line of REVOKED_FILE (read on every request) gets a
  401 authentication_error, as the real API answers a key that was rotated out;
- POST /v1/messages answers one text block, "fake reply", as a server-sent event
  stream when the request asks for `"stream": true`, else as one JSON message;
- POST /v1/messages/count_tokens answers {"input_tokens": 1};
- anything else gets a 404 in the API's error shape.

It listens on 127.0.0.1 only: a test runs it inside the container whose requests it
records, so it needs no network path between containers (csagent's network has
none) and no route to the host (csagent's firewall blocks that).
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECORD_LOCK = threading.Lock()
REPLY = "fake reply"


def message(model):
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }


def sse(model):
    events = [
        ("message_start", {"type": "message_start", "message": message(model)}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": REPLY}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": 2}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def record(self, status):
        line = json.dumps({
            "method": self.command,
            "path": self.path,
            "x_api_key": self.headers.get("x-api-key"),
            "authorization": self.headers.get("authorization"),
            "status": status,
        })
        with RECORD_LOCK, open(self.server.record_file, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def body(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            return {}

    def revoked(self):
        if not self.server.revoked_file:
            return False
        try:
            with open(self.server.revoked_file, encoding="utf-8") as f:
                revoked = {line.strip() for line in f if line.strip()}
        except FileNotFoundError:
            return False
        return self.headers.get("x-api-key") in revoked

    def send(self, status, content_type, text):
        self.record(status)
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        request = self.body()
        path = self.path.split("?", 1)[0]
        model = request.get("model", "claude-fake")
        if self.revoked():
            error = {"type": "error",
                     "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
            self.send(401, "application/json", json.dumps(error))
        elif path == "/v1/messages":
            if request.get("stream"):
                self.send(200, "text/event-stream", sse(model))
            else:
                reply = message(model)
                reply["content"] = [{"type": "text", "text": REPLY}]
                reply["stop_reason"] = "end_turn"
                self.send(200, "application/json", json.dumps(reply))
        elif path == "/v1/messages/count_tokens":
            self.send(200, "application/json", json.dumps({"input_tokens": 1}))
        else:
            self.not_found()

    def do_GET(self):
        self.not_found()

    def not_found(self):
        error = {"type": "error", "error": {"type": "not_found_error", "message": self.path}}
        self.send(404, "application/json", json.dumps(error))

    def log_message(self, *args):
        pass  # the record file is the log; stderr would repeat the keys


def main():
    port, record_file = int(sys.argv[1]), sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.record_file = record_file
    server.revoked_file = sys.argv[3] if len(sys.argv) > 3 else None
    server.serve_forever()


if __name__ == "__main__":
    main()
