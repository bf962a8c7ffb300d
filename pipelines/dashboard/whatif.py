"""The dashboard's what-if panel: a scenario from the query string, the roll-forward out.

``GET /api/whatif/{id}?set=speed=-10%25&from=+30m&for=2h`` asks the twin of one asset what
happens if it is run differently, from the state the dashboard already holds (the newest
learned-models document a state record carried, brought up to the newest state record:
:meth:`~transforms.fleetview.FleetView.whatif_sources`,
:func:`~transforms.fleetview.whatif_document`). The scenario's syntax is the command's
(``twin whatif --set speed=-10% --from +30m --for 2h``), parsed by the same code
(:func:`transforms.whatif.scenario.from_flags`); the answer is the library's
(:func:`transforms.whatif.whatif`) with the sensors a scenario may set.

With ``recommend=1`` it also runs ``twin optimize``'s search
(:func:`transforms.whatif.optimize.recommend`) and returns the ``SETPOINT`` action it
would propose, checked against the policy's guardrails, as a **dry run**: the dashboard
computes and never actuates. It publishes nothing; it shows the ``twin optimize ...
--publish`` command a person would run, which signs the command like any other and whose
guardrails are checked again on the state of that moment.

Query parameters (each at most once unless said; anything else is a 400 that names it):

==========================  ==============================================================
``set``                     ``SENSOR=VALUE`` (repeatable): ``140``, ``1400rpm``, ``-10%``,
                            ``+5`` (in a URL ``+`` is a space: write ``%2B``)
``from``, ``for``           when the change starts and how long it lasts
``horizon``                 how far ahead (default 6 h, at most :data:`MAX_HORIZON_S`)
``recommend``               ``1``: also the recommended setpoint (takes a few seconds)
``maximize``, ``limit``,    ``twin optimize``'s ``--maximize SENSOR``, ``--limit
``min_rul``, ``until``,     SENSOR<=VALUE`` (repeatable), ``--min-rul``, ``--until``,
``allow_extrapolation``     ``--allow-extrapolation`` (``1``); only with ``recommend=1``
==========================  ==============================================================
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from transforms.whatif.scenario import ScenarioError

MAX_HORIZON_S = 2 * 86_400.0  # a dashboard question; the command goes to 7 days
SINGLE = ("from", "for", "horizon", "recommend", "maximize", "min_rul", "until",
          "allow_extrapolation")
REPEATABLE = ("set", "limit")
OPTIMIZE_ONLY = ("maximize", "limit", "min_rul", "until", "allow_extrapolation")
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class Ask:
    """A what-if question from the query string (:func:`parse_query`)."""

    scenario: dict[str, Any]
    horizon_s: float
    recommend: bool = False
    maximize: str | None = None
    limits: dict[str, float] = field(default_factory=dict)
    min_rul: str | None = None
    until: str | None = None
    allow_extrapolation: bool = False
    raw: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> tuple:
        """What identifies the question (for the answer cache)."""
        return self.raw


def _flag(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise ScenarioError(f"{name} is 1 or 0, not {value!r}")


def parse_query(items: list[tuple[str, str]], raw_query: bytes = b"") -> Ask:
    """The question in query parameters ``items`` (``[(name, value), ...]``, decoded);
    a :class:`~transforms.whatif.scenario.ScenarioError` says what is wrong.
    ``raw_query`` (the undecoded query string) only sharpens a message: a ``+`` in it
    was decoded as a space."""
    from transforms.whatif.optimize import parse_limits
    from transforms.whatif.scenario import DEFAULT_HORIZON_S, from_flags, parse_duration

    known = SINGLE + REPEATABLE
    unknown = sorted({k for k, _ in items if k not in known})
    if unknown:
        raise ScenarioError(f"unknown parameter(s) {', '.join(unknown)}; known: "
                            f"{', '.join(known)}")
    multi: dict[str, list[str]] = {}
    for k, v in items:
        multi.setdefault(k, []).append(v)
    twice = [k for k in SINGLE if len(multi.get(k, ())) > 1]
    if twice:
        raise ScenarioError(f"{', '.join(twice)} given more than once")
    one = {k: v[0] for k, v in multi.items() if k in SINGLE}
    recommend = _flag("recommend", one.get("recommend", "0"))
    stray = [k for k in OPTIMIZE_ONLY if k in multi]
    if stray and not recommend:
        raise ScenarioError(f"{', '.join(stray)} only mean something with recommend=1")
    if "min_rul" in one and "until" in one:
        raise ScenarioError("min_rul or until, not both")
    try:
        scenario = from_flags(multi.get("set", []), one.get("from"), one.get("for"),
                              one.get("horizon"), prefix="")
        horizon_s = (parse_duration(one["horizon"], "horizon", allow_zero=False)
                     if "horizon" in one else DEFAULT_HORIZON_S)
        if horizon_s > MAX_HORIZON_S:
            raise ScenarioError(f"horizon: at most {MAX_HORIZON_S / 3600:g}h here (twin "
                                f"whatif goes further)")
        if "min_rul" in one:
            parse_duration(one["min_rul"], "min_rul", allow_zero=False)
        limits = parse_limits(multi.get("limit", []), "limit")
        allow = _flag("allow_extrapolation", one.get("allow_extrapolation", "0"))
    except ScenarioError as exc:
        raise ScenarioError(plus_hint(str(exc), raw_query)) from None
    return Ask(scenario, horizon_s, recommend, one.get("maximize") or None, limits,
               one.get("min_rul"), one.get("until"), allow, tuple(sorted(items)))


def plus_hint(message: str, raw_query: bytes) -> str:
    if b"+" in raw_query:
        return message + " (in a URL a + is a space: write it as %2B)"
    return message


def settable(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The sensors a scenario may set on the asset of ``doc``: unit and latest value."""
    from transforms.whatif.scenario import settable as catalog_settable

    return {name: {"unit": s.unit, "value": doc["values"].get(name)}
            for name, s in sorted(catalog_settable(doc["asset_type"]).items())}


def optimize_command(source: list[str] | None, asset_id: str, ask: Ask) -> str | None:
    """The ``twin optimize ... --publish`` command that would send the recommendation as
    a signed command (still a dry run without ``--apply``); None when the dashboard's
    source is not one the command reads."""
    if source is None:
        return None
    args = ["twin", "optimize", *source, "--asset", asset_id]
    if ask.maximize:
        args += ["--maximize", ask.maximize]
    for name, value in ask.limits.items():
        args += ["--limit", f"{name}<={value:g}"]
    if ask.min_rul:
        args += ["--min-rul", ask.min_rul]
    if ask.until:
        args += ["--until", ask.until]
    args += ["--horizon", _duration(ask.horizon_s)]
    if ask.allow_extrapolation:
        args.append("--allow-extrapolation")
    args.append("--publish")
    return shlex.join(args)


def _duration(seconds: float) -> str:
    for unit, n in (("h", 3600), ("m", 60)):
        if seconds % n == 0:
            return f"{seconds / n:g}{unit}"
    return f"{seconds:g}s"


def compute(asset_id: str, learned: str | None, later: list[dict[str, Any]], ask: Ask,
            source: list[str] | None = None) -> dict[str, Any]:
    """The answer to ``ask`` for one asset (blocking: run it in a worker thread).

    Raises :class:`~transforms.whatif.model.ModelError` when the asset's twin cannot
    answer (no models yet, still warming up) and
    :class:`~transforms.whatif.scenario.ScenarioError` for a scenario it cannot run (a
    sensor the asset does not have, a value outside its plausible range).
    """
    from transforms.fleetview import whatif_document
    from transforms.whatif import whatif

    doc = whatif_document(asset_id, learned, later)
    result = whatif(doc, {**ask.scenario, "horizon": ask.horizon_s})
    out = {"available": True, **result, "settable": settable(doc),
           "model": {"as_of_ms": doc["ts_ms"], "replayed_windows": len(later),
                     "windows_seen": doc.get("windows_seen")}}
    if ask.recommend:
        out["recommendation"] = _recommend(doc, ask, source)
    return out


def _recommend(doc: dict[str, Any], ask: Ask, source: list[str] | None) -> dict[str, Any]:
    from transforms.whatif.model import ModelError
    from transforms.whatif.optimize import (
        GuardrailError,
        recommend,
        seconds_until,
        setpoint_action,
    )
    from transforms.whatif.scenario import parse_duration

    min_rul_s = None
    if ask.min_rul:
        min_rul_s = parse_duration(ask.min_rul, "min_rul", allow_zero=False)
    elif ask.until:
        min_rul_s = seconds_until(ask.until, doc["ts_ms"], "until")
    try:
        rec = recommend(doc, objective=ask.maximize, limits=ask.limits, min_rul_s=min_rul_s,
                        horizon_s=ask.horizon_s, allow_extrapolation=ask.allow_extrapolation)
    except ModelError as exc:  # the what-if answers; only the recommendation cannot
        return {"error": str(exc), "action": None, "refused": None, "published": False,
                "command": None}
    try:
        # always a dry run: the dashboard never actuates
        rec["action"] = setpoint_action(doc, rec, dry_run=True)
        rec["refused"] = None
    except GuardrailError as exc:
        rec["action"], rec["refused"] = None, f"guardrails: {exc}"
    rec["published"] = False
    rec["command"] = (optimize_command(source, doc["asset_id"], ask)
                      if rec["action"] is not None else None)
    return rec
