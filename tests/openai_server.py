"""A real HTTP server on loopback speaking the OpenAI chat-completions protocol, answering
from a real model: a relgrade cross-encoder teacher reads the pair in the last user
message (``Query: ...\\nProduct: ...``) and the server replies with its grade as one
digit, with token usage. It can fail the first N requests (429 or 500) to exercise the
judge's retries. Tests start it with :func:`serve` and stop it when done."""
from __future__ import annotations

import json
import re
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAIR = re.compile(r"Query:\s*(?P<q>.*)\nProduct:\s*(?P<p>.*)", re.S)


class JudgeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, grade_fn, model: str = "judge", fail_first: int = 0, fail_status: int = 429):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.grade_fn, self.model = grade_fn, model
        self.fail_left, self.fail_status = fail_first, fail_status
        self.requests = 0
        self.completions = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: JudgeServer

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, doc: dict, headers: dict | None = None) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": self.server.model, "object": "model"}]})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self):  # noqa: N802
        n = int(self.headers.get("Content-Length") or 0)
        doc = json.loads(self.rfile.read(n) or b"{}")
        with self.server.lock:
            self.server.requests += 1
            fail = self.server.fail_left > 0
            if fail:
                self.server.fail_left -= 1
        if not self.path.rstrip("/").endswith("/chat/completions"):
            return self._send(404, {"error": {"message": "not found"}})
        if fail:
            return self._send(self.server.fail_status, {"error": {"message": "try again"}}, {"Retry-After": "0"})
        msgs = doc.get("messages") or []
        m = PAIR.search(msgs[-1]["content"]) if msgs else None
        if m is None:
            return self._send(400, {"error": {"message": "no Query/Product in the last message"}})
        grade = int(self.server.grade_fn(m.group("q").strip(), m.group("p").strip()))
        prompt_tokens = sum(len(str(x.get("content", "")).split()) for x in msgs)
        with self.server.lock:
            self.server.completions += 1
        self._send(200, {"id": "chatcmpl-relgrade", "object": "chat.completion", "model": doc.get("model"),
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": str(grade)}}],
                         "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1,
                                   "total_tokens": prompt_tokens + 1}})


@contextmanager
def serve(grade_fn, **kw):
    srv = JudgeServer(grade_fn, **kw)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
