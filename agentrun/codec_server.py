"""`agentrun codec-server`: the Temporal codec-server protocol over agentrun's payload codec,
so the Web UI and the `temporal` CLI show encrypted runs in clear text to the people allowed to.

POST /encode and POST /decode take and return {"payloads": [...]} in the protobuf JSON form of
temporal.api.common.v1.Payloads (metadata values and data in base64). Any path ending in
/encode or /decode is accepted, since the UI may put the namespace in front. With a token set,
the Authorization header must be "Bearer <token>" (or the token itself); OPTIONS preflights are
answered without it, for the configured Web UI origins only.

The standard library's threading HTTP server is enough here: one small JSON request per page
view, CPU-bound AES-GCM, no streaming.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from agentrun.codec import PayloadEncryptionCodec, PayloadKeyError
from agentrun.stack import is_local

__all__ = ["CodecServer"]

log = logging.getLogger("agentrun.codec_server")

MAX_BODY_BYTES = 64 * 1024 * 1024  # a whole history's payloads at most; Temporal caps it at 50 MB
ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"


class CodecServer:
    def __init__(
        self,
        codec: PayloadEncryptionCodec,
        *,
        host: str = "127.0.0.1",
        port: int = 8081,
        token: str | None = None,
        cors_origins: list[str] | None = None,
    ) -> None:
        if not token and (not is_local(host) or host in ("0.0.0.0", "::")):
            raise ValueError(
                f"the codec server opens every payload; it listens on {host} only with a token "
                "(set AGENTRUN_CODEC_SERVER_TOKEN) or on 127.0.0.1 without one"
            )
        self.codec = codec
        self.host = host
        self.token = token or None
        self.cors_origins = {o.rstrip("/") for o in cors_origins or []}
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> CodecServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="agentrun-codec-server", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def _authorized(self, header: str | None) -> bool:
        if self.token is None:
            return True
        if not header:
            return False
        given = header[7:] if header.lower().startswith("bearer ") else header
        return hmac.compare_digest(given.strip().encode(), self.token.encode())

    def _transform(self, action: str, body: bytes) -> bytes:
        payloads = Payloads()
        json_format.Parse(body, payloads, ignore_unknown_fields=True)
        if action == "encode":
            out = self.codec.encode_sync(payloads.payloads)
        else:
            out = self.codec.decode_sync(payloads.payloads)
        return json_format.MessageToJson(Payloads(payloads=out)).encode()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "agentrun-codec"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

            def _cors(self) -> None:
                origin = (self.headers.get("Origin") or "").rstrip("/")
                if origin and origin in server.cors_origins:
                    self.send_header("Access-Control-Allow-Origin", origin)
                    self.send_header("Access-Control-Allow-Credentials", "true")
                    self.send_header("Vary", "Origin")

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self._cors()
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: HTTPStatus, message: str) -> None:
                body = json.dumps({"error": message}).encode()
                self._reply(status, body, "application/json")

            def do_OPTIONS(self) -> None:
                self.send_response(HTTPStatus.NO_CONTENT)
                self._cors()
                self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
                self.send_header("Access-Control-Allow-Headers", ALLOWED_HEADERS)
                self.send_header("Access-Control-Max-Age", "600")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/")
                action = path.rsplit("/", 1)[-1]
                if action not in ("encode", "decode"):
                    self._error(HTTPStatus.NOT_FOUND, "POST /encode or /decode")
                    return
                if not server._authorized(self.headers.get("Authorization")):
                    self._error(HTTPStatus.UNAUTHORIZED, "missing or wrong Authorization token")
                    return
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if length < 0 or length > MAX_BODY_BYTES:
                    self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
                    self.close_connection = True
                    return
                body = self.rfile.read(length)
                try:
                    out = server._transform(action, body)
                except PayloadKeyError as exc:
                    self._error(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc))
                    return
                except (json_format.ParseError, ValueError) as exc:
                    self._error(HTTPStatus.BAD_REQUEST, f"expected {{'payloads': [...]}}: {exc}")
                    return
                self._reply(HTTPStatus.OK, out, "application/json")

            def do_GET(self) -> None:
                self._error(HTTPStatus.METHOD_NOT_ALLOWED, "POST /encode or /decode")

        return Handler
