"""A small misbehaving OpenAI-compatible server for the web tests (real HTTP, stdlib only).

``Unauthorized`` answers every chat completion with ``401`` and a body that
echoes the API key it was sent and names an internal gateway URL -- what a
badly behaved upstream or proxy does, and what must never reach a browser.
"""

from __future__ import annotations

import http.server
import json
import threading
import typing as t

INTERNAL_URL = "http://10.20.30.40:8443/internal/llm-gateway"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: t.Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        key = self.headers.get("authorization", "").partition(" ")[2]
        body = json.dumps(
            {
                "error": {
                    "message": f"Incorrect API key provided: {key}. Upstream {INTERNAL_URL} refused the request "
                    f"(authorization: Bearer {key})",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            }
        ).encode()
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Unauthorized:
    """``with Unauthorized() as srv: srv.base_url`` -- a model server that refuses every key, echoing it."""

    def __init__(self) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="unauthorized-model", daemon=True)

    def __enter__(self) -> Unauthorized:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)
