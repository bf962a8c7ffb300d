"""The canonical sensor catalog: the asset types the twin knows, from asset model files.

Every adapter maps its own tags and units onto these names; everything downstream of
normalization (windows, features, models, policy) only ever sees canonical names and
values in the catalog's units. Ranges are physical plausibility bounds, not alarm limits:
a value outside them is a broken reading (dead letter ``out_of_range``), not an anomaly.

The catalog starts with the built-in fleet's model (``transforms/models/fleet.yaml``:
pumps and motors); :func:`use` adds the asset types of a user's model
(:mod:`transforms.model`). The lookups below are plain dicts, updated in place, so the hot
path reads them as before; engine bindings call :func:`use` in each worker before the
first reading (a model travels with the job as a typed :class:`~transforms.model.Model`).
"""

from __future__ import annotations

from dataclasses import dataclass

from transforms.model import BUILTIN, AssetType, Model, ModelError, Sensor, load_model

__all__ = ["ASSET_TYPES", "RANGES", "ROLES", "SETPOINTS", "SI_UNIT", "SI_UNITS", "Roles",
           "Sensor", "active_model", "component", "component_sensors", "roles", "sensor",
           "sensors_of", "use"]


@dataclass(frozen=True)
class Roles:
    """How the detector treats an asset type's sensors (:mod:`transforms.model`)."""

    process: frozenset[str]  # operating point and exogenous: inputs of the residual models
    exogenous: frozenset[str]  # inputs nothing on the asset explains: never targets
    condition: frozenset[str]  # only ever explained


# asset type -> its sensors in model order (the column order of its value matrices)
ASSET_TYPES: dict[str, tuple[Sensor, ...]] = {}
# asset type -> sensor -> (low, high)
RANGES: dict[str, dict[str, tuple[float, float]]] = {}
# asset type -> sensor -> unit
SI_UNIT: dict[str, dict[str, str]] = {}
# every unit a canonical value is kept in
SI_UNITS: set[str] = set()
ROLES: dict[str, Roles] = {}
# asset type -> its setpoint (None: the twin commands nothing)
SETPOINTS: dict[str, object] = {}
_MODELS: list[Model] = []


def use(model: Model) -> None:
    """Add ``model``'s asset types to the catalog (idempotent; a type of the same name must
    be declared identically: two meanings of one name would make outputs ambiguous)."""
    for name, t in model.asset_types.items():
        known = ASSET_TYPES.get(name)
        if known is not None and (known != t.sensors or SETPOINTS.get(name) != t.setpoint):
            raise ModelError(f"{model.source}: asset type {name!r} is already declared "
                             f"differently (by {_owner(name)})")
        _register(t)
    if model in _MODELS:
        _MODELS.remove(model)
    _MODELS.append(model)


def _owner(type_name: str) -> str:
    return next((m.id for m in _MODELS if type_name in m.asset_types), "?")


def _register(t: AssetType) -> None:
    ASSET_TYPES[t.name] = t.sensors
    RANGES[t.name] = {s.name: (s.low, s.high) for s in t.sensors}
    SI_UNIT[t.name] = {s.name: s.unit for s in t.sensors}
    SI_UNITS.update(s.unit for s in t.sensors)
    ROLES[t.name] = Roles(
        process=frozenset(s.name for s in t.sensors if s.role != "condition"),
        exogenous=frozenset(s.name for s in t.sensors if s.role == "exogenous"),
        condition=frozenset(s.name for s in t.sensors if s.role == "condition"))
    SETPOINTS[t.name] = t.setpoint


def active_model(asset_type: str) -> Model | None:
    """The model ``asset_type`` was last declared by (its id goes into the twin's state:
    a new version of a model, used, is the one twins learn under from then on)."""
    return next((m for m in reversed(_MODELS) if asset_type in m.asset_types), None)


def sensors_of(asset_type: str) -> tuple[Sensor, ...]:
    """The canonical sensors of ``asset_type``; ``KeyError`` if the type is unknown."""
    return ASSET_TYPES[asset_type]


def sensor(asset_type: str, name: str) -> Sensor:
    """Look up one canonical sensor by asset type and name; ``KeyError`` if unknown."""
    for s in ASSET_TYPES[asset_type]:
        if s.name == name:
            return s
    raise KeyError(f"{asset_type}.{name}")


def roles(asset_type: str) -> Roles:
    """The roles of ``asset_type``'s sensors; ``KeyError`` if the type is unknown."""
    return ROLES[asset_type]


def component(asset_type: str, name: str) -> str | None:
    """The component the condition sensor ``name`` of ``asset_type`` watches (its model
    says, ``component:``), or None; ``KeyError`` for an unknown sensor."""
    return sensor(asset_type, name).component


def component_sensors(asset_type: str, part: str) -> tuple[Sensor, ...]:
    """The condition sensors of ``asset_type`` that watch component ``part``."""
    return tuple(s for s in sensors_of(asset_type) if s.component == part)


use(load_model(BUILTIN, check_units=False))
