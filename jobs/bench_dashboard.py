"""``twin bench dashboard``: the fleet page with a large fleet, measured in a real browser.

On a fresh embedded broker, ``--assets`` simulated assets (the simulator's ids and types,
seeded values) get ``--windows`` windows each of twin state and predictions, with a few
actions (signed) and dead letters: the backlog a dashboard opened on a running plant
finds. Then:

1. ``twin dashboard`` starts in a child process on the empty topics (its memory then is
   the baseline: the ``twin`` CLI's imports), then the backlog is published; **ingest**
   is the time from the first record published until the dashboard has every one;
2. headless Chromium (Debian's, through Playwright) opens the fleet page ``--renders``
   times; **render** is the time from navigation start until the whole table is drawn
   (fetching every asset included);
3. with the page open, state and prediction updates for random assets are published at
   ``--rate`` updates per second for ``--seconds``; the page counts the rows it applied
   and how far behind the topics each was (now minus the record's Kafka timestamp), and
   how long each redraw took (re-sort of the whole fleet, then the rows in view);
4. **server memory**: the dashboard process's resident and peak memory at the end.

Needs the browser the tests use (``/usr/bin/chromium``, or ``$TWIN_BROWSER``) and the
``playwright`` package.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BROWSER = os.environ.get("TWIN_BROWSER", "/usr/bin/chromium")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]
KEY = b"bench-dashboard-signing-key"
MIN = 60_000


class BenchDashboardError(RuntimeError):
    pass


def add_arguments(p) -> None:
    from jobs.options import positive_float, positive_int

    p.add_argument("--assets", type=positive_int, default=10_000,
                   help="fleet size (default 10000)")
    p.add_argument("--windows", type=positive_int, default=3,
                   help="windows of state and predictions per asset in the backlog (default 3)")
    p.add_argument("--rate", type=positive_float, default=1000.0,
                   help="asset updates per second while the page is open (default 1000; a "
                        "fleet of 10,000 on 60 s windows makes about 170)")
    p.add_argument("--seconds", type=positive_float, default=15.0,
                   help="how long updates are published (default 15)")
    p.add_argument("--renders", type=positive_int, default=3,
                   help="times the fleet page is opened (default 3)")
    p.add_argument("--out", type=Path, default=Path("out") / "bench-dashboard",
                   help="work folder (default out/bench-dashboard)")


def _records(asset: str, asset_type: str, end_ms: int, rng: random.Random,
             health: float) -> list[tuple[str, dict[str, Any]]]:
    score = min(1.0, max(0.0, rng.betavariate(1.2, 6.0)))
    values = {"speed": 150 + rng.gauss(0, 1), "bearing_temp": 320 + rng.gauss(0, 2),
              "vibration": 0.003 + rng.gauss(0, 1e-4)}
    state = {"asset_id": asset, "asset_type": asset_type, "ts_ms": end_ms, "values": values,
             "health_index": health, "anomaly_score": score, "alert_open": False,
             "setpoints": {"speed": 150.0}, "windows_seen": 100, "drift_events": 0,
             "last_drift_ms": None}
    pred = {"prediction_id": f"{asset}:{end_ms}:prediction", "asset_id": asset,
            "asset_type": asset_type, "window_start_ms": end_ms - MIN, "window_end_ms": end_ms,
            "anomaly_score": score, "is_anomaly": score > 0.99, "warming_up": False,
            "drift": False, "drift_sensors": [], "contributors": [], "health_index": health,
            "forecast_health": max(0.0, health - 0.01), "forecast_horizon_s": 3600,
            "rul_s": None if health > 0.8 else health * 86400.0, "alarm": False}
    return [("state", state), ("prediction", pred)]


class Publisher:
    """The twin's output records, encoded and signed as the twin's sinks do."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import Producer

        from pipelines.kafka.config import with_logger
        from pipelines.kafka.serde import LocalSerde
        from pipelines.kafka.topics import OUTPUT_TOPICS
        from transforms.signing import Signer

        self.producer = Producer(with_logger({"bootstrap.servers": bootstrap, "linger.ms": 5,
                                              "queue.buffering.max.messages": 1_000_000}))
        self.serde, self.signer = LocalSerde(), Signer(KEY)
        self.topics = OUTPUT_TOPICS
        self.sent = 0

    def send(self, tag: str, record: dict[str, Any]) -> None:
        from pipelines.kafka.outputs import encode_output

        topic, schema = self.topics[tag]
        key, value, headers = encode_output(topic, schema, record, self.serde,
                                            self.signer if tag == "action" else None)
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, headers=headers)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.sent += 1
        if self.sent % 2000 == 0:
            self.producer.poll(0)

    def flush(self) -> None:
        if self.producer.flush(60) != 0:
            raise BenchDashboardError("the broker did not take every record")


def publish_backlog(pub: Publisher, assets: list[tuple[str, str]], windows: int,
                    end_ms: int, seed: int = 11) -> int:
    rng = random.Random(seed)
    for w in range(windows):
        for i, (asset, asset_type) in enumerate(assets):
            health = 1.0 - (0.6 * rng.random() if i % 17 == 0 else 0.02 * rng.random())
            for tag, rec in _records(asset, asset_type, end_ms - (windows - 1 - w) * MIN, rng,
                                     health):
                pub.send(tag, rec)
    for i, (asset, _) in enumerate(assets[::50]):  # an open alert on every 50th asset
        pub.send("action", {"action_id": f"{asset}:{end_ms}:ALERT", "asset_id": asset,
                            "kind": "ALERT", "ts_ms": end_ms,
                            "severity": "critical" if i % 3 == 0 else "warning",
                            "reason": "3 abnormal windows in a row", "anomaly_score": 0.999,
                            "health_index": 0.5, "rul_s": None})
    for i in range(200):
        pub.send("dead_letter", {"stage": "decode", "reason": ("bad_magic", "unknown_tag",
                                                               "out_of_range")[i % 3],
                                 "detail": "bench", "source": f"twin.raw.orca/0@{i}",
                                 "key": None, "payload": b"\x07" * 64,
                                 "ts_ms": end_ms})
    pub.flush()
    return pub.sent


def _get(url: str) -> tuple[dict[str, Any], int, float]:
    t = time.perf_counter()
    body = urllib.request.urlopen(url, timeout=60).read()
    return json.loads(body), len(body), time.perf_counter() - t


def _memory_kb(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return out


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 1)


def run(assets: int, windows: int, rate: float, seconds: float, renders: int,
        out: Path) -> dict[str, Any]:
    if not (os.path.isfile(BROWSER) and os.access(BROWSER, os.X_OK)):
        raise BenchDashboardError(f"no Chromium at {BROWSER}: apt-get install chromium (or "
                                  f"set $TWIN_BROWSER)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise BenchDashboardError("the playwright package is missing: pip install -e "
                                  "'.[dev]'") from exc
    from pipelines.kafka.broker import EmbeddedBroker, free_port
    from pipelines.kafka.topics import OUTPUT_TOPICS, ensure_topics
    from transforms.simulator.scenario import FleetConfig, asset_specs

    out.mkdir(parents=True, exist_ok=True)
    specs = [(s.asset_id, s.asset_type) for s in asset_specs(FleetConfig(assets=assets))]
    key_file = out / "hmac.key"
    key_file.write_bytes(KEY)
    key_file.chmod(0o600)
    report: dict[str, Any] = {"assets": assets, "windows": windows}
    broker = EmbeddedBroker(log_path=out / "broker.log").start()
    server = None
    try:
        b = broker.bootstrap_servers
        ensure_topics({"bootstrap.servers": b}, [t for t, _ in OUTPUT_TOPICS.values()])
        end_ms = (int(time.time() * 1000) // MIN) * MIN - 10 * MIN
        port = free_port()
        env = {**os.environ, "TWIN_STATE_DIR": str(out / "state")}
        server = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "dashboard", "--bootstrap-servers", b,
             "--port", str(port), "--lookback", "all", "--hmac-key-file", str(key_file)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        base = f"http://127.0.0.1:{port}"
        if base not in (server.stdout.readline() or ""):
            raise BenchDashboardError(f"the dashboard did not start: {server.stderr.read()}")
        time.sleep(2.0)
        report["server_rss_empty_mb"] = round(_memory_kb(server.pid).get("VmRSS", 0) / 1024, 1)
        # the backlog arrives while the dashboard reads: ingest ends when it has it all
        pub = Publisher(b)
        t = time.perf_counter()
        report["backlog_records"] = publish_backlog(pub, specs, windows, end_ms)
        report["publish_s"] = round(time.perf_counter() - t, 2)
        deadline = time.monotonic() + 600
        while True:
            status = _get(base + "/api/status")[0]
            if status["records"] >= report["backlog_records"]:
                break
            if time.monotonic() > deadline:
                raise BenchDashboardError(f"the dashboard did not catch up: {status}")
            time.sleep(0.1)
        report["ingest_s"] = round(time.perf_counter() - t, 2)
        report["ingest_records_per_s"] = round(report["backlog_records"] / report["ingest_s"])
        body, size, took = _get(base + "/api/assets")
        assert body["count"] == assets, body["count"]
        report["api_assets"] = {"ms": round(took * 1000, 1), "bytes": size}
        fields = ("asset_id,asset_type,site,status,risk,health_index,anomaly_score,alert_open,"
                  "alert_severity,alert_reason,drift,drift_events,last_drift_ms,rul_s,"
                  "forecast_health,forecast_horizon_s,last_seen_ms,received_ms")
        _, size, took = _get(f"{base}/api/assets?fields={fields}")
        report["api_fleet_fields"] = {"ms": round(took * 1000, 1), "bytes": size}

        profile = tempfile.mkdtemp(prefix="twin-bench-chromium-")
        try:
            with sync_playwright() as p:
                ctx = p.chromium.launch_persistent_context(
                    profile, executable_path=BROWSER, headless=True, args=BROWSER_ARGS,
                    viewport={"width": 1400, "height": 900})
                try:
                    report.update(_browser_part(ctx, base, pub, specs, rate, seconds,
                                                renders, end_ms, assets))
                finally:
                    ctx.close()
        finally:
            shutil.rmtree(profile, ignore_errors=True)
        mem = _memory_kb(server.pid)
        report["server_rss_mb"] = round(mem.get("VmRSS", 0) / 1024, 1)
        report["server_peak_rss_mb"] = round(mem.get("VmHWM", 0) / 1024, 1)
        report["server_records"] = _get(base + "/api/status")[0]["records"]
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
        broker.stop()
    return report


def _browser_part(ctx, base: str, pub: Publisher, specs, rate: float, seconds: float,
                  renders: int, end_ms: int, assets: int) -> dict[str, Any]:
    times = []
    page = None
    for _ in range(renders):
        if page is not None:
            page.close()
        page = ctx.new_page()
        page.goto(base + "/")
        page.wait_for_selector("body[data-ready='1']", timeout=120_000)
        times.append(page.evaluate("window.twinStats.firstRenderMs"))
        shown = page.inner_text("#n-assets").replace(",", "")
        if int(shown) != assets:
            raise BenchDashboardError(f"the page shows {shown} assets, not {assets}")
    out: dict[str, Any] = {"render_ms": {"median": round(statistics.median(times), 1),
                                         "max": round(max(times), 1),
                                         "runs": [round(x, 1) for x in times]}}
    page.wait_for_timeout(1500)  # the stream is open
    before = page.evaluate("({u: window.twinStats.updates, l: window.twinStats.lagsMs.length,"
                           " p: (window.twinStats.paintMs || []).length})")
    rng = random.Random(5)
    stop = threading.Event()
    published = [0]

    def produce() -> None:
        step, t0 = 0.05, time.monotonic()
        window = end_ms + MIN
        while not stop.is_set():
            due = int((time.monotonic() - t0) * rate) - published[0]
            for _ in range(max(0, due)):
                asset, asset_type = specs[rng.randrange(len(specs))]
                for tag, rec in _records(asset, asset_type, window + published[0], rng,
                                         1.0 - 0.3 * rng.random()):
                    pub.send(tag, rec)
                published[0] += 1
            pub.producer.poll(0)
            time.sleep(step)
        pub.flush()

    thread = threading.Thread(target=produce)
    t = time.monotonic()
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join()
    elapsed = time.monotonic() - t
    page.wait_for_timeout(3000)  # what is still on its way
    after = page.evaluate("({u: window.twinStats.updates, lags: window.twinStats.lagsMs,"
                          " paints: window.twinStats.paintMs || []})")
    lags = after["lags"][before["l"]:]
    paints = after["paints"][before["p"]:]
    applied = after["u"] - before["u"]
    out.update({
        "updates_published": published[0],
        "updates_published_per_s": round(published[0] / elapsed, 1),
        "rows_applied": applied,
        "rows_applied_per_s": round(applied / elapsed, 1),
        "lag_ms": {"p50": _pct(lags, 0.5), "p95": _pct(lags, 0.95),
                   "max": round(max(lags), 1) if lags else None},
        "redraw_ms": {"p50": _pct(paints, 0.5), "p95": _pct(paints, 0.95),
                      "count": len(paints)},
    })
    page.close()
    return out


def print_report(r: dict[str, Any]) -> None:
    from rich.console import Console

    c = Console(highlight=False)
    c.print(f"[bold]dashboard, {r['assets']:,} assets[/bold] ({r['backlog_records']:,} records "
            f"in the backlog)")
    c.print(f"  ingest        {r['ingest_s']} s ({r['ingest_records_per_s']:,} records/s)")
    c.print(f"  fleet page    renders in {r['render_ms']['median']:,.0f} ms (median of "
            f"{len(r['render_ms']['runs'])}, max {r['render_ms']['max']:,.0f} ms); its "
            f"/api/assets {r['api_fleet_fields']['ms']:.0f} ms, "
            f"{r['api_fleet_fields']['bytes'] / 1e6:.1f} MB (every field: "
            f"{r['api_assets']['ms']:.0f} ms, {r['api_assets']['bytes'] / 1e6:.1f} MB)")
    c.print(f"  updates       {r['updates_published_per_s']:,} published/s, "
            f"{r['rows_applied_per_s']:,} rows applied/s on the page; behind the topics "
            f"p50 {r['lag_ms']['p50']} ms, p95 {r['lag_ms']['p95']} ms; redraw p50 "
            f"{r['redraw_ms']['p50']} ms, p95 {r['redraw_ms']['p95']} ms")
    c.print(f"  server memory {r['server_rss_mb']} MB resident, peak {r['server_peak_rss_mb']} MB "
            f"({r['server_rss_empty_mb']} MB before any record)")
