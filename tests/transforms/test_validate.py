"""Plausibility checks on canonical readings."""

from __future__ import annotations

import math

import pytest

from transforms.errors import InvalidReading
from transforms.validate import validate

NOW = 1_795_852_800_000


def reading(**changes):
    base = {
        "reading_id": f"helios:pump-1:{NOW}",
        "asset_id": "pump-1",
        "asset_type": "pump",
        "vendor": "helios",
        "ts_ms": NOW,
        "values": {"flow": 0.05, "bearing_temp": 330.0},
        "bad_quality": [],
    }
    return {**base, **changes}


def reason(r, **kw):
    with pytest.raises(InvalidReading) as err:
        validate(
            r,
            now_ms=NOW,
            max_future_ms=kw.get("future", 60_000),
            max_age_ms=kw.get("age", 86_400_000),
        )
    return err.value.reason


def test_a_plausible_reading_passes_unchanged():
    r = reading()
    assert validate(r, now_ms=NOW, max_future_ms=0, max_age_ms=0) == reading()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite(value):
    assert reason(reading(values={"flow": value})) == "non_finite_value"


@pytest.mark.parametrize(
    ("sensor", "value", "ok"),
    [
        ("flow", 0.0, True),
        ("flow", 2.0, True),
        ("flow", 2.0000001, False),
        ("flow", -1e-9, False),
        ("suction_pressure", -1.0e5, True),
        ("suction_pressure", -1.0e5 - 1, False),
        ("bearing_temp", 199.99, False),
        ("bearing_temp", 500.0, True),
    ],
)
def test_catalog_ranges_are_inclusive(sensor, value, ok):
    r = reading(values={sensor: value})
    if ok:
        assert validate(r, now_ms=NOW, max_future_ms=0, max_age_ms=0)["values"] == {sensor: value}
    else:
        assert reason(r) == "out_of_range"


def test_motor_ranges_apply_to_motors():
    r = reading(asset_type="motor", values={"winding_temp": 540.0, "torque": -100.0})
    assert validate(r, now_ms=NOW, max_future_ms=0, max_age_ms=0)["values"]["torque"] == -100.0
    assert reason(reading(asset_type="motor", values={"flow": 0.1})) == "unknown_tag"


def test_timestamp_window_bounds():
    assert (
        validate(reading(ts_ms=NOW + 60_000), now_ms=NOW, max_future_ms=60_000, max_age_ms=0)[
            "ts_ms"
        ]
        == NOW + 60_000
    )
    assert reason(reading(ts_ms=NOW + 60_001)) == "timestamp_in_future"
    assert (
        validate(reading(ts_ms=NOW - 1000), now_ms=NOW, max_future_ms=0, max_age_ms=1000)["ts_ms"]
        == NOW - 1000
    )
    assert reason(reading(ts_ms=NOW - 1001), age=1000) == "timestamp_too_old"
    assert reason(reading(ts_ms=0)) == "timestamp_too_old"


def test_no_good_values():
    r = reading(values={}, bad_quality=["flow"])
    assert reason(r) == "no_good_values"


@pytest.mark.parametrize("asset_id", ["", "   ", "a\x00b", "line\nbreak", "x" * 129, None, 7])
def test_bad_asset_ids(asset_id):
    assert reason(reading(asset_id=asset_id)) == "bad_asset_id"


@pytest.mark.parametrize("asset_id", ["x" * 128, "Pumpe Nord/3", "泵-1"])
def test_good_asset_ids(asset_id):
    assert (
        validate(reading(asset_id=asset_id), now_ms=NOW, max_future_ms=0, max_age_ms=0)["asset_id"]
        == asset_id
    )


@pytest.mark.parametrize("asset_type", ["fan", "", None, "Pump"])
def test_unknown_asset_type(asset_type):
    assert reason(reading(asset_type=asset_type)) == "unknown_asset_type"


def test_checks_run_in_a_fixed_order():
    r = reading(asset_id="", asset_type="fan", ts_ms=0, values={"flow": math.nan})
    assert reason(r) == "bad_asset_id"
    assert reason({**r, "asset_id": "a"}) == "unknown_asset_type"
    assert reason({**r, "asset_id": "a", "asset_type": "pump"}) == "timestamp_too_old"
    assert reason({**r, "asset_id": "a", "asset_type": "pump", "ts_ms": NOW}) == (
        "non_finite_value"
    )


def test_the_machine_clock_refuses_what_a_forged_arrival_time_lets_in():
    """A producer sets the Kafka timestamp: event time and arrival both in 2100 pass the
    arrival check; this machine's clock does not let them in."""
    forged = 4_102_444_800_000
    r = reading(ts_ms=forged)
    assert validate(r, now_ms=forged, max_future_ms=60_000, max_age_ms=0)["ts_ms"] == forged
    with pytest.raises(InvalidReading) as err:
        validate(r, now_ms=forged, max_future_ms=60_000, max_age_ms=0, clock_ms=NOW)
    assert err.value.reason == "timestamp_in_future"
    assert err.value.detail == (f"ts_ms {forged} is {forged - NOW} ms after this machine's "
                                f"clock {NOW} (arrival time {forged}: not to be trusted alone)")
    # the clock's skew is the arrival's: up to max_future_ms ahead is fine
    ok = reading(ts_ms=NOW + 60_000)
    assert validate(ok, now_ms=NOW + 60_000, max_future_ms=60_000, max_age_ms=0,
                    clock_ms=NOW) == ok
    # a replay of old data: the clock is far ahead of the arrival, which still judges
    old = reading(ts_ms=NOW - 86_400_000)
    assert validate(old, now_ms=NOW - 86_400_000, max_future_ms=0, max_age_ms=0,
                    clock_ms=NOW) == old
