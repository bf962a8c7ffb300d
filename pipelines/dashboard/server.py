"""Serving the dashboard: a feed, the app over it, uvicorn on one address.

:func:`serve` blocks until interrupted; :class:`Server` runs the same in a thread (tests,
the benchmark) and says where it listens.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from pipelines.dashboard.app import create_app


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("::1")
    (True, True, True)
    >>> is_loopback("0.0.0.0"), is_loopback("192.168.1.4"), is_loopback("")
    (False, False, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServeSettings:
    """How to serve: address, the token (required off loopback), TLS files."""

    host: str = "127.0.0.1"
    port: int = 8060
    token: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def __post_init__(self) -> None:
        if not is_loopback(self.host) and not self.token:
            raise ValueError(f"binding {self.host} (beyond this machine) needs a token "
                             f"(--token-file FILE or $TWIN_DASHBOARD_TOKEN)")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("TLS needs both a certificate and its key")

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_certfile else "http"

    def url(self, port: int | None = None) -> str:
        host = self.host
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{port or self.port}/"


class Server:
    """uvicorn serving the dashboard over ``feed`` in a background thread."""

    def __init__(self, feed, settings: ServeSettings) -> None:
        import uvicorn

        self.feed, self.settings = feed, settings
        self.app, self.dashboard = create_app(feed, settings.token,
                                              secure_cookie=bool(settings.ssl_certfile))
        config = uvicorn.Config(
            self.app, host=settings.host, port=settings.port, log_level="warning",
            access_log=False, lifespan="off", timeout_graceful_shutdown=2,
            ssl_certfile=settings.ssl_certfile, ssl_keyfile=settings.ssl_keyfile,
            server_header=False)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        for s in getattr(self.server, "servers", ()):
            for sock in s.sockets:
                return sock.getsockname()[1]
        return self.settings.port

    @property
    def url(self) -> str:
        return self.settings.url(self.port)

    def run(self) -> None:
        """Serve in this thread until stopped (Ctrl-C stops uvicorn)."""
        try:
            self.server.run()
        finally:
            self.dashboard.stopping = True

    def start(self, timeout_s: float = 15.0) -> Server:
        self._thread = threading.Thread(target=self.run, name="dashboard", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard did not start on {self.settings.host}:"
                                   f"{self.settings.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.dashboard.stopping = True
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.dashboard.close()


def status_line(feed) -> str:
    s: dict[str, Any] = feed.status()
    if s["source"] == "kafka":
        return f"reading {', '.join(s['topics'])} at {s['bootstrap_servers']}"
    return f"reading the run folder {s['folder']}"
