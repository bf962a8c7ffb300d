"""What-if scenarios: changes of an asset's operating point over time, parsed and checked.

A scenario is a list of steps; each step sets one or more process sensors (the operating
point: speed, flow, pressures, current, torque, the weather) from a time on, for a while
or until the horizon. Outside every step the asset runs as it does now (the baseline).

Values, in the catalog's SI units unless a unit is given:

- ``140`` or ``140 rad/s`` or ``1340rpm``: that value (absolute);
- ``-15%``, ``+20%``: relative to the sensor's latest window mean;
- ``+5``, ``-2 K``: a signed number is a change from the latest window mean.

Times are offsets from the state's time: ``+30m``, ``1h30m``, ``90s``, ``2d``. On the
command line (``twin whatif --set speed=140 --from +30m --for 6h``) the flags make one
step; a scenario file (JSON or TOML, read by the caller) has several::

    horizon = "8h"
    [[step]]
    set = {speed = "-10%"}
    for = "2h"
    [[step]]
    set = {speed = "-15%", ambient_temp = "+5"}
    from = "+2h"

(JSON: ``{"horizon": "8h", "steps": [{"set": {"speed": "-10%"}, "for": "2h"}, ...]}``.)
Every mistake is a :class:`ScenarioError` that says what is wrong and where.

>>> s = parse_scenario({"steps": [{"set": {"speed": "-10%"}, "from": "+30m", "for": "6h"}]})
>>> s.steps[0].changes["speed"].resolve(150.0), s.steps[0].start_s, s.steps[0].end_s
(135.0, 1800.0, 23400.0)
>>> parse_value("1400 rpm", "speed", "radian / second").value
146.6076571675...
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from transforms.catalog import ASSET_TYPES, roles, sensors_of

DEFAULT_HORIZON_S = 6 * 3600.0
MAX_HORIZON_S = 7 * 86_400.0
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|d|h|m|s)?", re.IGNORECASE)
_SECONDS = {"d": 86_400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, None: 1.0}
_VALUE = re.compile(r"^\s*([+-])?\s*((?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(%|[^\d\s%].*)?$")


class ScenarioError(ValueError):
    """A scenario that cannot be run, with what is wrong and where."""


@dataclass(frozen=True)
class Change:
    """One sensor's value in a step: absolute, a relative change or an absolute delta."""

    sensor: str
    value: float
    kind: str  # "absolute" | "relative" (fraction, e.g. -0.1) | "delta" (SI units)
    text: str = ""

    def resolve(self, current: float) -> float:
        """The value in SI units, given the sensor's latest window mean."""
        if self.kind == "relative":
            return current * (1.0 + self.value)
        if self.kind == "delta":
            return current + self.value
        return self.value


@dataclass(frozen=True)
class Step:
    """Sensors set from ``start_s`` (offset from now) until ``end_s`` (None: the
    horizon)."""

    changes: dict[str, Change]
    start_s: float = 0.0
    end_s: float | None = None

    def active(self, t_s: float) -> bool:
        return self.start_s <= t_s and (self.end_s is None or t_s < self.end_s)


@dataclass(frozen=True)
class Scenario:
    steps: list[Step] = field(default_factory=list)
    horizon_s: float = DEFAULT_HORIZON_S

    def at(self, t_s: float) -> dict[str, Change]:
        """The changes in force at ``t_s`` seconds from now (later steps win)."""
        out: dict[str, Change] = {}
        for step in self.steps:
            if step.active(t_s):
                out.update(step.changes)
        return out

    def sensors(self) -> list[str]:
        return sorted({s for step in self.steps for s in step.changes})

    def describe(self) -> str:
        """One line per step, as a person would say it."""
        lines = []
        for step in self.steps:
            what = ", ".join(f"{c.sensor}={c.text or c.value}" for c in step.changes.values())
            until = "" if step.end_s is None else f" for {_fmt_s(step.end_s - step.start_s)}"
            lines.append(f"{what} from +{_fmt_s(step.start_s)}{until}")
        return "; ".join(lines) or "no change (baseline)"

    def to_dict(self) -> dict[str, Any]:
        return {"horizon_s": self.horizon_s, "steps": [
            {"set": {c.sensor: {"value": c.value, "kind": c.kind, "text": c.text}
                     for c in step.changes.values()},
             "from_s": step.start_s, "until_s": step.end_s} for step in self.steps]}


def _fmt_s(s: float) -> str:
    if s % 3600 == 0:
        return f"{s / 3600:g}h"
    if s % 60 == 0:
        return f"{s / 60:g}m"
    return f"{s:g}s"


def parse_duration(text: Any, what: str = "duration", allow_zero: bool = True) -> float:
    """Seconds in ``"+30m"``, ``"1h30m"``, ``"90s"``, ``"2d"``, ``3600`` (a number:
    seconds). A leading ``+`` is allowed (an offset from now).

    >>> parse_duration("+1h30m"), parse_duration("45"), parse_duration(90)
    (5400.0, 45.0, 90.0)
    """
    if isinstance(text, bool):
        raise ScenarioError(f"{what}: not a duration: {text!r}")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        raw = str(text).strip()
        body = raw[1:].strip() if raw.startswith("+") else raw
        pos, seconds = 0, 0.0
        for m in _DURATION.finditer(body):
            if m.start() != pos or (m.group(2) is None and (m.end() != len(body) or pos)):
                break  # a bare number is seconds, and only on its own
            seconds += float(m.group(1)) * _SECONDS[m.group(2) and m.group(2).lower()]
            pos = m.end()
            while pos < len(body) and body[pos] == " ":
                pos += 1
        if not body or pos != len(body):
            raise ScenarioError(f"{what}: not a duration: {raw!r} (try +30m, 1h30m, 90s, 6h)")
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise ScenarioError(f"{what}: must be {'>= 0' if allow_zero else '> 0'}, got {text!r}")
    return seconds


def parse_value(text: Any, sensor: str, si_unit: str, where: str = "") -> Change:
    """One sensor's value (module docs) as a :class:`Change`; ``where`` prefixes errors."""
    name = sensor
    sensor = f"{where}: {name}" if where else name
    if isinstance(text, bool):
        raise ScenarioError(f"{sensor}: not a value: {text!r}")
    if isinstance(text, int | float):
        if not math.isfinite(text):
            raise ScenarioError(f"{sensor}: not a finite value: {text!r}")
        return Change(name, float(text), "absolute", str(text))
    raw = str(text)
    m = _VALUE.match(raw)
    if m is None:
        raise ScenarioError(f"{sensor}: not a value: {raw!r} (try 140, -10%, +5, 1400 rpm)")
    sign, number, unit = m.group(1), float(m.group(2)), (m.group(3) or "").strip()
    value = -number if sign == "-" else number
    if unit == "%":
        if sign is None:
            raise ScenarioError(f"{sensor}: a percentage is a change, give its sign: "
                                f"+{number:g}% or -{number:g}% (not {raw!r})")
        if value <= -100:
            raise ScenarioError(f"{sensor}: {raw!r} would take it to zero or below")
        return Change(name, value / 100.0, "relative", raw.strip())
    if unit:
        from transforms.errors import InvalidReading
        from transforms.units import factors

        try:
            scale, offset = factors(unit, si_unit)
        except InvalidReading:
            raise ScenarioError(f"{sensor}: unknown unit {unit!r} for {si_unit} (give SI "
                                f"units, or one of the vendors' spellings, e.g. rpm, "
                                f"degC, bar, m3/h)") from None
        if sign is not None:  # a change: the unit's scale, not its zero
            return Change(name, value * scale, "delta", raw.strip())
        return Change(name, value * scale + offset, "absolute", raw.strip())
    if sign is not None:
        return Change(name, value, "delta", raw.strip())
    return Change(name, value, "absolute", raw.strip())


def settable(asset_type: str) -> dict[str, Any]:
    """The sensors a scenario may set for ``asset_type`` (those its model gives the
    ``operating_point`` or ``exogenous`` role), by name."""
    process = roles(asset_type).process
    return {s.name: s for s in sensors_of(asset_type) if s.name in process}


def parse_assignment(text: str) -> tuple[str, str]:
    """``"speed=140"`` -> ``("speed", "140")``."""
    name, sep, value = str(text).partition("=")
    if not sep or not name.strip() or not value.strip():
        raise ScenarioError(f"--set wants SENSOR=VALUE (e.g. speed=140, flow=+20%), "
                            f"not {text!r}")
    return name.strip(), value.strip()


def from_flags(sets: list[str], start: str | None = None, duration: str | None = None,
               horizon: str | None = None) -> dict[str, Any]:
    """The scenario document of the command-line flags (one step)."""
    if not sets:
        if start is not None or duration is not None:
            raise ScenarioError("--from and --for need at least one --set SENSOR=VALUE")
        doc: dict[str, Any] = {"steps": []}
    else:
        changes: dict[str, str] = {}
        for text in sets:
            name, value = parse_assignment(text)
            if name in changes:
                raise ScenarioError(f"--set {name} given twice")
            changes[name] = value
        step: dict[str, Any] = {"set": changes}
        if start is not None:
            step["from"] = start
        if duration is not None:
            step["for"] = duration
        doc = {"steps": [step]}
    if horizon is not None:
        doc["horizon"] = horizon
    return doc


def parse_scenario(doc: dict[str, Any], asset_type: str | None = None) -> Scenario:
    """A :class:`Scenario` from its document (a scenario file's contents, or
    :func:`from_flags`), checked against ``asset_type``'s sensors when given (else against
    every asset type's process sensors)."""
    if not isinstance(doc, dict):
        raise ScenarioError("a scenario is a table with 'steps' (and optionally 'horizon')")
    unknown = set(doc) - {"steps", "step", "horizon"}
    if unknown:
        raise ScenarioError(f"unknown scenario key(s) {sorted(unknown)}; known: steps (or "
                            f"[[step]] in TOML), horizon")
    raw_steps = doc.get("steps", doc.get("step", []))
    if not isinstance(raw_steps, list):
        raise ScenarioError("'steps' must be a list of steps")
    known = (settable(asset_type) if asset_type else
             {s.name: s for t in ASSET_TYPES for s in settable(t).values()})
    steps = []
    for i, raw in enumerate(raw_steps, 1):
        where = f"step {i}"
        if not isinstance(raw, dict):
            raise ScenarioError(f"{where}: a step is a table with 'set', 'from', 'for'")
        bad = set(raw) - {"set", "from", "for", "until"}
        if bad:
            raise ScenarioError(f"{where}: unknown key(s) {sorted(bad)}; a step has set, "
                                f"from, for (or until)")
        sets = raw.get("set")
        if not isinstance(sets, dict) or not sets:
            raise ScenarioError(f"{where}: 'set' must name at least one sensor and value")
        changes = {}
        for name, value in sets.items():
            if name not in known:
                kind = f"a {asset_type}" if asset_type else "any asset type"
                close = [k for k in known if k.startswith(name[:3])]
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ScenarioError(
                    f"{where}: {name!r} is not a sensor a scenario can set for {kind}"
                    f"{hint}; settable: {', '.join(sorted(known))} (condition sensors "
                    f"are what a what-if predicts, not what it sets)")
            sensor = known[name]
            change = parse_value(value, name, sensor.unit, where)
            if change.kind == "absolute" and not sensor.low <= change.value <= sensor.high:
                raise ScenarioError(f"{where}: {name}={value} is outside the plausible range "
                                    f"of {name} ({sensor.low:g} to {sensor.high:g} "
                                    f"{sensor.unit})")
            changes[name] = change
        start = parse_duration(raw.get("from", 0), f"{where}: from")
        end = None
        if "for" in raw and "until" in raw:
            raise ScenarioError(f"{where}: give 'for' or 'until', not both")
        if "for" in raw:
            end = start + parse_duration(raw["for"], f"{where}: for", allow_zero=False)
        elif "until" in raw:
            end = parse_duration(raw["until"], f"{where}: until")
            if end <= start:
                raise ScenarioError(f"{where}: until ({raw['until']}) is not after from "
                                    f"({raw.get('from', 0)})")
        steps.append(Step(changes, start, end))
    horizon = (parse_duration(doc["horizon"], "horizon", allow_zero=False)
               if "horizon" in doc else None)
    last = max((s.end_s if s.end_s is not None else s.start_s for s in steps), default=0.0)
    if horizon is None:
        horizon = max(DEFAULT_HORIZON_S, last)
    if horizon > MAX_HORIZON_S:
        raise ScenarioError(f"horizon {_fmt_s(horizon)} is beyond {_fmt_s(MAX_HORIZON_S)}: "
                            f"a what-if that far ahead is guesswork")
    for i, step in enumerate(steps, 1):
        if step.start_s >= horizon:
            raise ScenarioError(f"step {i} starts at +{_fmt_s(step.start_s)}, at or after "
                                f"the horizon ({_fmt_s(horizon)})")
    return Scenario(steps, horizon)
