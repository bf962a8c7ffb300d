"""The dashboard's what-if endpoint on a real server on a free loopback port: the answer is
the library's on the same state records (as ``twin whatif`` reads them), bad scenarios are
400s that say why, an asset without learned models gets a clear message, a recommended
setpoint is a dry run that is never published."""

from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import quote

import pytest

from pipelines.dashboard import app as dashboard_app
from pipelines.dashboard import whatif as panel
from tests.jobs.test_whatif import _twin
from tests.pipelines.dashboard.test_app import StaticFeed, get_json, request
from tests.transforms.test_fleetview import T0, state
from transforms import fleetview as fv
from transforms.whatif import from_states, whatif
from transforms.whatif.scenario import ScenarioError

WINDOWS = 155  # the twin writes its models every 10 windows: 5 state records come after


def get_slow(server, path: str) -> tuple[int, dict]:
    """A recommendation takes seconds (more on a busy machine): a patient client."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=180)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


class FolderLikeFeed(StaticFeed):
    def optimize_source(self) -> list[str]:
        return ["/data/run folder"]


def _view(fault_from: int | None) -> tuple[fv.FleetView, list[dict]]:
    _, states = _twin(WINDOWS, fault_from)
    v = fv.FleetView()
    for r in states:
        v.ingest(fv.STATE, r)
    v.ingest(fv.STATE, state("pump-000", T0, health=0.9))  # a twin without models
    return v, states


@pytest.fixture(scope="module")
def faulty():
    from pipelines.dashboard.server import Server, ServeSettings
    from pipelines.kafka.broker import free_port

    view, states = _view(fault_from=90)
    s = Server(FolderLikeFeed(view), ServeSettings(port=free_port())).start()
    yield s, states
    s.stop()


@pytest.fixture(scope="module")
def healthy():
    from pipelines.dashboard.server import Server, ServeSettings
    from pipelines.kafka.broker import free_port

    view, states = _view(fault_from=None)
    s = Server(FolderLikeFeed(view), ServeSettings(port=free_port())).start()
    yield s, states
    s.stop()


def test_the_answer_is_the_library_s_on_the_same_state_records(faulty):
    server, states = faulty
    status, body = get_json(server, "/api/whatif/p1?set=speed%3D-5%25&from=%2B10m&for=1h"
                                    "&horizon=3h")
    assert status == 200 and body["available"] is True
    # what twin whatif computes from the run folder's records (from_states)
    want = whatif(from_states(states)["p1"], {"steps": [{"set": {"speed": "-5%"},
                                                         "from": "+10m", "for": "1h"}],
                                              "horizon": "3h"})
    for key in want:
        assert body[key] == want[key], key
    assert body["scenario"]["text"] == "speed=-5% from +10m for 1h"
    assert body["horizon_s"] == 3 * 3600 and body["times_s"][-1] == 3 * 3600
    assert body["fault"] is not None  # the fault developing from window 90
    assert body["model"] == {"as_of_ms": states[-1]["ts_ms"], "replayed_windows": 5,
                             "windows_seen": WINDOWS}
    assert body["settable"]["speed"]["unit"] == "radian / second"
    assert body["settable"]["speed"]["value"] == states[-1]["values"]["speed"]
    assert "vibration" not in body["settable"]  # a condition sensor is predicted, not set
    assert "recommendation" not in body


def test_without_a_scenario_the_baseline(faulty):
    server, states = faulty
    status, body = get_json(server, "/api/whatif/p1")
    assert status == 200 and body["scenario"]["steps"] == []
    assert body["scenario_path"]["rul_s"] == body["baseline"]["rul_s"]
    assert body["horizon_s"] == 6 * 3600


@pytest.mark.parametrize("query, reason", [
    ("set=bogus%3D1", "'bogus' is not a sensor a scenario can set for a pump"),
    ("set=vibration%3D-10%25", "'vibration' is not a sensor a scenario can set"),
    ("set=speed%3Dabc", "speed: not a value: 'abc'"),
    ("set=speed%3D10%25", "a percentage is a change, give its sign"),
    ("set=speed", "set wants SENSOR=VALUE"),
    ("set=speed%3D1%26set%3Dspeed%3D2", "unknown unit '&set=speed=2'"),
    ("set=speed%3D-5%25&set=speed%3D-6%25", "set speed given twice"),
    ("from=%2B10m", "from and for need at least one set SENSOR=VALUE"),
    ("set=speed%3D-5%25&from=soon", "from: not a duration: 'soon'"),
    ("set=speed%3D-5%25&horizon=3d", "horizon: at most 48h here"),
    ("set=speed%3D-5%25&from=2h&horizon=1h", "at or after"),
    ("sett=speed%3D-5%25", "unknown parameter(s) sett"),
    ("from=1h&from=2h&set=speed%3D-5%25", "from given more than once"),
    ("maximize=flow", "maximize only mean something with recommend=1"),
    ("recommend=maybe", "recommend is 1 or 0, not 'maybe'"),
    ("recommend=1&limit=bearing_temp%3E363", "limit wants SENSOR<=VALUE"),
    ("recommend=1&min_rul=2h&until=2030-01-01T00:00Z", "min_rul or until, not both"),
    ("recommend=1&until=2030-01-01T00:00", "until needs a time zone"),
])
def test_a_bad_scenario_is_a_400_that_says_why(faulty, query, reason):
    server, _ = faulty
    status, body = get_json(server, "/api/whatif/p1?" + query)
    assert status == 400, body
    assert reason in body["error"], body["error"]


def test_a_plus_decoded_as_a_space_is_explained(faulty):
    server, _ = faulty
    status, body = get_json(server, "/api/whatif/p1?set=speed=+5%25")
    assert status == 400
    assert "give its sign" in body["error"] and "write it as %2B" in body["error"]
    # written as %2B it is the change it meant
    status, body = get_json(server, "/api/whatif/p1?set=speed=%2B5%25")
    assert status == 200 and body["scenario"]["steps"][0]["set"]["speed"]["value"] == 0.05


def test_an_asset_without_learned_models_gets_a_clear_message(faulty):
    server, _ = faulty
    status, body = get_json(server, "/api/whatif/pump-000?set=speed%3D-5%25")
    assert status == 409 and body["available"] is False
    assert "pump-000: no state record has carried its learned models yet" in body["error"]
    status, body = get_json(server, "/api/whatif/pump-999")
    assert status == 404 and "no asset 'pump-999'" in body["error"]


def test_a_recommended_setpoint_is_a_dry_run_never_published(healthy):
    server, states = healthy
    status, body = get_slow(server, "/api/whatif/p1?recommend=1&allow_extrapolation=1"
                                    "&min_rul=1h")
    assert status == 200
    rec = body["recommendation"]
    assert rec["feasible"] is True and rec["fraction"] == 1.05
    a = rec["action"]
    assert (a["kind"], a["setpoint_name"], a["dry_run"]) == ("SETPOINT", "speed", True)
    assert a["setpoint_value"] == pytest.approx(1.05 * rec["nominal"])
    assert rec["published"] is False and rec["refused"] is None
    # what a person would run to send it, signed (still a dry run without --apply)
    assert rec["command"] == ("twin optimize '/data/run folder' --asset p1 --min-rul 1h "
                              "--horizon 6h --allow-extrapolation --publish")


def test_a_recommendation_the_guardrails_refuse_is_shown_refused(healthy, monkeypatch):
    from transforms.whatif import optimize

    def refuse(doc, frac, at_s=0.0):
        raise optimize.GuardrailError("the rate limit is one change per 600 s")

    monkeypatch.setattr(optimize, "check_guardrails", refuse)
    ask = panel.parse_query([("recommend", "1"), ("allow_extrapolation", "1")])
    server, _ = healthy
    view = server.dashboard.view
    learned, later = view.whatif_sources("p1")
    rec = panel.compute("p1", learned, later, ask, ["run"])["recommendation"]
    assert rec["action"] is None and rec["command"] is None
    assert rec["refused"] == "guardrails: the rate limit is one change per 600 s"


def test_a_sensor_the_asset_lacks_fails_the_recommendation_not_the_what_if(faulty):
    server, _ = faulty
    status, body = get_slow(server, "/api/whatif/p1?set=speed%3D-5%25&recommend=1"
                                    "&maximize=torque")
    assert status == 200 and body["scenario"]["text"] == "speed=-5% from +0h"
    rec = body["recommendation"]
    assert rec["error"] == "p1 is a pump: it has no sensor 'torque'"
    assert rec["action"] is None and rec["published"] is False


def test_the_optimize_command_names_the_question():
    ask = panel.parse_query([("recommend", "1"), ("maximize", "flow"),
                             ("limit", "bearing_temp<=363"), ("until", "2030-01-01T06:00Z"),
                             ("horizon", "90m")])
    assert panel.optimize_command(["--source", "kafka", "--bootstrap-servers", "b:9092"],
                                  "pump-001", ask) == (
        "twin optimize --source kafka --bootstrap-servers b:9092 --asset pump-001 "
        "--maximize flow --limit 'bearing_temp<=363' --until 2030-01-01T06:00Z "
        "--horizon 90m --publish")
    assert panel.optimize_command(None, "pump-001", ask) is None
    with pytest.raises(ScenarioError, match="min_rul: not a duration"):
        panel.parse_query([("recommend", "1"), ("min_rul", "later")])


def test_answers_are_cached_per_state_and_question(faulty, monkeypatch):
    server, _ = faulty
    calls = []
    real = panel.compute

    def counting(*args):
        calls.append(args[3].key)
        return real(*args)

    monkeypatch.setattr(panel, "compute", counting)
    q = "/api/whatif/p1?set=speed%3D-7%25&horizon=2h"
    first = get_json(server, q)
    again = get_json(server, q)
    assert first == again and first[0] == 200 and len(calls) == 1
    assert get_json(server, q + "&from=1m")[0] == 200 and len(calls) == 2


def test_a_busy_what_if_answers_503_rather_than_queueing_for_ever(faulty, monkeypatch):
    server, _ = faulty
    started, release = threading.Event(), threading.Event()
    real = panel.compute

    def slow(*args):
        started.set()
        release.wait(20)
        return real(*args)

    monkeypatch.setattr(panel, "compute", slow)
    monkeypatch.setattr(dashboard_app, "WHATIF_QUEUE", 1)
    first: list = []
    t = threading.Thread(target=lambda: first.append(
        get_json(server, "/api/whatif/p1?set=speed%3D-3%25")))
    t.start()
    try:
        assert started.wait(20)
        status, body = get_json(server, "/api/whatif/p1?set=speed%3D-4%25")
        assert status == 503 and "busy" in body["error"]
    finally:
        release.set()
        t.join(30)
    assert first[0][0] == 200
    monkeypatch.setattr(dashboard_app, "WHATIF_QUEUE", 8)
    assert get_json(server, "/api/whatif/p1?set=speed%3D-4%25")[0] == 200


def test_at_most_two_what_ifs_compute_at_once(faulty, monkeypatch):
    server, _ = faulty
    lock = threading.Lock()
    running, peak = [0], [0]
    real = panel.compute

    def counted(*args):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.3)
            return real(*args)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(panel, "compute", counted)
    answers: list = []
    threads = [threading.Thread(target=lambda k=k: answers.append(
        get_json(server, f"/api/whatif/p1?set=speed%3D-{k}%25&horizon=1h")[0]))
        for k in range(1, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert answers == [200] * 5 and peak[0] == dashboard_app.WHATIF_SLOTS == 2


def test_the_what_if_only_reads(faulty):
    server, _ = faulty
    for method in ("POST", "PUT", "DELETE"):
        status, headers, _ = request(server, "/api/whatif/p1?recommend=1", method, body=b"{}")
        assert status == 405 and headers["allow"] == "GET, HEAD"


def test_the_what_if_needs_the_token_when_one_is_set():
    from pipelines.dashboard.server import Server, ServeSettings
    from pipelines.kafka.broker import free_port

    view, _ = _view(fault_from=None)
    s = Server(StaticFeed(view), ServeSettings(port=free_port(), token="t" * 24)).start()
    try:
        status, body = get_json(s, "/api/whatif/p1")
        assert status == 401 and "token" in body["error"]
        status, body = get_json(s, "/api/whatif/p1?set=" + quote("speed=-5%"),
                                headers={"Authorization": "Bearer " + "t" * 24})
        assert status == 200 and body["asset_id"] == "p1"
    finally:
        s.stop()
