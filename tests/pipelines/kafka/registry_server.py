"""A small, real Confluent-compatible schema registry over HTTP, for tests.

It implements the part of the Schema Registry REST API that
``confluent_kafka.schema_registry.SchemaRegistryClient`` uses for registering and looking
up schemas (read from the client in confluent-kafka 2.16):

- ``POST /subjects/{subject}/versions[?normalize=..]`` body ``{"schema", "schemaType"?,
  "references"?}`` -> ``{"id": N}``; the same schema text gets the same id in every
  subject, and registering it again returns that id (as the real registry does);
- ``GET /schemas/ids/{id}[?subject=..]`` -> ``{"schema": ...}`` (``schemaType`` only when
  not AVRO, like the real one), 404 with error code 40403 when unknown;
- ``POST /subjects/{subject}`` (lookup: is this schema registered under the subject?),
  ``GET /subjects``, ``GET /subjects/{subject}/versions``,
  ``GET /subjects/{subject}/versions/{version|latest}``.

Ids start at ``first_id`` (small, like a fresh registry), so they differ from the repo's
local CRC ids. ``requests`` records every call (method, path) so tests can check caching;
``fail_with`` makes every request answer that HTTP status (a registry in trouble).
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryState:
    def __init__(self, first_id: int = 1) -> None:
        self.next_id = first_id
        self.schemas: dict[int, dict[str, Any]] = {}  # id -> {"schema", "schemaType"}
        self.ids_by_text: dict[tuple[str, str], int] = {}
        self.subjects: dict[str, list[int]] = {}  # subject -> ids by version
        self.requests: list[tuple[str, str]] = []
        self.fail_with: int | None = None
        self.lock = threading.Lock()

    def register(self, subject: str, schema: str, schema_type: str) -> int:
        try:
            text = json.dumps(json.loads(schema), sort_keys=True, separators=(",", ":"))
        except ValueError as exc:
            raise _Error(422, 42201, f"Invalid schema: {exc}") from exc
        with self.lock:
            sid = self.ids_by_text.get((schema_type, text))
            if sid is None:
                sid = self.next_id
                self.next_id += 1
                self.ids_by_text[(schema_type, text)] = sid
                self.schemas[sid] = {"schema": schema, "schemaType": schema_type}
            versions = self.subjects.setdefault(subject, [])
            if sid not in versions:
                versions.append(sid)
            return sid

    def add_raw(self, schema: str, schema_type: str = "AVRO") -> int:
        """Register ``schema`` without a subject (e.g. someone else's schema)."""
        return self.register(f"_other_{self.next_id}", schema, schema_type)

    def registered(self, sid: int, subject: str | None = None,
                   version: int | None = None) -> dict[str, Any]:
        s = self.schemas[sid]
        out: dict[str, Any] = {"id": sid, "schema": s["schema"]}
        if s["schemaType"] != "AVRO":
            out["schemaType"] = s["schemaType"]
        if subject is not None:
            out["subject"], out["version"] = subject, version
        return out


class _Error(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _handler(state: RegistryState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            n = int(self.headers.get("Content-Length") or 0)
            try:
                return json.loads(self.rfile.read(n) or b"{}")
            except ValueError as exc:
                raise _Error(400, 400, f"bad JSON body: {exc}") from exc

        def _dispatch(self, method: str) -> None:
            parts = urlsplit(self.path)
            path, query = unquote(parts.path), parse_qs(parts.query)
            state.requests.append((method, path))
            body = self._body() if method == "POST" else {}
            try:
                if state.fail_with is not None:
                    raise _Error(state.fail_with, state.fail_with * 100, "registry unwell")
                self._send(200, self._route(method, path, query, body))
            except _Error as exc:
                self._send(exc.status, {"error_code": exc.code, "message": exc.message})

        def _route(self, method: str, path: str, query, body) -> Any:
            if method == "POST" and (m := re.fullmatch(r"/subjects/([^/]+)/versions", path)):
                if body.get("references"):
                    raise _Error(422, 42201, "references are not supported here")
                sid = state.register(m[1], body.get("schema", ""),
                                     body.get("schemaType") or "AVRO")
                return {"id": sid}
            if method == "GET" and (m := re.fullmatch(r"/schemas/ids/(\d+)", path)):
                sid = int(m[1])
                if sid not in state.schemas:
                    raise _Error(404, 40403, f"Schema {sid} not found")
                return state.registered(sid)
            if method == "POST" and (m := re.fullmatch(r"/subjects/([^/]+)", path)):
                subject = m[1]
                for version, sid in enumerate(state.subjects.get(subject, []), 1):
                    s = state.schemas[sid]
                    if json.loads(s["schema"]) == json.loads(body.get("schema", "null")):
                        return state.registered(sid, subject, version)
                raise _Error(404, 40403, "Schema not found")
            if method == "GET" and path == "/subjects":
                return sorted(state.subjects)
            if method == "GET" and (m := re.fullmatch(r"/subjects/([^/]+)/versions", path)):
                if m[1] not in state.subjects:
                    raise _Error(404, 40401, f"Subject '{m[1]}' not found.")
                return list(range(1, len(state.subjects[m[1]]) + 1))
            if method == "GET" and (
                    m := re.fullmatch(r"/subjects/([^/]+)/versions/(latest|\d+)", path)):
                ids = state.subjects.get(m[1])
                if not ids:
                    raise _Error(404, 40401, f"Subject '{m[1]}' not found.")
                version = len(ids) if m[2] == "latest" else int(m[2])
                if not 1 <= version <= len(ids):
                    raise _Error(404, 40402, f"Version {m[2]} not found.")
                return state.registered(ids[version - 1], m[1], version)
            raise _Error(404, 404, f"HTTP 404 Not Found: {method} {path}")

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._dispatch("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._dispatch("POST")

    return Handler


class RegistryServer:
    """The registry on ``127.0.0.1:<free port>`` in a background thread."""

    def __init__(self, first_id: int = 1) -> None:
        self.state = RegistryState(first_id)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> RegistryServer:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
