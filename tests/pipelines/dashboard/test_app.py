"""The dashboard's HTTP side on a real server on a free loopback port: API values,
read-only, token and Host checks, security headers, push updates, offline assets."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from pathlib import Path

import pytest

from pipelines.dashboard.app import session_value, static_dir
from pipelines.dashboard.server import Server, ServeSettings
from pipelines.kafka.broker import free_port
from tests.transforms.test_fleetview import MIN, T0, action, prediction, state
from transforms import fleetview as fv

TOKEN = "s3cret-dashboard-token-for-tests"


class StaticFeed:
    """A feed whose view the test fills by hand."""

    def __init__(self, view: fv.FleetView) -> None:
        self.view = view

    def status(self) -> dict:
        return {"source": "test"}


def fleet() -> fv.FleetView:
    v = fv.FleetView(asset_info={"pump-000": {"site": "north"}})
    v.ingest(fv.STATE, state("pump-000", T0, health=0.9, score=0.3))
    v.ingest(fv.PREDICTION, prediction("pump-000", T0, health=0.9, score=0.3))
    v.ingest(fv.STATE, state("motor-001", T0, health=0.5, score=0.97, alert=True))
    v.ingest(fv.ACTION, action("motor-001", T0, "ALERT", "critical"), signature="valid")
    v.ingest(fv.DEAD_LETTER, {"stage": "decode", "reason": "bad_magic", "detail": "magic 7",
                              "source": "twin.raw.orca", "payload": b"\x07xx", "ts_ms": T0})
    return v


def serve(view: fv.FleetView, token: str | None = None) -> Server:
    return Server(StaticFeed(view), ServeSettings(port=free_port(), token=token)).start()


@pytest.fixture
def server():
    s = serve(fleet())
    yield s
    s.stop()


def request(server: Server, path: str, method: str = "GET", headers: dict | None = None,
            body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def get_json(server: Server, path: str, headers: dict | None = None) -> tuple[int, dict]:
    status, _, body = request(server, path, headers=headers)
    return status, json.loads(body)


def test_assets_lists_every_asset_riskiest_first_with_its_state(server):
    status, body = get_json(server, "/api/assets")
    assert status == 200 and body["count"] == 2
    motor, pump = body["assets"]
    assert (motor["asset_id"], motor["status"], motor["alert_severity"], motor["risk"]) == \
        ("motor-001", "alert", "critical", 2.97)
    assert (pump["asset_id"], pump["site"], pump["health_index"], pump["anomaly_score"]) == \
        ("pump-000", "north", 0.9, 0.3)
    assert pump["values"] == {"flow": 0.5, "speed": 150.0}
    assert body["counts"]["by_status"]["alert"] == 1
    assert body["quality"]["dead_letters_by_reason"] == {"bad_magic": 1}


def test_assets_filters_and_picks_fields(server):
    _, body = get_json(server, "/api/assets?type=pump&fields=health_index,nonsense")
    assert body["assets"] == [{"asset_id": "pump-000", "health_index": 0.9}]
    _, body = get_json(server, "/api/assets?site=south")
    assert body["assets"] == []


def test_one_asset_has_its_history_and_actions(server):
    status, body = get_json(server, "/api/assets/motor-001")
    assert status == 200 and body["asset"]["alert_open"] is True
    assert [(a["kind"], a["signature"]) for a in body["actions"]] == [("ALERT", "valid")]
    _, body = get_json(server, "/api/assets/pump-000")
    assert body["predictions"]["window_end_ms"] == [T0]
    assert body["sensors"]["sensors"]["flow"]["mean"] == [0.5]
    status, body = get_json(server, "/api/assets/pump-999")
    assert status == 404 and "pump-999" in body["error"]


def test_quality_and_status(server):
    _, q = get_json(server, "/api/quality")
    assert q["dead_letters"] == 1 and q["samples"]["bad_magic"][0]["detail"] == "magic 7"
    _, s = get_json(server, "/api/status")
    assert (s["source"], s["assets"]) == ("test", 2) and s["rss_mb"] > 0


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("path", ["/api/assets", "/api/assets/pump-000", "/", "/static/x",
                                  "/api/whatif/pump-000"])
def test_nothing_writes(server, method, path):
    status, headers, _ = request(server, path, method, body=b"{}")
    assert status == 405 and headers["allow"] == "GET, HEAD"


def test_a_foreign_host_name_is_refused_on_loopback(server):
    """DNS rebinding: a page elsewhere whose name resolves to 127.0.0.1 gets nothing."""
    status, _, body = request(server, "/api/assets", headers={"Host": "evil.example:80"})
    assert status == 400 and b"loopback" in body
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "[::1]"):
        assert request(server, "/api/assets", headers={"Host": host})[0] == 200


def test_every_response_carries_the_security_headers(server):
    for path in ("/", "/api/assets", "/static/fleet.js", "/api/nothing"):
        _, headers, _ = request(server, path)
        assert "script-src 'self'" in headers["content-security-policy"], path
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert "server" not in headers


def test_pages_are_served():
    s = serve(fleet())
    try:
        for path, marker in (("/", b'data-page="fleet"'), ("/asset/pump-000",
                                                           b'data-page="asset"'),
                             ("/quality", b'data-page="quality"')):
            status, headers, body = request(s, path)
            assert status == 200 and marker in body and headers["content-type"].startswith(
                "text/html")
        assert request(s, "/login")[0] == 303  # no token: nothing to log in to
    finally:
        s.stop()


def test_with_a_token_every_request_needs_it():
    s = serve(fleet(), token=TOKEN)
    try:
        assert request(s, "/api/assets")[0] == 401
        assert request(s, "/api/assets", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert request(s, "/api/assets", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
        # a foreign Host is fine once a token guards the server (it is meant to be reached)
        assert request(s, "/api/assets", headers={"Authorization": f"Bearer {TOKEN}",
                                                  "Host": "twin.plant.example"})[0] == 200
        status, headers, _ = request(s, "/asset/pump-000?x=1")
        assert status == 303 and headers["location"] == "/login?next=/asset/pump-000?x=1"
        assert request(s, "/login")[0] == 200
        assert request(s, "/static/style.css")[0] == 200  # the login page needs its style
    finally:
        s.stop()


def test_login_sets_a_session_cookie_that_is_not_the_token():
    s = serve(fleet(), token=TOKEN)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    try:
        t = time.monotonic()
        status, headers, _ = request(s, "/login", "POST", form, b"token=nope&next=/quality")
        assert status == 303 and headers["location"].startswith("/login?failed=1")
        assert "set-cookie" not in headers and time.monotonic() - t >= 0.4
        status, headers, _ = request(s, "/login", "POST", form,
                                     f"token={TOKEN}&next=//evil.example/".encode())
        assert status == 303 and headers["location"] == "/"  # no open redirect
        cookie = headers["set-cookie"]
        assert TOKEN not in cookie and session_value(TOKEN) in cookie
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        value = cookie.split(";")[0]
        assert request(s, "/api/assets", headers={"Cookie": value})[0] == 200
        assert request(s, "/api/assets", headers={"Cookie": value[:-1] + "0"})[0] == 401
    finally:
        s.stop()


def test_off_loopback_without_a_token_is_refused():
    with pytest.raises(ValueError, match="needs a token"):
        ServeSettings(host="0.0.0.0")
    assert ServeSettings(host="0.0.0.0", token=TOKEN).token == TOKEN


def read_events(server: Server, path: str, want: int, timeout_s: float = 10.0) -> list[tuple]:
    """The first ``want`` events of an SSE stream as ``(event, data)``."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout_s)
    conn.request("GET", path)
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("content-type").startswith("text/event-stream")
    events, event, deadline = [], None, time.monotonic() + timeout_s
    try:
        while len(events) < want and time.monotonic() < deadline:
            line = r.fp.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:])))
    finally:
        conn.close()
    return events


def test_the_fleet_stream_pushes_only_the_rows_that_changed():
    view = fleet()
    s = serve(view)
    since = view.version

    def change():
        time.sleep(0.6)
        with view.lock:
            view.ingest(fv.STATE, state("pump-000", T0 + MIN, health=0.42))

    try:
        threading.Thread(target=change).start()
        (event, data), = read_events(s, f"/api/events?since={since}", 1)
        assert event == "fleet" and data["version"] == view.version
        assert [(r["asset_id"], r["health_index"]) for r in data["rows"]] == \
            [("pump-000", 0.42)]
        assert data["counts"]["assets"] == 2
    finally:
        s.stop()


def test_the_asset_stream_pushes_new_windows_and_actions():
    view = fleet()
    s = serve(view)
    with view.lock:
        cursor = view.asset_detail("pump-000")["cursor"]

    def change():
        time.sleep(0.6)
        with view.lock:
            view.ingest(fv.PREDICTION, prediction("pump-000", T0 + MIN, score=0.5))
            view.ingest(fv.ACTION, action("pump-000", T0 + MIN, "WORK_ORDER"),
                        signature="missing")

    try:
        threading.Thread(target=change).start()
        query = "&".join(f"{k}={v}" for k, v in cursor.items())
        events = read_events(s, f"/api/assets/pump-000/events?{query}", 1)
        (event, data), = events
        assert event == "asset" and data["reset"] is False
        got = data["predictions"]["window_end_ms"]
        if got == [T0 + MIN] and not data["actions"]:  # the two arrived in two pushes
            (_, more), = read_events(s, "/api/assets/pump-000/events?"
                                        + "&".join(f"{k}={v}" for k, v in
                                                   data["cursor"].items()), 1)
            data["actions"] = more["actions"]
        assert got == [T0 + MIN]
        assert [(a["kind"], a["signature"]) for a in data["actions"]] == \
            [("WORK_ORDER", "missing")]
    finally:
        s.stop()


# -- offline: everything the pages load is in the package ---------------------------------

def test_the_pages_load_nothing_from_elsewhere():
    files = sorted(static_dir().rglob("*"))
    ours = [p for p in files if p.is_file() and "vendor" not in p.parts]
    assert {p.name for p in ours} >= {"fleet.html", "asset.html", "quality.html",
                                      "login.html", "common.js", "fleet.js", "asset.js",
                                      "quality.js", "style.css"}
    remote = re.compile(r"""(?:src|href|action)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?"""
                        r"""(?:https?:)?//|fetch\(\s*["'`](?:https?:)?//|@import""", re.I)
    for p in ours:
        text = p.read_text()
        assert not remote.search(text), f"{p.name} loads something from elsewhere"
        assert "<script>" not in text and " style=" not in text, \
            f"{p.name}: inline scripts and styles are refused by the page's CSP"
    for p in ours:
        if p.suffix == ".html":
            for ref in re.findall(r"""(?:src|href)="(/static/[^"]+)""", p.read_text()):
                assert (static_dir() / ref.removeprefix("/static/")).is_file(), ref


def test_the_package_data_ships_the_static_files():
    """What setuptools puts in the wheel: the globs in pyproject.toml match every asset."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[3]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["pipelines"]
    base = root / "pipelines"
    for p in static_dir().rglob("*"):
        if p.is_file():
            rel = p.relative_to(base).as_posix()
            assert any(fnmatch.fnmatch(rel, g) and rel.count("/") == g.count("/")
                       for g in globs), f"{rel} is not in the package data"
