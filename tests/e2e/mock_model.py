#!/usr/bin/env python3
"""A loopback OpenAI-compatible model for the end-to-end test.

POST /v1/chat/completions answers with a streamed (text/event-stream) reply, or a plain
JSON one when "stream" is false; GET /v1/models lists "mock-model". Before answering it
sleeps for the number of seconds in --delay-file (read on every request, so a test can
change it while running): that is the window in which OpenClaw 2026.5.22 has released
its session lock. Prints "PORT <n>" on stdout once listening. Binds 127.0.0.1 only and
exits by itself when its parent dies or after --max-seconds.

Tool use: when the last user message contains "[tools=N]", the first N replies after it
are a streamed call of the gateway's read-only `session_status` tool (finish_reason
"tool_calls"), so the attempt makes N + 1 model calls, each around a tool result.
"""
import argparse, json, os, re, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, default=0)
ap.add_argument("--delay-file")
ap.add_argument("--max-seconds", type=float, default=900)
args = ap.parse_args()
COUNT = [0]


def delay():
    try:
        return float(open(args.delay_file).read().strip())
    except Exception:
        return 0.0


def tool_calls_wanted(msgs):
    """Whether this reply is a tool call: fewer tool results after the last user
    message than its "[tools=N]" asks for."""
    last_user = max((i for i, m in enumerate(msgs) if m.get("role") == "user"), default=-1)
    if last_user < 0:
        return False
    c = msgs[last_user].get("content")
    m = re.search(r"\[tools=(\d+)\]", c if isinstance(c, str) else json.dumps(c))
    done = sum(1 for m in msgs[last_user + 1:] if m.get("role") == "tool")
    return m is not None and done < int(m.group(1))


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            self.send_json(200, {"object": "list", "data": [{"id": "mock-model", "object": "model", "owned_by": "mock"}]})
        else:
            self.send_json(404, {"error": {"message": "not found"}})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        req = json.loads(self.rfile.read(n) or b"{}")
        if not self.path.rstrip("/").endswith("/chat/completions"):
            return self.send_json(404, {"error": {"message": "not found"}})
        COUNT[0] += 1
        time.sleep(delay())
        text = f"mock reply {COUNT[0]}"
        created = int(time.time())
        usage = {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}
        if not req.get("stream"):
            return self.send_json(200, {
                "id": f"cmpl-{COUNT[0]}", "object": "chat.completion", "created": created, "model": "mock-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": usage})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()

        def chunk(delta, finish=None, extra=None):
            obj = {"id": f"cmpl-{COUNT[0]}", "object": "chat.completion.chunk", "created": created,
                   "model": "mock-model", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if extra:
                obj.update(extra)
            self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
            self.wfile.flush()

        if tool_calls_wanted(req.get("messages") or []):
            call = {"index": 0, "id": f"call_{COUNT[0]}", "type": "function",
                    "function": {"name": "session_status", "arguments": ""}}
            chunk({"role": "assistant", "content": None, "tool_calls": [call]})
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]})
            chunk({}, "tool_calls", {"usage": usage})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True
            return
        chunk({"role": "assistant", "content": ""})
        for word in text.split(" "):
            chunk({"content": word + " "})
        chunk({}, "stop", {"usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


srv = ThreadingHTTPServer(("127.0.0.1", args.port), H)
print(f"PORT {srv.server_address[1]}", flush=True)
parent = os.getppid()
start = time.time()


def watchdog():
    while True:
        time.sleep(0.5)
        if os.getppid() != parent or time.time() - start > args.max_seconds:
            os._exit(0)


threading.Thread(target=watchdog, daemon=True).start()
srv.serve_forever()
