"""The fleet view: latest state per asset, risk order, histories, deltas, data quality."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import pytest

from transforms import fleetview as fv
from transforms.fleetview import FleetView, ForecastInterval, Ring, risk

T0 = 1_795_800_000_000
MIN = 60_000


def state(asset: str, ms: int, health: float = 1.0, score: float = 0.1, alert: bool = False,
          values: dict | None = None, **extra) -> dict:
    return {"asset_id": asset, "asset_type": "pump" if asset.startswith("pump") else "motor",
            "ts_ms": ms, "values": values or {"flow": 0.5, "speed": 150.0},
            "health_index": health, "anomaly_score": score, "alert_open": alert,
            "setpoints": {}, "windows_seen": 7, **extra}


def prediction(asset: str, ms: int, health: float = 1.0, score: float = 0.1, **extra) -> dict:
    return {"prediction_id": f"{asset}:{ms}:prediction", "asset_id": asset,
            "asset_type": "pump" if asset.startswith("pump") else "motor",
            "window_start_ms": ms - MIN, "window_end_ms": ms, "anomaly_score": score,
            "is_anomaly": score > 0.99, "warming_up": False, "drift": False,
            "drift_sensors": [], "contributors": [], "health_index": health,
            "forecast_health": health, "forecast_horizon_s": 3600, "rul_s": None,
            "alarm": False, **extra}


def action(asset: str, ms: int, kind: str, severity: str = "warning", **extra) -> dict:
    return {"action_id": f"{asset}:{ms}:{kind}", "asset_id": asset, "kind": kind,
            "ts_ms": ms, "severity": severity, "reason": f"{kind.lower()} reason",
            "anomaly_score": 0.99, "health_index": 0.5, "rul_s": None,
            "setpoint_name": None, "setpoint_value": None, "setpoint_previous": None,
            "dry_run": False, **extra}


def test_the_latest_state_per_asset_wins_whatever_order_it_arrives_in():
    v = FleetView()
    v.ingest(fv.STATE, state("pump-000", T0 + 2 * MIN, health=0.7))
    v.ingest(fv.STATE, state("pump-000", T0 + MIN, health=0.9))  # older, arrives late
    row = v.rows()[0]
    assert (row["health_index"], row["window_end_ms"]) == (0.7, T0 + 2 * MIN)
    assert row["last_seen_ms"] == T0 + 2 * MIN


def test_timestamps_as_datetimes_and_as_ms_are_the_same():
    v = FleetView()
    v.ingest(fv.STATE, state("pump-000", datetime.fromtimestamp((T0 + MIN) / 1000, UTC)))
    assert v.rows()[0]["window_end_ms"] == T0 + MIN


def test_risk_orders_alerts_by_severity_then_the_worst_sign():
    v = FleetView()
    v.ingest(fv.STATE, state("pump-000", T0, health=0.99, score=0.2))
    v.ingest(fv.STATE, state("pump-002", T0, health=0.4, score=0.2))  # lost health
    v.ingest(fv.PREDICTION, prediction("motor-001", T0, health=0.95, score=0.3,
                                       rul_s=3 * 3600.0))  # dies in 3 h
    v.ingest(fv.STATE, state("motor-003", T0, health=0.9, score=0.5, alert=True))
    v.ingest(fv.ACTION, action("motor-005", T0, "ALERT", severity="critical"))
    v.ingest(fv.STATE, state("motor-005", T0, health=0.9, score=0.5, alert=True))
    order = [(r["asset_id"], r["risk"]) for r in v.rows()]
    assert order == [("motor-005", 2.5), ("motor-003", 1.5), ("motor-001", 0.875),
                     ("pump-002", 0.6), ("pump-000", 0.2)]


def test_risk_ties_are_broken_by_asset_id():
    v = FleetView()
    for a in ("pump-004", "pump-000", "pump-002"):
        v.ingest(fv.STATE, state(a, T0))
    assert [r["asset_id"] for r in v.rows()] == ["pump-000", "pump-002", "pump-004"]


def test_risk_bounds():
    assert risk(None, None, None, None) == 0.0
    assert risk(1.2, -0.5, -10.0, None) == 1.0  # a past-due RUL is full urgency
    assert risk(1.0, 0.0, 2 * 86400.0, "info") == 1.0  # an open alert of any severity ranks


def test_filters_by_type_site_and_status():
    v = FleetView(asset_info={"pump-000": {"site": "north"}, "motor-001": {"site": "south"},
                              "pump-002": {"site": "north"}})
    v.ingest(fv.STATE, state("pump-000", T0))
    v.ingest(fv.STATE, state("motor-001", T0))
    v.ingest(fv.STATE, state("pump-002", T0, alert=True))
    assert [r["asset_id"] for r in v.rows(asset_type="pump")] == ["pump-002", "pump-000"]
    assert [r["asset_id"] for r in v.rows(site="north", status="normal")] == ["pump-000"]
    c = v.counts()
    assert c["by_status"]["alert"] == 1 and c["by_status"]["normal"] == 2
    assert c["sites"] == ["north", "south"] and c["by_type"] == {"motor": 1, "pump": 2}


def test_alerts_open_and_close_with_actions_and_state_in_event_time():
    v = FleetView()
    v.ingest(fv.ACTION, action("pump-000", T0 + 3 * MIN, "ALERT"))
    row = v.rows()[0]
    assert (row["alert_open"], row["alert_reason"], row["alert_since_ms"]) == \
        (True, "alert reason", T0 + 3 * MIN)
    v.ingest(fv.STATE, state("pump-000", T0 + 2 * MIN, alert=False))  # older: no effect
    assert v.rows()[0]["alert_open"] is True
    v.ingest(fv.ACTION, action("pump-000", T0 + 9 * MIN, "ALERT_CLEARED", "info"))
    assert v.rows()[0]["alert_open"] is False and v.rows()[0]["status"] == "normal"


def test_a_redelivered_record_is_folded_in_once():
    v = FleetView()
    a = action("pump-000", T0, "WORK_ORDER")
    assert v.ingest(fv.ACTION, a) is True
    assert v.ingest(fv.ACTION, a) is False
    v.ingest(fv.PREDICTION, prediction("pump-000", T0))
    v.ingest(fv.PREDICTION, prediction("pump-000", T0))
    d = v.asset_detail("pump-000")
    assert len(d["actions"]) == 1 and d["predictions"]["window_end_ms"] == [T0]


def test_changed_since_gives_only_what_changed_oldest_change_first():
    v = FleetView()
    for a in ("pump-000", "motor-001", "pump-002"):
        v.ingest(fv.STATE, state(a, T0))
    mark = v.version
    assert v.changed_since(mark) == []
    v.ingest(fv.STATE, state("pump-002", T0 + MIN, health=0.5))
    v.ingest(fv.STATE, state("pump-000", T0 + MIN, health=0.6))
    v.ingest(fv.STATE, state("pump-002", T0 + 2 * MIN, health=0.4))
    changed = v.changed_since(mark)
    assert [(r["asset_id"], r["health_index"]) for r in changed] == \
        [("pump-000", 0.6), ("pump-002", 0.4)]


def test_asset_detail_has_histories_marks_and_deltas():
    v = FleetView()
    v.ingest(fv.PREDICTION, prediction("pump-000", T0, score=0.2))
    cursor = v.asset_detail("pump-000")["cursor"]
    assert v.asset_since("pump-000", cursor) is None
    v.ingest(fv.PREDICTION, prediction("pump-000", T0 + MIN, score=0.9995, alarm=True,
                                       contributors=["vibration.mean", "bearing_temp.mean"]))
    v.ingest(fv.PREDICTION, prediction("pump-000", T0 + 2 * MIN, drift=True,
                                       drift_sensors=["ambient_temp"]))
    v.ingest(fv.ACTION, action("pump-000", T0 + MIN, "ALERT"), signature="valid")
    d = v.asset_since("pump-000", cursor)
    assert d["reset"] is False
    assert d["predictions"]["window_end_ms"] == [T0 + MIN, T0 + 2 * MIN]
    assert d["predictions"]["anomaly_score"] == [0.9995, 0.1]
    assert [(m["kind"], m["ms"]) for m in d["marks"]] == [("alarm", T0 + MIN),
                                                          ("drift", T0 + 2 * MIN)]
    assert d["marks"][0]["contributors"] == ["vibration.mean", "bearing_temp.mean"]
    assert d["marks"][1]["sensors"] == ["ambient_temp"]
    assert [(a["kind"], a["signature"]) for a in d["actions"]] == [("ALERT", "valid")]
    assert v.asset_since("pump-000", d["cursor"]) is None


def test_a_client_behind_the_kept_history_gets_everything_again():
    v = FleetView(history=4)
    v.ingest(fv.PREDICTION, prediction("pump-000", T0))
    cursor = v.asset_detail("pump-000")["cursor"]
    for i in range(1, 10):
        v.ingest(fv.PREDICTION, prediction("pump-000", T0 + i * MIN))
    d = v.asset_since("pump-000", cursor)
    assert d["reset"] is True
    assert d["predictions"]["window_end_ms"] == [T0 + i * MIN for i in range(6, 10)]


def test_sensor_history_uses_features_min_and_max_when_there_are_features():
    v = FleetView()
    v.ingest(fv.STATE, state("pump-000", T0, values={"flow": 0.5}))
    s = v.asset_detail("pump-000")["sensors"]
    assert s["sensors"]["flow"]["mean"] == [0.5] and s["sensors"]["flow"]["max"] == [None]
    assert s["sensors"]["flow"]["unit"] == "meter ** 3 / second"
    v.ingest(fv.FEATURES, {"asset_id": "pump-000", "asset_type": "pump",
                           "window_start_ms": T0, "window_end_ms": T0 + MIN, "count": 12,
                           "duplicates": 2, "features": {"flow.mean": 0.6, "flow.min": 0.55,
                                                         "flow.max": 0.7, "flow.std": 0.01}})
    v.ingest(fv.STATE, state("pump-000", T0 + MIN, values={"flow": 0.6}))
    s = v.asset_detail("pump-000")["sensors"]
    assert s["window_end_ms"] == [T0 + MIN]
    assert (s["sensors"]["flow"]["min"], s["sensors"]["flow"]["max"]) == ([0.55], [0.7])
    assert v.quality.duplicates == 2


def test_dead_letters_are_counted_by_reason_and_source_with_samples():
    v = FleetView()
    for i, (reason, source) in enumerate([("bad_magic", f"twin.raw.orca/1@{n}")
                                          for n in range(7)]
                                         + [("unknown_unit", "twin.raw.kestrel")] * 2):
        v.ingest(fv.DEAD_LETTER, {"stage": "decode", "reason": reason, "detail": f"#{i}",
                                  "source": source, "key": b"pump-000",
                                  "payload": b"\x01abc" * 40, "ts_ms": T0 + i * 20_000})
    q = v.quality.detail()
    assert q["dead_letters"] == 9
    assert q["dead_letters_by_reason"] == {"bad_magic": 7, "unknown_unit": 2}
    assert q["by_source"] == {"twin.raw.orca": 7, "twin.raw.kestrel": 2}
    assert [s["detail"] for s in q["samples"]["bad_magic"]] == ["#6", "#5", "#4", "#3", "#2"]
    sample = q["samples"]["bad_magic"][0]
    assert sample["source"] == "twin.raw.orca/1@6"  # the pointer to the original
    assert sample["payload_bytes"] == 160 and sample["key"] == "pump-000"
    assert sample["payload_text"].startswith(".abc.abc")
    assert q["dead_letters_per_minute"]["count"] == [3, 3, 3]
    assert q["late_readings"] is None  # unknown, not zero, until a source carries them


def test_late_readings_are_counted_per_minute_and_asset():
    v = FleetView()
    v.mark_sources(late=True, duplicates=True)
    assert v.quality.summary()["late_readings"] == 0
    for i in range(3):
        v.ingest(fv.LATE, {"reading_id": f"r{i}", "asset_id": "pump-000", "asset_type": "pump",
                           "vendor": "orca", "ts_ms": T0 + i * 30_000, "values": {}})
    q = v.quality.detail()
    assert q["late_readings"] == 3 and q["late_by_asset"] == {"pump-000": 3}
    assert q["late_per_minute"] == {"minute_ms": [T0, T0 + MIN], "count": [2, 1]}


def test_records_it_cannot_use_are_refused_with_a_reason():
    v = FleetView()
    with pytest.raises(ValueError, match="does not read"):
        v.ingest("vendor/helios_raw.v1", {"asset_id": "x"})
    with pytest.raises(ValueError, match="without an asset_id"):
        v.ingest(fv.STATE, {"ts_ms": T0})


def test_non_finite_numbers_become_null():
    v = FleetView()
    v.ingest(fv.PREDICTION, prediction("pump-000", T0, health=float("nan"),
                                       rul_s=float("inf")))
    row = v.rows()[0]
    assert row["health_index"] is None and row["rul_s"] is None
    assert v.asset_detail("pump-000")["predictions"]["health_index"] == [None]


def test_ring_keeps_the_newest_rows_in_order():
    r = Ring(("t",), capacity=20)
    for i in range(50):
        r.append((i,))
        assert r.columns()["t"] == [float(x) for x in range(max(0, i - 19), i + 1)]
    assert r.since(45)["t"] == [45.0, 46.0, 47.0, 48.0, 49.0]
    assert r.since(10) is None and r.since(60) is None


def test_forecast_interval_covers_the_forecasts_own_errors():
    f = ForecastInterval(coverage=0.9)
    # health falls by 0.01 a window; the forecast for 5 windows ahead guesses 0.02 too low
    for i in range(40):
        health = 1.0 - 0.01 * i
        f.observe(T0 + i * MIN, health, health - 0.05 - 0.02, 300)
    low, high = f.interval(0.5)
    assert low == pytest.approx(0.48) and high == pytest.approx(0.52)
    assert ForecastInterval().interval(0.5) is None  # no past errors: no interval


def test_forecast_interval_reaches_the_rows():
    v = FleetView()
    for i in range(20):
        v.ingest(fv.PREDICTION, prediction("pump-000", T0 + i * MIN, health=1.0,
                                           forecast_health=0.9, forecast_horizon_s=60))
    row = v.rows()[0]
    assert (row["forecast_low"], row["forecast_high"]) == pytest.approx((0.8, 1.0))


def test_history_is_bounded_whatever_the_run_length():
    v = FleetView(history=30)
    for i in range(500):
        v.ingest(fv.PREDICTION, prediction("pump-000", T0 + i * MIN, score=0.9999,
                                           alarm=True, contributors=["flow.mean"]))
        v.ingest(fv.ACTION, action("pump-000", T0 + i * MIN, "SETPOINT"))
    a = v.assets["pump-000"]
    assert len(a.predictions) == 30 and len(a.actions) == fv.MAX_ACTIONS
    assert len(a.marks) == fv.MAX_MARKS and len(a.action_ids) <= 4 * fv.MAX_ACTIONS + 1


def test_a_view_pickles():
    v = FleetView()
    v.ingest(fv.PREDICTION, prediction("pump-000", T0))
    v.lock = None  # a lock does not pickle; the view's data does
    w = pickle.loads(pickle.dumps(v))
    assert w.rows() == v.rows()


def test_a_dead_letter_written_again_by_a_rerun_is_counted_once():
    v = FleetView()
    dl = {"stage": "decode", "reason": "bad_magic", "detail": "x", "payload": b"",
          "ts_ms": T0, "source": "twin.raw.orca/2@17"}
    v.ingest(fv.DEAD_LETTER, dl)
    v.ingest(fv.DEAD_LETTER, dict(dl, ts_ms=T0 + MIN))  # the rerun's
    v.ingest(fv.DEAD_LETTER, dict(dl, source="twin.raw.orca/2@18"))
    v.ingest(fv.DEAD_LETTER, dict(dl, source="helios"))  # no pointer: each one counts
    v.ingest(fv.DEAD_LETTER, dict(dl, source="helios"))
    s = v.quality.summary()
    assert (s["dead_letters"], s["repeated_dead_letters"]) == (4, 1)


def test_the_open_alert_is_known_whichever_topic_arrives_first():
    v = FleetView()
    v.ingest(fv.STATE, state("motor-001", T0 + 5 * MIN, alert=True))  # a later window first
    assert v.rows()[0]["alert_reason"] is None and v.rows()[0]["alert_severity"] == "warning"
    v.ingest(fv.ACTION, action("motor-001", T0 + 2 * MIN, "ALERT", "critical"))
    row = v.rows()[0]
    assert (row["alert_open"], row["alert_severity"], row["alert_reason"],
            row["alert_since_ms"]) == (True, "critical", "alert reason", T0 + 2 * MIN)
    v.ingest(fv.ACTION, action("motor-001", T0 + 9 * MIN, "ALERT_CLEARED", "info"))
    v.ingest(fv.STATE, state("motor-001", T0 + 12 * MIN, alert=True))  # a new episode
    row = v.rows()[0]
    assert row["alert_open"] is True and row["alert_reason"] is None  # its ALERT not yet in


# -- what-if sources -----------------------------------------------------------------------

def test_the_view_keeps_the_newest_models_and_the_windows_after_them():
    v = FleetView()
    v.ingest(fv.STATE, state("pump-000", T0, learned=None))
    assert v.whatif_sources("pump-000") == (None, [])  # nothing before the first document
    v.ingest(fv.STATE, state("pump-000", T0 + MIN, learned='{"doc": 1}'))
    for i in (2, 3):
        v.ingest(fv.STATE, state("pump-000", T0 + i * MIN, health=1 - i / 10, learned=None))
    v.ingest(fv.STATE, state("pump-000", T0 + 2 * MIN, learned=None))  # older: not again
    learned, later = v.whatif_sources("pump-000")
    assert learned == '{"doc": 1}'
    assert [r["ts_ms"] for r in later] == [T0 + 2 * MIN, T0 + 3 * MIN]
    assert set(later[0]) == set(fv.ADVANCE_FIELDS) and later[1]["health_index"] == 0.7
    v.ingest(fv.STATE, state("pump-000", T0 + 4 * MIN, learned='{"doc": 2}'))
    assert v.whatif_sources("pump-000") == ('{"doc": 2}', [])
    assert v.whatif_sources("pump-999") is None


def test_without_models_the_what_if_document_says_why():
    from transforms.whatif.model import ModelError

    with pytest.raises(ModelError, match="pump-000: no state record has carried its learned "
                                         "models yet"):
        fv.whatif_document("pump-000", None, [])
