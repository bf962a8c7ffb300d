"""Scenario parsing and checks: values, times, steps, and a clear error for each mistake."""

from __future__ import annotations

import math

import pytest

from transforms.whatif.scenario import (
    DEFAULT_HORIZON_S,
    ScenarioError,
    from_flags,
    parse_duration,
    parse_scenario,
    parse_value,
)


@pytest.mark.parametrize("text, seconds", [
    ("+30m", 1800.0), ("30m", 1800.0), ("1h30m", 5400.0), ("90s", 90.0), ("2d", 172800.0),
    ("3600", 3600.0), (45, 45.0), ("1.5h", 5400.0), ("+0", 0.0), ("250ms", 0.25),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["+3x", "h", "", "-5m", "1h 30", "soon", True])
def test_bad_durations_say_what_they_want(text):
    with pytest.raises(ScenarioError, match="duration|>= 0"):
        parse_duration(text, "from")


@pytest.mark.parametrize("text, kind, value", [
    ("140", "absolute", 140.0),
    (140, "absolute", 140.0),
    ("-10%", "relative", -0.10),
    ("+20%", "relative", 0.20),
    ("+5", "delta", 5.0),
    ("-2.5", "delta", -2.5),
    ("1400 rpm", "absolute", 1400 * 2 * math.pi / 60),
    ("1400rpm", "absolute", 1400 * 2 * math.pi / 60),
])
def test_values(text, kind, value):
    c = parse_value(text, "speed", "radian / second")
    assert c.kind == kind
    assert c.value == pytest.approx(value)
    assert c.sensor == "speed"


def test_a_celsius_value_and_a_celsius_change_differ():
    assert parse_value("25 degC", "ambient_temp", "kelvin").value == pytest.approx(298.15)
    change = parse_value("+5 degC", "ambient_temp", "kelvin")
    assert (change.kind, change.value) == ("delta", pytest.approx(5.0))


def test_values_resolve_against_the_latest_window():
    assert parse_value("-10%", "speed", "radian / second").resolve(150.0) == pytest.approx(135)
    assert parse_value("+5", "ambient_temp", "kelvin").resolve(290.0) == 295.0
    assert parse_value("140", "speed", "radian / second").resolve(150.0) == 140.0


@pytest.mark.parametrize("text, message", [
    ("10%", "give its sign"),
    ("-100%", "zero or below"),
    ("fast", "not a value"),
    ("1400 furlongs", "unknown unit 'furlongs'"),
    ("1400 psi", "unknown unit 'psi' for radian / second"),
])
def test_bad_values(text, message):
    with pytest.raises(ScenarioError, match=message):
        parse_value(text, "speed", "radian / second")


def test_flags_make_one_step():
    s = parse_scenario(from_flags(["speed=140", "flow=+20%"], "+30m", "6h"), "pump")
    assert len(s.steps) == 1
    step = s.steps[0]
    assert (step.start_s, step.end_s) == (1800.0, 1800.0 + 21600.0)
    assert set(step.changes) == {"speed", "flow"}
    assert s.horizon_s == 23400.0  # the step's end, beyond the default 6 h
    assert s.at(1799.0) == {} and set(s.at(1800.0)) == {"speed", "flow"}
    assert s.at(23400.0) == {}


def test_a_file_with_several_steps_later_steps_win():
    s = parse_scenario({"horizon": "8h", "steps": [
        {"set": {"speed": "-10%"}, "for": "2h"},
        {"set": {"speed": "-15%", "ambient_temp": "+5"}, "from": "+1h"},
    ]}, "motor")
    assert s.horizon_s == 8 * 3600
    assert s.at(1800)["speed"].value == pytest.approx(-0.10)
    assert s.at(5400)["speed"].value == pytest.approx(-0.15)  # both active: the later wins
    assert s.at(5400)["ambient_temp"].kind == "delta"
    assert s.steps[1].end_s is None
    assert "speed=-15%" in s.describe()


def test_toml_style_step_key_and_until():
    s = parse_scenario({"step": [{"set": {"speed": 140}, "from": "1h", "until": "3h"}]})
    assert (s.steps[0].start_s, s.steps[0].end_s) == (3600.0, 10800.0)
    assert s.horizon_s == DEFAULT_HORIZON_S


def test_no_steps_is_the_baseline():
    s = parse_scenario(from_flags([]))
    assert s.steps == [] and s.describe() == "no change (baseline)"


@pytest.mark.parametrize("doc, asset_type, message", [
    ({"steps": [{"set": {"sped": "1"}}]}, "pump", r"'sped' is not a sensor.*did you mean speed"),
    ({"steps": [{"set": {"vibration": "1"}}]}, "pump",
     "condition sensors are what a what-if predicts"),
    ({"steps": [{"set": {"torque": "+5%"}}]}, "pump", "not a sensor a scenario can set for a pump"),
    ({"steps": [{"set": {"speed": "9000"}}]}, "pump", "outside the plausible range"),
    ({"steps": [{"set": {}}]}, None, "at least one sensor"),
    ({"steps": [{"set": {"speed": "1"}, "when": "1h"}]}, None, r"unknown key\(s\) \['when'\]"),
    ({"steps": [{"set": {"speed": "1"}, "for": "1h", "until": "2h"}]}, None, "not both"),
    ({"steps": [{"set": {"speed": "1"}, "from": "2h", "until": "1h"}]}, None, "is not after"),
    ({"steps": [{"set": {"speed": "1"}, "from": "7h"}], "horizon": "6h"}, None,
     "at or after the horizon"),
    ({"horizon": "30d"}, None, "guesswork"),
    ({"steps": "speed=1"}, None, "list of steps"),
    ({"stepz": []}, None, r"unknown scenario key"),
    ([], None, "a table"),
])
def test_every_mistake_is_a_clear_error(doc, asset_type, message):
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(doc, asset_type)


@pytest.mark.parametrize("sets, message", [
    (["speed"], "SENSOR=VALUE"),
    (["=140"], "SENSOR=VALUE"),
    (["speed=1", "speed=2"], "given twice"),
])
def test_bad_flags(sets, message):
    with pytest.raises(ScenarioError, match=message):
        from_flags(sets)


def test_from_without_set_is_an_error():
    with pytest.raises(ScenarioError, match="need at least one --set"):
        from_flags([], start="+30m")


def test_errors_name_the_step():
    with pytest.raises(ScenarioError, match="^step 2: speed"):
        parse_scenario({"steps": [{"set": {"speed": "-5%"}}, {"set": {"speed": "5%"}}]})
