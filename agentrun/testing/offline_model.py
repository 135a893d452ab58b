"""The offline model: a small HTTP server that speaks OpenAI's chat-completions protocol.

It streams scripted replies over server-sent events exactly as the real API does (role chunk,
content chunks, tool-call chunks with arguments split into fragments, a finish chunk, the usage
chunk, `data: [DONE]`), so the real `openai` client, its SSE parsing and its HTTP errors are
exercised. With no script it plays a small built-in agent: it picks tools from keywords in the
prompt and then sums up what they returned.

Tests script it per prompt: `server.script("some prompt", [Reply(...), Fault(429, ...)])`
plays one step per request whose last user message contains that key. Faults are HTTP errors
(with Retry-After), a connection dropped mid-stream, a malformed chunk and a stall.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agentrun.testing.offline_agent import (
    Fault,
    FaultKind,
    FaultRates,
    RecordedRequest,
    Reply,
    Step,
    ToolCallSpec,
    _last_user_text,
    default_agent,
)
from agentrun.testing.offline_wire import _chunks, _completion, _has_payload

__all__ = [
    "Fault",
    "FaultKind",
    "FaultRates",
    "OfflineModelServer",
    "RecordedRequest",
    "Reply",
    "Step",
    "ToolCallSpec",
    "default_agent",
    "main",
]


class OfflineModelServer:
    """The server; start() runs it on a daemon thread, stop() ends it."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tokens_per_second: float | None = None,
        api_key: str | None = None,
        fault_rates: FaultRates | None = None,
        record_sends: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.tokens_per_second = tokens_per_second
        self.api_key = api_key
        self.fault_rates = fault_rates
        self._rng = random.Random(fault_rates.seed if fault_rates else 0)
        self._scripts: dict[str, deque[Step]] = {}
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        # (time.time(), text) of every content chunk sent, for latency benchmarks.
        self.sends: list[tuple[float, str]] | None = [] if record_sends else None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # -- scripting -------------------------------------------------------------------------

    def script(self, key: str, steps: list[Step]) -> None:
        """Play `steps`, one per request, for requests whose last user message contains key."""
        with self._lock:
            self._scripts.setdefault(key, deque()).extend(steps)

    def requests_for(self, key: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.key == key]

    def _next_step(self, body: dict[str, Any]) -> tuple[str, Step]:
        prompt = _last_user_text(body.get("messages") or [])
        with self._lock:
            for key, steps in self._scripts.items():
                if key in prompt:
                    if steps:
                        return key, steps.popleft()
                    return key, default_agent(body)
            fault = self._random_fault()
        return "", fault or default_agent(body)

    def _random_fault(self) -> Fault | None:
        rates = self.fault_rates
        if rates is None:
            return None
        roll = self._rng.random()
        for kind, p in (
            ("429", rates.http_429),
            ("500", rates.http_500),
            ("drop", rates.drop),
            ("malformed", rates.malformed),
            ("stall", rates.stall),
        ):
            if roll < p:
                if kind == "429":
                    return Fault("http", 429, "rate limited", retry_after_s=rates.retry_after_s)
                if kind == "500":
                    return Fault("http", 500, "internal error")
                if kind == "stall":
                    return Fault("stall", stall_s=rates.stall_s)
                return Fault(kind)  # type: ignore[arg-type]
            roll -= p
        return None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> OfflineModelServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="offline-model", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> OfflineModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    owner: OfflineModelServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def _error(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._json(
            status,
            {"error": {"message": message, "type": "invalid_request_error", "code": code}},
            headers,
        )

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._json(
                200, {"object": "list", "data": [{"id": "offline-scripted", "object": "model"}]}
            )
        elif self.path.rstrip("/") in ("", "/health", "/v1"):
            self._json(200, {"ok": True})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        owner = self.owner
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._error(404, f"no route {self.path}")
            return
        if owner.api_key is not None:
            auth = self.headers.get("Authorization", "")
            if auth != f"Bearer {owner.api_key}":
                self._error(401, "Incorrect API key provided.", "invalid_api_key")
                return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._error(400, "We could not parse the JSON body of your request.")
            return
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            self._error(400, "'messages' is a required property and must be a non-empty array")
            return
        key, step = owner._next_step(body)
        record = RecordedRequest(time.time(), key, body)
        with owner._lock:
            owner.requests.append(record)
        if isinstance(step, Fault) and step.kind == "http":
            record.outcome = f"http {step.status}"
            headers: dict[str, str] = {}
            if step.retry_after_s is not None:
                headers["Retry-After"] = f"{step.retry_after_s:g}"
            if step.retry_after_ms is not None:
                headers["retry-after-ms"] = str(step.retry_after_ms)
            self._error(step.status, step.message, step.code, headers)
            return
        if not body.get("stream"):
            reply = step if isinstance(step, Reply) else default_agent(body)
            record.outcome = "ok"
            self._json(200, _completion(body, reply))
            return
        record.outcome = "stream"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            self._stream(body, step, record)
        except (BrokenPipeError, ConnectionResetError):
            record.outcome = "client went away"

    def _send_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _event(self, payload: dict[str, Any] | str) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        self._send_chunk(f"data: {text}\n\n".encode())

    def _stream(self, body: dict[str, Any], step: Step, record: RecordedRequest) -> None:
        owner = self.owner
        reply = (
            step
            if isinstance(step, Reply)
            else Reply(
                text="This answer will be cut off by a scripted fault before it ends. " * 4,
                usage=step.usage,
            )
        )
        fault = step if isinstance(step, Fault) else None
        delay = reply.delay_s
        if owner.tokens_per_second:
            delay = 1.0 / owner.tokens_per_second
        if reply.first_token_delay_s:
            time.sleep(reply.first_token_delay_s)
        sent = 0
        for chunk in _chunks(body, reply):
            if fault is not None and sent >= fault.after_chunks:
                self._fault(fault, record)
                return
            self._event(chunk)
            sent += 1
            if owner.sends is not None and chunk["choices"]:
                content = (chunk["choices"][0].get("delta") or {}).get("content")
                if content:
                    owner.sends.append((time.time(), content))
            if delay and chunk["choices"] and _has_payload(chunk):
                time.sleep(delay)
        if fault is not None:
            self._fault(fault, record)
            return
        self._event("[DONE]")
        self._send_chunk(b"")
        record.outcome = "ok"

    def _fault(self, fault: Fault, record: RecordedRequest) -> None:
        record.outcome = fault.kind
        if fault.kind == "malformed":
            self._send_chunk(
                b'data: {"id": "chatcmpl-broken", "choices": [{"delta": {"content": \n\n'
            )
            self._send_chunk(b"")
            return
        if fault.kind == "stall":
            deadline = time.monotonic() + fault.stall_s
            while time.monotonic() < deadline:
                time.sleep(0.2)
                # An SSE comment keeps the TCP connection busy without sending any data; it
                # also tells us when the client has gone so the thread can end.
                try:
                    self._send_chunk(b": stalled\n\n")
                except OSError:
                    return
            return
        # drop: end the TCP connection in the middle of the chunked body
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="agentrun's offline OpenAI-compatible model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--tokens-per-second", type=float, default=None)
    args = parser.parse_args(argv)
    server = OfflineModelServer(args.host, args.port, tokens_per_second=args.tokens_per_second)
    server.start()
    print(f"offline model listening on {server.base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
