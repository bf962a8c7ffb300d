"""Asset models: what a plant's assets are, declared in a file, not in code.

A model file (YAML) declares **asset types**, each with its **sensors** (canonical name,
the unit its values are kept in, a physical plausibility range, a **role**) and the
**setpoint** the twin may command, and the **assets** (an id or an id pattern, their
type, where they sit: site, line, parent). The ideas are those of Azure Digital Twins'
DTDL (an interface's telemetry with units and semantic roles, its commands) and of the
W3C WoT Thing Models Eclipse Ditto uses (a thing's properties and actions, instances
made from a model); :func:`from_dtdl` imports a DTDL interface.

Roles say how the detector treats a sensor:

- ``operating_point``: what the asset is asked to do (speed, flow, load, pressures,
  current): it explains the condition sensors and is watched for regime changes;
- ``condition``: what tells the asset's health (vibration, bearing temperature): only ever
  explained, never an explanation, so wear cannot explain itself away;
- ``exogenous``: conditions nothing on the asset sets (the weather): an input, never a
  target, its drift reported and never a reason to re-learn.

A model has a name and a version; the twin's state says which version it learned under.
Files are validated against :data:`SCHEMA` and then for meaning (units pint knows, ranges
in order, a setpoint on an operating-point sensor, asset rules naming declared types);
every error names the file, the line and the field (:class:`ModelError`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("operating_point", "condition", "exogenous")
# the components a condition sensor may watch, each with a life law (transforms.whatif.life:
# a bearing's rolling-contact fatigue, a winding's thermal ageing)
COMPONENTS = ("bearing", "winding")
BUILTIN = Path(__file__).parent / "models" / "fleet.yaml"
_NAME = r"^[A-Za-z][A-Za-z0-9_]*$"

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["model", "version", "asset_types"],
    "additionalProperties": False,
    "properties": {
        "model": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"},
        "version": {"type": ["integer", "string"]},
        "description": {"type": "string"},
        "asset_types": {
            "type": "object", "minProperties": 1,
            "propertyNames": {"pattern": _NAME},
            "additionalProperties": {
                "type": "object", "required": ["sensors"], "additionalProperties": False,
                "properties": {
                    "description": {"type": "string"},
                    "sensors": {
                        "type": "object", "minProperties": 1,
                        "propertyNames": {"pattern": _NAME},
                        "additionalProperties": {
                            "type": "object", "required": ["unit", "range", "role"],
                            "additionalProperties": False,
                            "properties": {
                                "unit": {"type": "string", "minLength": 1},
                                "range": {"type": "array", "items": {"type": "number"},
                                          "minItems": 2, "maxItems": 2},
                                "role": {"enum": list(ROLES)},
                                "component": {"enum": list(COMPONENTS)},
                                "description": {"type": "string"},
                            },
                        },
                    },
                    "setpoint": {
                        "type": "object", "required": ["sensor"],
                        "additionalProperties": False,
                        "properties": {
                            "sensor": {"type": "string"},
                            "min": {"type": "number", "exclusiveMinimum": 0},
                            "max": {"type": "number", "exclusiveMinimum": 0},
                            "step": {"type": "number", "exclusiveMinimum": 0},
                            "interval": {"type": ["string", "number"]},
                        },
                    },
                },
            },
        },
        "assets": {
            "type": "array",
            "items": {
                "type": "object", "required": ["match", "type"],
                "additionalProperties": False,
                "properties": {
                    "match": {"type": "string", "minLength": 1},
                    "type": {"type": "string"},
                    "site": {"type": "string"},
                    "line": {"type": "string"},
                    "parent": {"type": "string"},
                    "ranges": {"type": "object", "additionalProperties": {
                        "type": "array", "items": {"type": "number"},
                        "minItems": 2, "maxItems": 2}},
                },
            },
        },
    },
}


class ModelError(ValueError):
    """A model file that cannot be used; the message names the file, line and field."""


@dataclass(frozen=True)
class Sensor:
    """One canonical sensor: its name, unit (pint spelling), plausible range and role."""

    name: str
    unit: str
    low: float
    high: float
    role: str = "condition"
    # the component whose wear a condition sensor shows (what a what-if's life law works
    # on, transforms.whatif.life); None: no life law reads it
    component: str | None = None


@dataclass(frozen=True)
class Setpoint:
    """The setpoint the twin may command, in fractions of the nominal it learns."""

    sensor: str
    min: float = 0.8
    max: float = 1.05
    step: float = 0.05
    interval_s: float = 600.0


@dataclass(frozen=True)
class AssetType:
    name: str
    sensors: tuple[Sensor, ...]
    setpoint: Setpoint | None = None
    description: str = ""

    def role(self, role: str) -> tuple[str, ...]:
        return tuple(s.name for s in self.sensors if s.role == role)


@dataclass(frozen=True)
class AssetRule:
    """Assets whose id matches ``match`` (an id, or a pattern with ``*`` and ``?``)."""

    match: str
    type: str
    site: str | None = None
    line: str | None = None
    parent: str | None = None
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def matches(self, asset_id: str) -> bool:
        return fnmatch.fnmatchcase(asset_id, self.match)


@dataclass(frozen=True)
class Model:
    """A validated model: typed, immutable, what the pipelines and the twin take."""

    name: str
    version: str
    asset_types: dict[str, AssetType]
    assets: tuple[AssetRule, ...] = ()
    source: str = ""

    @property
    def id(self) -> str:
        """``name@version``: what the twin's state records."""
        return f"{self.name}@{self.version}"

    def type_of(self, asset_id: str) -> str | None:
        """The declared type of ``asset_id`` (the first matching rule), or None."""
        for rule in self.assets:
            if rule.matches(asset_id):
                return rule.type
        return None

    def rule_of(self, asset_id: str) -> AssetRule | None:
        return next((r for r in self.assets if r.matches(asset_id)), None)


# -- reading files ---------------------------------------------------------------------------

def _loader():
    """PyYAML's safe loader, reading floats as YAML 1.2 does (``5.0e6`` is a number, not
    the string YAML 1.1 makes of it)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
                                      for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                     |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                     |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                     |[-+]?\.(?:inf|Inf|INF)
                     |\.(?:nan|NaN|NAN))$""", re.X),
        list("-+0123456789."))
    return Loader


def _located(node, loader, path: tuple = (), where: dict | None = None):
    """A composed YAML node as plain Python, and the line of every path in it."""
    import yaml

    where = {} if where is None else where
    where[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = {}
        for k, v in node.value:
            key = loader.construct_object(k, deep=True)
            if isinstance(key, list):
                key = tuple(key)
            where[(*path, key)] = k.start_mark.line + 1
            out[key] = _located(v, loader, (*path, key), where)[0]
        return out, where
    if isinstance(node, yaml.SequenceNode):
        return ([_located(v, loader, (*path, i), where)[0] for i, v in enumerate(node.value)],
                where)
    return loader.construct_object(node, deep=True), where


def _field(path: Iterable) -> str:
    parts = []
    for p in path:
        parts.append(f"[{p}]" if isinstance(p, int) else (("." if parts else "") + str(p)))
    return "".join(parts) or "(top level)"


def _error(source: str, where: dict, path: tuple, message: str) -> ModelError:
    path = tuple(path)
    line = None
    for k in range(len(path), -1, -1):
        if path[:k] in where:
            line = where[path[:k]]
            break
    at = f"{source}:{line}" if line else source
    return ModelError(f"{at}: {_field(path)}: {message}")


def read_document(path: str | Path) -> tuple[dict, dict]:
    """A YAML file as a mapping, and the line of each of its paths; ModelError on YAML
    syntax errors (with their line) or a document that is not a mapping."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ModelError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    loader_cls = _loader()
    try:
        node = yaml.compose(text, Loader=loader_cls)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ModelError(f"{at}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if node is None or not isinstance(node, yaml.MappingNode):
        raise ModelError(f"{path}: a model file is a mapping (model:, version:, "
                         f"asset_types:, assets:)")
    data, where = _located(node, loader_cls(""))
    return data, where


def _duration_s(text: Any, source: str, where: dict, path: tuple) -> float:
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*", str(text))
        if not m:
            raise _error(source, where, path, f"not a duration: {text!r} (try 30s, 10m, 1h)")
        scale = {"ms": 0.001, None: 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0,
                 "d": 86400.0}[m.group(2)]
        seconds = float(m.group(1)) * scale
    if seconds <= 0:
        raise _error(source, where, path, f"must be positive: {text!r}")
    return seconds


def _unit_ok(unit: str) -> bool:
    from transforms.units import _registry

    try:
        _registry()(unit)
    except Exception:  # pint raises several kinds for an unknown or malformed unit
        return False
    return True


def parse_model(data: dict, source: str = "<model>", where: dict | None = None,
                check_units: bool = True) -> Model:
    """Validate a model document and build the typed :class:`Model` (``check_units``:
    ask pint whether each unit exists; the built-in model's are tested instead, so that
    importing the catalog does not build pint's registry)."""
    import jsonschema

    where = where or {}
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path),
                                                                list(map(str, e.absolute_path))))
    if errors:
        e = errors[0]
        raise _error(source, where, tuple(e.absolute_path), _explain(e))
    types: dict[str, AssetType] = {}
    for tname, t in data["asset_types"].items():
        sensors = []
        for sname, s in t["sensors"].items():
            p = ("asset_types", tname, "sensors", sname)
            low, high = (float(x) for x in s["range"])
            if not low < high:
                raise _error(source, where, (*p, "range"),
                             f"the low end must be below the high end: {s['range']}")
            if check_units and not _unit_ok(s["unit"]):
                raise _error(source, where, (*p, "unit"),
                             f"unknown unit {s['unit']!r} (a pint unit: kelvin, bar, "
                             f"meter / second, ...)")
            if "component" in s and s["role"] != "condition":
                raise _error(source, where, (*p, "component"),
                             f"only a condition sensor watches a component; {sname!r} is "
                             f"{s['role']}")
            sensors.append(Sensor(sname, s["unit"], low, high, s["role"],
                                  s.get("component")))
        setpoint = None
        if "setpoint" in t:
            sp, p = t["setpoint"], ("asset_types", tname, "setpoint")
            names = {s.name: s for s in sensors}
            if sp["sensor"] not in names:
                raise _error(source, where, (*p, "sensor"),
                             f"{sp['sensor']!r} is not a sensor of {tname} "
                             f"({', '.join(names)})")
            if names[sp["sensor"]].role != "operating_point":
                raise _error(source, where, (*p, "sensor"),
                             f"the setpoint must be an operating_point sensor; "
                             f"{sp['sensor']!r} is {names[sp['sensor']].role}")
            lo, hi = float(sp.get("min", 0.8)), float(sp.get("max", 1.05))
            if not lo <= 1.0 <= hi:
                raise _error(source, where, p, f"min <= 1 <= max is needed (fractions of "
                                                 f"the nominal), got min {lo}, max {hi}")
            setpoint = Setpoint(sp["sensor"], lo, hi, float(sp.get("step", 0.05)),
                                _duration_s(sp.get("interval", 600), source, where,
                                            (*p, "interval")))
        if not any(s.role == "operating_point" for s in sensors):
            raise _error(source, where, ("asset_types", tname, "sensors"),
                         "at least one operating_point sensor is needed: the condition "
                         "sensors are judged given the operating point")
        types[tname] = AssetType(tname, tuple(sensors), setpoint, t.get("description", ""))
    rules = []
    for i, a in enumerate(data.get("assets", [])):
        if a["type"] not in types:
            raise _error(source, where, ("assets", i, "type"),
                         f"unknown asset type {a['type']!r} (declared: {', '.join(types)})")
        known = {s.name for s in types[a["type"]].sensors}
        for sname, rng in a.get("ranges", {}).items():
            if sname not in known:
                raise _error(source, where, ("assets", i, "ranges", sname),
                             f"not a sensor of {a['type']}")
            if not rng[0] < rng[1]:
                raise _error(source, where, ("assets", i, "ranges", sname),
                             f"the low end must be below the high end: {rng}")
        rules.append(AssetRule(a["match"], a["type"], a.get("site"), a.get("line"),
                               a.get("parent"),
                               {k: (float(v[0]), float(v[1]))
                                for k, v in a.get("ranges", {}).items()}))
    return Model(data["model"], str(data["version"]), types, tuple(rules), source)


def _explain(e) -> str:
    if e.validator == "additionalProperties":
        extra = sorted(set(e.instance) - set(e.schema.get("properties", {})))
        allowed = ", ".join(e.schema.get("properties", {}))
        return f"unknown field(s) {', '.join(map(repr, extra))} (allowed: {allowed})"
    if e.validator == "required":
        return e.message.replace("is a required property", "is missing")
    if e.validator == "enum":
        return f"{e.instance!r} is not one of {', '.join(map(str, e.validator_value))}"
    if e.validator == "pattern" and isinstance(e.instance, str):
        return f"{e.instance!r} is not a valid name (letters, digits, _; a letter first)"
    return e.message


def load_model(*paths: str | Path, check_units: bool = True) -> Model:
    """The model of one file, or of several merged (asset types and assets of every
    file; a type declared twice must be declared identically)."""
    if not paths:
        paths = (BUILTIN,)
    models = []
    for p in paths:
        data, where = read_document(p)
        models.append(parse_model(data, str(p), where, check_units))
    if len(models) == 1:
        return models[0]
    types: dict[str, AssetType] = {}
    for m in models:
        for name, t in m.asset_types.items():
            if name in types and types[name] != t:
                raise ModelError(f"{m.source}: asset type {name!r} differs from its "
                                 f"declaration in an earlier file")
            types[name] = t
    name = "+".join(m.name for m in models)
    version = "+".join(m.version for m in models)
    return Model(name, version, types, tuple(r for m in models for r in m.assets),
                 ", ".join(m.source for m in models))
