"""The dashboard's HTTP side: pages, the read-only twin-state API, and push updates.

A small ASGI app (Starlette, served by uvicorn). Pages are static files shipped in the
package (``static/``: HTML, the page scripts, uPlot for charts); no CDN, nothing fetched
at run time. Everything the pages show comes from the JSON API, which any other tool can
read too (Grafana's JSON or Infinity data sources, a CMMS):

=====================================  ====================================================
``GET /api/assets``                    every asset's latest state, riskiest first
                                       (``?type=``, ``?site=``, ``?status=`` filter,
                                       ``?fields=a,b`` picks fields), fleet counts, data
                                       quality counts
``GET /api/assets/{id}``               one asset: its state, recent predictions, sensor
                                       window statistics, actions, alarm and drift marks
``GET /api/quality``                   dead letters by reason and source with samples,
                                       late and duplicate readings per minute
``GET /api/status``                    where the data comes from and how far behind it is
``GET /api/events``                    Server-Sent Events: the fleet rows that changed
``GET /api/assets/{id}/events``        Server-Sent Events: what changed for one asset
``GET /api/whatif/{id}``               a what-if for one asset: the scenario in the query
                                       string (``?set=speed=-10%25&from=+30m&for=2h``),
                                       the roll-forward out; ``recommend=1`` adds the
                                       recommended setpoint, a dry run
                                       (:mod:`pipelines.dashboard.whatif`)
=====================================  ====================================================

Push is Server-Sent Events (plain HTTP, reconnects by itself, one direction is all a
read-only view needs): each stream looks at the view every :data:`PUSH_S` and sends only
what changed since what it sent last.

Security (:class:`Guard`, a plain ASGI middleware in front of everything): read-only (GET
and HEAD only; POST only to ``/login``; the what-if computes and never actuates: a setpoint
it recommends is shown as a dry run and the command that would send it, signed, by a
person); with a token configured every request needs it,
as ``Authorization: Bearer <token>`` (API clients) or the session cookie the login page
sets (browsers; HttpOnly, SameSite=Strict, derived from the token, never the token
itself), compared in constant time; without a token (loopback binds only, which the
command enforces) the ``Host`` header must name a loopback address, so a web page elsewhere
cannot reach the API through DNS rebinding. Every response carries a strict
Content-Security-Policy (scripts and styles from this server only) and ``nosniff``.
Tokens never reach a log: uvicorn's access log is off, and the token never sits in a URL.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pipelines.dashboard import whatif as whatif_panel
from transforms import fleetview

PUSH_S = 0.25  # how often a push stream looks for changes
HEARTBEAT_S = 15.0  # an SSE comment this often keeps proxies from closing idle streams
SESSION_COOKIE = "twin_dashboard_session"
LOGIN_FAILURE_DELAY_S = 0.5
MAX_LOGIN_BODY = 4096
WHATIF_SLOTS = 2  # what-ifs computed at once (a fraction of a second each, a
# recommendation a few seconds): threads of the what-if's own pool
WHATIF_QUEUE = 8  # what-ifs in hand (computing or waiting) beyond which the next gets 503
WHATIF_CACHE = 64  # answers kept (per asset state and question)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def static_dir() -> Path:
    """The folder of the shipped page assets."""
    return Path(str(resources.files("pipelines.dashboard") / "static"))


def session_value(token: str) -> str:
    """The login cookie's value for ``token``: derived from it, not the token itself."""
    return hmac.new(token.encode(), b"twin-dashboard-session", hashlib.sha256).hexdigest()


def _same(a: str, b: str) -> bool:
    """Constant-time equality of two strings (of any lengths)."""
    return hmac.compare_digest(hashlib.sha256(a.encode()).digest(),
                               hashlib.sha256(b.encode()).digest())


def _host_name(host_header: str) -> str:
    """``127.0.0.1`` of ``127.0.0.1:8060``, ``::1`` of ``[::1]:8060``."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:].partition("]")[0]
    return h.rpartition(":")[0] if h.count(":") == 1 else h


class Guard:
    """Read-only, token and Host checks, and security headers (module docstring)."""

    def __init__(self, app, token: str | None = None, secure_cookie: bool = False) -> None:
        self.app, self.token, self.secure_cookie = app, token, secure_cookie
        self.session = session_value(token) if token else None

    def authorized(self, headers: dict[bytes, bytes]) -> bool:
        if self.token is None:
            return True
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if auth[:7].lower() == "bearer " and _same(auth[7:].strip(), self.token):
            return True
        for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
            name, _, value = part.strip().partition("=")
            if name == SESSION_COOKIE and _same(value, self.session):
                return True
        return False

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or ())
        path, method = scope.get("path", ""), scope.get("method", "GET")

        async def secured(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message,
                           "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        if self.token is None:
            host = _host_name(headers.get(b"host", b"").decode("latin-1"))
            if host not in LOOPBACK_HOSTS:
                return await _json(400, {"error": "this dashboard answers only to loopback "
                                                  "host names (127.0.0.1, localhost)"}
                                   )(scope, receive, secured)
        login = path == "/login"
        if method not in ("GET", "HEAD") and not (login and method == "POST"):
            return await _json(405, {"error": "the dashboard is read-only"},
                               [(b"allow", b"GET, HEAD")])(scope, receive, secured)
        if login or path.startswith("/static/") or self.authorized(headers):
            scope = {**scope, "twin_guard": self}
            return await self.app(scope, receive, secured)
        if path.startswith("/api/"):
            return await _json(401, {"error": "a token is required: Authorization: Bearer "
                                              "<token>"},
                               [(b"www-authenticate", b"Bearer")])(scope, receive, secured)
        target = quote(path + (("?" + scope["query_string"].decode("latin-1"))
                               if scope.get("query_string") else ""), safe="/?=&")
        return await RedirectResponse(f"/login?next={target}", status_code=303)(
            scope, receive, secured)


def _json(status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None
          ) -> Response:
    r = Response(orjson.dumps(body), status_code=status, media_type="application/json")
    for k, v in headers or ():
        r.headers[k.decode()] = v.decode()
    return r


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers={"cache-control": "no-store"})


def _pick(rows: list[dict[str, Any]], fields: str | None) -> list[dict[str, Any]]:
    if not fields:
        return rows
    wanted = [f for f in fields.split(",") if f in fleetview.ROW_FIELDS]
    if "asset_id" not in wanted:
        wanted.insert(0, "asset_id")
    return [{f: r[f] for f in wanted} for r in rows]


def _sse(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class Dashboard:
    """The app's handlers over a feed (:mod:`pipelines.dashboard.feeds`), whose
    ``view`` may be replaced (a reread run folder: ``epoch`` counts that)."""

    def __init__(self, feed, title: str = "twinstream") -> None:
        self.feed, self.title = feed, title
        self.stopping = False
        self._whatif_pool = ThreadPoolExecutor(WHATIF_SLOTS, thread_name_prefix="whatif")
        self._whatif_waiting = 0
        self._whatif_cache: OrderedDict[tuple, dict[str, Any]] = OrderedDict()

    def close(self) -> None:
        """Stop the what-if's threads (a question still computing finishes)."""
        self._whatif_pool.shutdown(wait=False, cancel_futures=True)

    @property
    def view(self) -> fleetview.FleetView:
        return self.feed.view

    @property
    def epoch(self) -> int:
        return getattr(self.feed, "epoch", 0)

    # -- pages --------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        name = {"/": "fleet.html", "/quality": "quality.html",
                        "/login": "login.html"}.get(request.url.path, "asset.html")
        return FileResponse(static_dir() / name, headers={"cache-control": "no-store"})

    async def login(self, request: Request) -> Response:
        guard: Guard | None = request.scope.get("twin_guard")
        if request.method != "POST":
            if guard is None or guard.token is None:
                return RedirectResponse("/", status_code=303)
            return FileResponse(static_dir() / "login.html",
                                headers={"cache-control": "no-store"})
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_LOGIN_BODY:
                return json_response({"error": "request too large"}, 413)
        form = parse_qs(body.decode("utf-8", "replace"))
        nxt = (form.get("next") or ["/"])[0]
        if not nxt.startswith("/") or nxt.startswith("//") or "\\" in nxt:
            nxt = "/"
        if guard is None or guard.token is None:
            return RedirectResponse(nxt, status_code=303)
        if not _same((form.get("token") or [""])[0].strip(), guard.token):
            await asyncio.sleep(LOGIN_FAILURE_DELAY_S)
            return RedirectResponse(f"/login?failed=1&next={quote(nxt, safe='/?=&')}",
                                    status_code=303)
        response = RedirectResponse(nxt, status_code=303)
        response.set_cookie(SESSION_COOKIE, guard.session, httponly=True, samesite="strict",
                            secure=guard.secure_cookie, path="/")
        return response

    # -- API ----------------------------------------------------------------------------

    def _locked(self, fn, *args):
        view = self.view
        with view.lock:
            return fn(view, *args)

    async def assets(self, request: Request) -> Response:
        q = request.query_params

        def build(view: fleetview.FleetView) -> dict[str, Any]:
            rows = view.rows(q.get("type") or None, q.get("site") or None,
                             q.get("status") or None)
            return {"version": view.version, "epoch": self.epoch, "count": len(rows),
                    "counts": view.counts(), "quality": view.quality.summary(),
                    "assets": _pick(rows, q.get("fields"))}

        return json_response(await run_in_threadpool(self._locked, build))

    async def asset(self, request: Request) -> Response:
        asset_id = request.path_params["asset_id"]
        detail = await run_in_threadpool(
            self._locked, lambda v: v.asset_detail(asset_id))
        if detail is None:
            return json_response({"error": f"no asset {asset_id!r} in the twin's outputs"},
                                 404)
        return json_response({"epoch": self.epoch, **detail})

    async def quality(self, request: Request) -> Response:
        def build(view: fleetview.FleetView) -> dict[str, Any]:
            return {"version": view.quality.version, "epoch": self.epoch,
                    **view.quality.detail()}

        return json_response(await run_in_threadpool(self._locked, build))

    async def status(self, request: Request) -> Response:
        def build(view: fleetview.FleetView) -> dict[str, Any]:
            return {"assets": len(view.assets), "records": view.records,
                    "records_by_schema": dict(view.records_by_schema),
                    "version": view.version, "epoch": self.epoch}

        out = await run_in_threadpool(self._locked, build)
        out.update(self.feed.status())
        out["server_ms"] = int(time.time() * 1000)
        out["rss_mb"] = rss_mb()
        return json_response(out)

    async def whatif(self, request: Request) -> Response:
        """A what-if for one asset (:mod:`pipelines.dashboard.whatif`): computes, never
        actuates. At most :data:`WHATIF_SLOTS` compute at once, each in a thread of the
        what-if's own pool (the push streams keep the shared one); with
        :data:`WHATIF_QUEUE` questions already in hand, another gets 503 at once. Answers
        are cached per asset state and question."""
        from transforms.whatif.model import ModelError
        from transforms.whatif.scenario import ScenarioError

        asset_id = request.path_params["asset_id"]
        try:
            ask = whatif_panel.parse_query(request.query_params.multi_items(),
                                           request.scope.get("query_string", b""))
        except ScenarioError as exc:
            return json_response({"error": str(exc)}, 400)
        sources = await run_in_threadpool(self._locked,
                                          lambda v: v.whatif_sources(asset_id))
        if sources is None:
            return json_response({"error": f"no asset {asset_id!r} in the twin's outputs"},
                                 404)
        learned, later = sources
        key = (self.epoch, asset_id, hash(learned), len(later),
               later[-1]["ts_ms"] if later else None, ask.key)
        cached = self._whatif_cache.get(key)
        if cached is not None:
            self._whatif_cache.move_to_end(key)
            return json_response(cached)
        if self._whatif_waiting >= WHATIF_QUEUE:
            return json_response({"error": "the what-if is busy with other questions: try "
                                           "again in a moment"}, 503)
        self._whatif_waiting += 1
        try:
            out = await asyncio.get_running_loop().run_in_executor(
                self._whatif_pool, whatif_panel.compute, asset_id, learned, later, ask,
                self.optimize_source())
        except ModelError as exc:
            return json_response({"available": False, "error": str(exc)}, 409)
        except ScenarioError as exc:
            return json_response({"error": whatif_panel.plus_hint(
                str(exc), request.scope.get("query_string", b""))}, 400)
        finally:
            self._whatif_waiting -= 1
        self._whatif_cache[key] = out
        while len(self._whatif_cache) > WHATIF_CACHE:
            self._whatif_cache.popitem(last=False)
        return json_response(out)

    def optimize_source(self) -> list[str] | None:
        """How ``twin optimize`` names the dashboard's source (None: it cannot read it)."""
        fn = getattr(self.feed, "optimize_source", None)
        return fn() if fn is not None else None

    # -- push ---------------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        q = request.query_params
        fields = q.get("fields")
        try:
            since = int(q.get("since", "-1"))
            epoch = int(q.get("epoch", str(self.epoch)))
        except ValueError:
            return json_response({"error": "since and epoch are whole numbers"}, 400)

        def delta(view: fleetview.FleetView, since: int, quality_v: int):
            if view.version <= since:
                return None
            rows = view.changed_since(since)
            out = {"version": view.version, "epoch": self.epoch,
                   "rows": _pick(rows, fields), "counts": view.counts(),
                   "server_ms": int(time.time() * 1000)}
            if view.quality.version != quality_v:
                out["quality"] = view.quality.summary()
            return out, view.quality.version

        async def stream():
            nonlocal since, epoch
            quality_v = -1
            last_sent = time.monotonic()
            yield b"retry: 2000\n\n"
            while not self.stopping:
                if self.epoch != epoch:
                    epoch = self.epoch
                    yield _sse("reset", {"epoch": epoch})
                    return
                if since < 0:
                    since = self.view.version  # new client: only what happens from now on
                d = await run_in_threadpool(self._locked, delta, since, quality_v)
                if d is not None:
                    d, quality_v = d
                    since = d["version"]
                    yield _sse("fleet", d)
                    last_sent = time.monotonic()
                elif time.monotonic() - last_sent > HEARTBEAT_S:
                    yield b": keep-alive\n\n"
                    last_sent = time.monotonic()
                await asyncio.sleep(PUSH_S)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store",
                                          "x-accel-buffering": "no"})

    async def asset_events(self, request: Request) -> Response:
        asset_id = request.path_params["asset_id"]
        q = request.query_params
        try:
            cursor = {k: int(q[k]) for k in ("version", "predictions", "sensors", "actions",
                                             "marks") if k in q}
        except ValueError:
            return json_response({"error": "cursor values are whole numbers"}, 400)
        epoch = self.epoch

        async def stream():
            nonlocal cursor
            last_sent = time.monotonic()
            yield b"retry: 2000\n\n"
            while not self.stopping:
                if self.epoch != epoch:
                    yield _sse("reset", {"epoch": self.epoch})
                    return
                d = await run_in_threadpool(self._locked, fleetview.FleetView.asset_since,
                                            asset_id, cursor)
                if d is not None:
                    cursor = d["cursor"]
                    d["server_ms"] = int(time.time() * 1000)
                    yield _sse("asset", d)
                    last_sent = time.monotonic()
                elif time.monotonic() - last_sent > HEARTBEAT_S:
                    yield b": keep-alive\n\n"
                    last_sent = time.monotonic()
                await asyncio.sleep(PUSH_S)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store",
                                          "x-accel-buffering": "no"})


def rss_mb() -> float | None:
    """This process's resident memory in MB (Linux), for the status page and the bench."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def create_app(feed, token: str | None = None, secure_cookie: bool = False,
               title: str = "twinstream") -> tuple[Guard, Dashboard]:
    """The ASGI app over ``feed``, guarded; returns ``(app, handlers)``."""
    d = Dashboard(feed, title)
    routes = [
        Route("/", d.page),
        Route("/quality", d.page),
        Route("/asset/{asset_id:path}", d.page),
        Route("/login", d.login, methods=["GET", "HEAD", "POST"]),
        Route("/api/assets", d.assets),
        Route("/api/assets/{asset_id}/events", d.asset_events),
        Route("/api/assets/{asset_id}", d.asset),
        Route("/api/quality", d.quality),
        Route("/api/status", d.status),
        Route("/api/events", d.events),
        Route("/api/whatif/{asset_id}", d.whatif),
        Mount("/static", StaticFiles(directory=static_dir()), name="static"),
    ]
    app = Starlette(routes=routes)
    return Guard(app, token, secure_cookie), d
