"""The dashboard in a real browser against a live broker.

The embedded broker is fed by ``twin simulate`` (a small fleet, paced) and the twin
(``twin run --source kafka``); ``twin dashboard`` reads the output topics; headless
Chromium (Debian's ``chromium`` package, driven by Playwright: its own browser download is
never used) loads each page. The numbers on screen are checked against what the topics
hold, new records published with the project's serde must show up without a reload, and
every page is photographed (``TWIN_SAVE_SCREENSHOTS=1`` also writes them to ``docs/img/``
for ``docs/dashboard.md``).

Without a browser these tests are skipped, saying why; ``.ci/run`` installs one and sets
``TWIN_BROWSER_REQUIRED=1``, and then a missing browser fails them instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Producer

from pipelines.kafka.broker import EmbeddedBroker, free_port
from pipelines.kafka.outputs import encode_output
from pipelines.kafka.serde import LocalSerde
from pipelines.kafka.topics import OUTPUT_TOPICS
from tests.pipelines.kafka.helpers import read_topic
from transforms.fleetview import epoch_ms
from transforms.signing import Signer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BROWSER = os.environ.get("TWIN_BROWSER", "/usr/bin/chromium")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]
ASSETS = 6
KEY = b"browser-test-signing-key"
TOPIC = {tag: topic for tag, (topic, _) in OUTPUT_TOPICS.items()}
SCHEMA = {tag: schema for tag, (_, schema) in OUTPUT_TOPICS.items()}


def _browser_or_skip():
    why = None
    if not (os.path.isfile(BROWSER) and os.access(BROWSER, os.X_OK)):
        why = (f"no Chromium at {BROWSER} (Debian's chromium package: `.ci/run` installs it "
               f"with apt-get, which is not available here)")
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            why = "the playwright package is not installed (pip install -e '.[dev]')"
    if why and os.environ.get("TWIN_BROWSER_REQUIRED"):
        pytest.fail(f"browser tests required but {why}")
    if why:
        pytest.skip(f"browser tests skipped: {why}")


def twin(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"twin {' '.join(args)}: {proc.stderr[-3000:]}"
    return proc


class Topics:
    """What the output topics hold, decoded: the expected values on screen."""

    def __init__(self, bootstrap: str) -> None:
        serde = LocalSerde()
        self.state, self.pred, self.actions, self.dead = {}, {}, {}, {}
        for m in read_topic(bootstrap, TOPIC["state"]):
            r = serde.decode(m.value())[1]
            if r["asset_id"] not in self.state or epoch_ms(r["ts_ms"]) >= epoch_ms(
                    self.state[r["asset_id"]]["ts_ms"]):
                self.state[r["asset_id"]] = r
        for m in read_topic(bootstrap, TOPIC["prediction"]):
            r = serde.decode(m.value())[1]
            if r["asset_id"] not in self.pred or epoch_ms(r["window_end_ms"]) >= epoch_ms(
                    self.pred[r["asset_id"]]["window_end_ms"]):
                self.pred[r["asset_id"]] = r
        for m in read_topic(bootstrap, TOPIC["action"]):
            r = serde.decode(m.value())[1]
            self.actions.setdefault(r["asset_id"], {})[r["action_id"]] = r
        for m in read_topic(bootstrap, TOPIC["dead_letter"]):
            r = serde.decode(m.value())[1]
            self.dead[r["reason"]] = self.dead.get(r["reason"], 0) + 1

    def latest(self, asset: str) -> dict:
        """Health and score of the newest window (prediction and state agree on it)."""
        p, s = self.pred.get(asset), self.state[asset]
        if p is not None and epoch_ms(p["window_end_ms"]) >= epoch_ms(s["ts_ms"]):
            return {"health": p["health_index"], "score": p["anomaly_score"]}
        return {"health": s["health_index"], "score": s["anomaly_score"]}


def publish(bootstrap: str, items: list[tuple[str, dict]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for tag, record in items:
        key, value, headers = encode_output(TOPIC[tag], SCHEMA[tag], record, LocalSerde(),
                                            Signer(KEY) if tag == "action" else None)
        p.produce(TOPIC[tag], key=key, value=value, headers=headers)
    assert p.flush(15) == 0


def get_json(url: str) -> dict:
    return json.loads(urllib.request.urlopen(url, timeout=10).read())


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A broker with the twin's outputs of a simulated fleet, and the dashboard on it."""
    _browser_or_skip()
    tmp = tmp_path_factory.mktemp("dashboard")
    key_file = tmp / "hmac.key"
    key_file.write_bytes(KEY)
    key_file.chmod(0o600)
    env = {**os.environ, "TWIN_STATE_DIR": str(tmp / "state"), "PYTHONUNBUFFERED": "1"}
    env.pop("TWIN_HMAC_KEY", None)
    env.pop("TWIN_BOOTSTRAP_SERVERS", None)
    broker = EmbeddedBroker(log_path=tmp / "broker.log").start()
    dashboard = None
    try:
        b = broker.bootstrap_servers
        twin("simulate", "--bootstrap-servers", b, "--assets", str(ASSETS), "--duration", "4h",
             "--rate", "20000", "--no-actions", "--malformed-rate", "0.01", env=env)
        twin("run", "--source", "kafka", "--bootstrap-servers", b, "--out", str(tmp / "run"),
             "--no-progress", "--hmac-key-file", str(key_file), env=env)
        port = free_port()
        dashboard = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "dashboard", "--bootstrap-servers", b,
             "--port", str(port), "--hmac-key-file", str(key_file), "--lookback", "all"],
            cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        base = f"http://127.0.0.1:{port}"
        assert base in dashboard.stdout.readline()
        topics = Topics(b)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            s = get_json(base + "/api/status")
            if s["assets"] == ASSETS and s["behind_messages"] == 0 and s["caught_up_ms"]:
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"the dashboard did not catch up with the topics: {s}")
        yield {"base": base, "bootstrap": b, "topics": topics, "tmp": tmp}
    finally:
        if dashboard is not None:
            dashboard.terminate()
            dashboard.wait(20)
        broker.stop()


@pytest.fixture(scope="module")
def browser(live):
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="twin-chromium-")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=BROWSER, headless=True, args=BROWSER_ARGS,
            viewport={"width": 1400, "height": 900})
        try:
            yield ctx
        finally:
            ctx.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser):
    pg = browser.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    pg.close()
    assert not errors, f"script errors on the page: {errors}"


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=20_000)


def screenshot(page, live, name: str) -> Path:
    path = live["tmp"] / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("TWIN_SAVE_SCREENSHOTS"):
        shutil.copy(path, ROOT / "docs" / "img" / path.name)
    assert path.stat().st_size > 10_000
    return path


def cell(page, asset: str, field: str) -> str:
    return page.inner_text(f".grow[data-asset='{asset}'] [data-field='{field}']").strip()


def test_fleet_page_shows_what_the_topics_hold(live, page):
    t = live["topics"]
    open_page(page, live["base"] + "/")
    assert page.inner_text("#n-assets") == str(ASSETS)
    assert page.locator("#fleet-rows .grow").count() == ASSETS
    for asset in t.state:
        want = t.latest(asset)
        assert cell(page, asset, "health_index") == f"{want['health']:.2f}", asset
        assert cell(page, asset, "anomaly_score") == f"{want['score']:.3f}", asset
        if not t.state[asset]["alert_open"]:
            assert cell(page, asset, "alert_severity") == "-"
        else:  # the severity and reason of the episode's ALERT
            alerts = [a for a in t.actions.get(asset, {}).values() if a["kind"] == "ALERT"]
            newest = max(alerts, key=lambda a: epoch_ms(a["ts_ms"]))
            assert cell(page, asset, "alert_severity") == \
                f"{newest['severity']} {newest['reason']}"
    assert any(s["alert_open"] for s in t.state.values()), "the fleet should have an alert"
    assert page.inner_text("#n-dead") == f"{sum(t.dead.values()):,}"
    assert int(page.inner_text("#n-alert")) == sum(s["alert_open"] for s in t.state.values())
    risks = [float(x) for x in page.locator("[data-field='risk']").all_inner_texts()]
    assert risks == sorted(risks, reverse=True)
    screenshot(page, live, "fleet")


def test_fleet_page_filters(live, page):
    open_page(page, live["base"] + "/")
    page.select_option("#f-type", "motor")
    page.wait_for_function("() => document.querySelectorAll('#fleet-rows .grow').length === 3")
    assert all(t == "motor" for t in page.locator("[data-field='asset_type']").all_inner_texts())


def test_asset_page_shows_its_state_actions_and_charts(live, page):
    t = live["topics"]
    asset = max(t.state, key=lambda a: len(t.actions.get(a, {})))
    open_page(page, f"{live['base']}/asset/{asset}")
    want = t.latest(asset)
    assert page.inner_text("#k-health") == f"{want['health']:.2f}"
    assert page.inner_text("#k-score") == f"{want['score']:.3f}"
    actions = t.actions.get(asset, {})
    rows = page.locator("#actions tbody tr")
    assert rows.count() == min(len(actions), 200)
    sigs = set(page.locator("#actions tbody tr td:last-child .sig-valid").all_inner_texts())
    assert sigs <= {"valid"} and (not actions or sigs == {"valid"})
    assert page.locator("#c-sensors .uplot").count() == 8
    assert page.locator("#c-score .uplot, #c-health .uplot").count() == 2
    # the what-if panel opens on the baseline of the twin's learned models
    page.wait_for_selector("#whatif[data-state='ready']", timeout=20_000)
    assert page.locator("#wi-charts .uplot").count() >= 4
    screenshot(page, live, "asset")


def whatif_json(live, asset: str, query: str = "") -> tuple[int, dict]:
    try:
        r = urllib.request.urlopen(f"{live['base']}/api/whatif/{asset}{query}", timeout=60)
        return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _rul(s: float | None) -> str:
    """As the page writes a remaining life (twin.dur in common.js)."""
    if s is None:
        return "none in sight"
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{s / n:.1f}{unit}"
    return f"{s:.0f}s"


def test_the_what_if_panel_runs_a_scenario(live, page):
    """Submit the form: the chart of baseline against scenario, the remaining life before
    and after and the extrapolation flag are what the API answers to the same question;
    the recommended setpoint is a dry run that reaches no topic."""
    answers = {a: whatif_json(live, a) for a in sorted(live["topics"].state)}
    able = [a for a, (status, _) in answers.items() if status == 200]
    assert able, f"no asset's twin carries its models yet: {answers}"
    for status, body in answers.values():  # the others say why, clearly
        assert status == 200 or (status == 409 and "learned models" in body["error"]), body
    asset = able[0]
    actions_before = len(read_topic(live["bootstrap"], TOPIC["action"]))
    open_page(page, f"{live['base']}/asset/{asset}")
    page.wait_for_selector("#whatif[data-state='ready']", timeout=20_000)
    page.select_option("#wi-sensor", "speed")
    page.fill("#wi-change", "-15%")
    page.fill("#wi-from", "+30m")
    page.fill("#wi-for", "3h")
    page.check("#wi-recommend")
    page.click("#wi-run")
    page.wait_for_selector("#whatif[data-state='done']", timeout=60_000)
    status, want = whatif_json(live, asset, "?set=speed%3D-15%25&from=%2B30m&for=3h"
                                            "&recommend=1")
    assert status == 200
    assert page.inner_text("#wi-scenario").startswith("what if speed=-15% from +30m for 3h")
    assert page.inner_text("#wi-rul-base") == _rul(want["baseline"]["rul_s"])
    assert page.inner_text("#wi-rul-scen") == _rul(want["scenario_path"]["rul_s"])
    extrap = want["scenario_path"]["extrapolating"]
    assert (page.inner_text("#wi-extrap") != "none") == extrap
    charts = page.locator("#wi-charts .wi-chart")
    names = [charts.nth(i).get_attribute("data-series") for i in range(charts.count())]
    assert names == ["speed", *[c for c in want["condition_sensors"] if c != "speed"],
                     "health index", "anomaly score"]
    assert page.locator("#wi-charts .uplot").count() == len(names)
    rec = want["recommendation"]
    assert page.inner_text("#wi-rec-text") == rec["text"]
    if rec["action"] is not None:
        assert "dry run: not sent" in page.inner_text("#wi-rec-action")
        assert page.inner_text("#wi-rec-command").endswith("--publish")
    # bad input: the reason, on the page
    page.fill("#wi-change", "fast")
    page.click("#wi-run")
    page.wait_for_selector("#whatif[data-state='error']", timeout=20_000)
    assert "speed: not a value: 'fast'" in page.inner_text("#whatif-error")
    # computing is all it did: nothing reached the actions topic
    assert len(read_topic(live["bootstrap"], TOPIC["action"])) == actions_before
    page.fill("#wi-change", "-15%")
    page.uncheck("#wi-recommend")
    page.click("#wi-run")
    page.wait_for_selector("#whatif[data-state='done']", timeout=60_000)
    path = live["tmp"] / "dashboard-whatif.png"
    page.locator("#whatif").screenshot(path=str(path))
    if os.environ.get("TWIN_SAVE_SCREENSHOTS"):
        shutil.copy(path, ROOT / "docs" / "img" / path.name)
    assert path.stat().st_size > 10_000


def test_quality_page_counts_dead_letters_by_reason(live, page):
    t = live["topics"]
    open_page(page, live["base"] + "/quality")
    shown = {r.get_attribute("data-reason"): int(r.locator("td").nth(1).inner_text())
             for r in page.locator("#by-reason tbody tr").all()}
    assert shown == t.dead and sum(shown.values()) > 0
    assert page.inner_text("#q-late") == "n/a"  # the topics carry no late readings
    assert page.locator("#sample-list .sample").count() >= 1
    screenshot(page, live, "quality")


def newest_window(live, asset: str) -> int:
    return get_json(f"{live['base']}/api/assets/{asset}")["asset"]["window_end_ms"]


def test_the_fleet_page_updates_without_a_reload(live, page):
    open_page(page, live["base"] + "/")
    page.evaluate("window.__noReload = 'still here'")
    asset = sorted(live["topics"].state)[0]
    end = newest_window(live, asset) + 60_000
    base_state = dict(live["topics"].state[asset], ts_ms=end, health_index=0.123,
                      anomaly_score=0.987, alert_open=False)
    publish(live["bootstrap"], [("state", base_state)])
    page.wait_for_function(
        f"() => document.querySelector(\".grow[data-asset='{asset}'] [data-field='health_index']\")"
        f"?.textContent === '0.12'", timeout=15_000)
    assert cell(page, asset, "anomaly_score") == "0.987"
    assert page.evaluate("window.__noReload") == "still here"
    assert page.evaluate("window.twinStats.updates") >= 1


def test_the_asset_page_updates_without_a_reload(live, page):
    asset = sorted(live["topics"].state)[-1]
    open_page(page, f"{live['base']}/asset/{asset}")
    page.evaluate("window.__noReload = 'still here'")
    before = page.locator("#actions tbody tr").count()
    end = newest_window(live, asset) + 60_000
    publish(live["bootstrap"], [("action", {
        "action_id": f"{asset}:{end}:ALERT", "asset_id": asset, "kind": "ALERT",
        "ts_ms": end, "severity": "critical", "reason": "browser test alert",
        "anomaly_score": 0.999, "health_index": 0.3, "rul_s": 7200.0})])
    page.wait_for_function(f"() => document.querySelectorAll('#actions tbody tr').length === "
                           f"{before + 1}", timeout=15_000)
    first = page.locator("#actions tbody tr").first
    assert "browser test alert" in first.inner_text()
    assert first.locator(".sig-valid").inner_text() == "valid"
    assert page.inner_text("#k-alert") == "critical"
    assert page.evaluate("window.__noReload") == "still here"


def test_the_quality_page_updates_without_a_reload(live, page):
    open_page(page, live["base"] + "/quality")
    page.evaluate("window.__noReload = 'still here'")
    before = int(page.inner_text("#q-dead").replace(",", ""))
    publish(live["bootstrap"], [("dead_letter", {
        "stage": "normalize", "reason": "no_good_values", "detail": "browser test",
        "source": "twin.raw.helios", "key": b"pump-000", "payload": b"xyz",
        "ts_ms": int(time.time() * 1000)})])
    page.wait_for_function(f"() => document.getElementById('q-dead').textContent === "
                           f"'{before + 1:,}'", timeout=15_000)
    assert page.locator("#by-reason tr[data-reason='no_good_values']").count() == 1
    assert page.evaluate("window.__noReload") == "still here"
