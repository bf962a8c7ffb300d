"""Vendor unit strings -> the catalog's SI units, as cached affine factors.

pint knows every unit the vendors use, but converting one value through pint costs tens of
microseconds. A unit conversion between two linear scales is affine, so this module asks
pint once per ``(vendor unit, SI unit)`` pair for ``(scale, offset)`` and afterwards applies
``value * scale + offset``, which is a multiply and an add.

Only the spellings in :data:`SPELLINGS` (plus the catalog's own SI spellings) are accepted.
The unit strings arrive inside untrusted payloads, so they are never handed to pint's parser
directly: an allowlist keeps the factor cache bounded and keeps garbage out of pint.
Anything else, or a unit of the wrong dimension (``"psi"`` for a temperature), raises
:class:`~transforms.errors.InvalidReading` with reason ``unknown_unit``.

>>> round(to_si(212.0, "degF", "kelvin"), 9)
373.15
>>> round(to_si(60.0, "rpm", "radian / second"), 6)
6.283185
>>> factors("bar", "pascal")
(100000.0, 0.0)
"""

from __future__ import annotations

from functools import cache
from typing import Any

from transforms.catalog import SI_UNITS
from transforms.errors import InvalidReading
from transforms.validate import show

# Vendor spelling -> pint expression. Written out where pint's parser needs help
# ("m3/h", "in/s", "gpm") or where pint's own reading would be wrong for our use: a shaft
# speed in "Hz" means revolutions per second (1 Hz = 2*pi rad/s), whereas pint treats the
# radian as dimensionless and would convert 1 Hz to 1 rad/s.
SPELLINGS: dict[str, str] = {
    # temperature
    "K": "kelvin",
    "degC": "degree_Celsius",
    "°C": "degree_Celsius",
    "degF": "degree_Fahrenheit",
    "°F": "degree_Fahrenheit",
    # pressure
    "Pa": "pascal",
    "kPa": "kilopascal",
    "MPa": "megapascal",
    "bar": "bar",
    "mbar": "millibar",
    "psi": "pound_force_per_square_inch",
    # volumetric flow
    "m3/s": "meter ** 3 / second",
    "m3/h": "meter ** 3 / hour",
    "l/s": "liter / second",
    "l/min": "liter / minute",
    "gpm": "gallon / minute",  # pint's gallon is the US liquid gallon (231 in^3)
    # vibration velocity
    "m/s": "meter / second",
    "mm/s": "millimeter / second",
    "in/s": "inch / second",
    # shaft speed
    "rad/s": "radian / second",
    "rpm": "revolution / minute",
    "Hz": "revolution / second",
    # electrical
    "A": "ampere",
    "mA": "milliampere",
    "kA": "kiloampere",
    "V": "volt",
    "kV": "kilovolt",
    # torque
    "N*m": "newton * meter",
    "kN*m": "kilonewton * meter",
    "lbf*ft": "pound_force * foot",
    "ft*lbf": "pound_force * foot",
}

# The catalog's unit spellings are accepted as-is (identity or SI-to-SI conversion).
_SI_UNITS = SI_UNITS  # the catalog's live set: a model registered later adds its units


@cache
def _registry() -> Any:
    """The pint unit registry, built on first use (it takes ~0.2 s)."""
    import pint

    return pint.UnitRegistry()


def _expression(unit: str) -> str:
    if unit in SPELLINGS:
        return SPELLINGS[unit]
    if unit in _SI_UNITS:
        return unit
    raise InvalidReading("unknown_unit", f"unit {show(unit)} is not a known vendor unit")


@cache
def _factors(unit: str, si_unit: str) -> tuple[float, float]:
    import pint

    ureg = _registry()
    src = _expression(unit)
    if si_unit not in _SI_UNITS:
        raise InvalidReading("unknown_unit", f"target {show(si_unit)} is not a catalog SI unit")
    try:
        offset = float(ureg.Quantity(0.0, src).to(si_unit).magnitude)
        if offset == 0.0:
            scale = float(ureg.Quantity(1.0, src).to(si_unit).magnitude)
        else:  # offset scale (degC, degF): difference over a wide span keeps the digits
            scale = (float(ureg.Quantity(1000.0, src).to(si_unit).magnitude) - offset) / 1000.0
    except pint.DimensionalityError as exc:
        raise InvalidReading(
            "unknown_unit", f"unit {show(unit)} cannot be converted to {show(si_unit)}"
        ) from exc
    return _snap(scale), _snap(offset)


def _snap(x: float) -> float:
    """Undo pint's last-digit noise on decimal factors (1 l/s = 0.0010000000000000002 m3/s).

    A factor within 1e-14 (relative) of a 12-digit decimal is that decimal; others (5/9,
    psi) are kept to the last bit.
    """
    short = float(f"{x:.12g}")
    return short if abs(short - x) <= 1e-14 * abs(x) else x


BUILTIN_SPELLINGS = frozenset(SPELLINGS)  # the vendors' (declare_unit adds formats' units)


def declare_unit(unit: str) -> None:
    """Accept ``unit`` (a pint expression a format file declares) as a source unit;
    ``InvalidReading("unknown_unit")`` if pint does not know it."""
    if unit in SPELLINGS or unit in _SI_UNITS:
        return
    try:
        _registry()(unit)
    except Exception as exc:  # pint raises several kinds for an unknown unit
        raise InvalidReading("unknown_unit", f"unit {show(unit)} is not a pint unit") from exc
    SPELLINGS[unit] = unit


def factors(unit: str, si_unit: str) -> tuple[float, float]:
    """The affine ``(scale, offset)`` with ``si = value * scale + offset``.

    Parameters
    ----------
    unit
        Vendor unit spelling, a key of :data:`SPELLINGS` or a catalog SI spelling.
    si_unit
        The catalog's SI unit of the sensor (:attr:`transforms.catalog.Sensor.unit`).

    Raises
    ------
    InvalidReading
        ``unknown_unit`` if ``unit`` is not known or has the wrong dimension.
    """
    # Only known spellings reach the cache: failures are raised, never stored, so the cache
    # holds at most len(SPELLINGS) * len(SI units) entries whatever the payloads contain.
    if not isinstance(unit, str):
        raise InvalidReading("unknown_unit", f"unit {show(unit)} is not a string")
    return _factors(unit, si_unit)


def to_si(value: float, unit: str, si_unit: str) -> float:
    """Convert ``value`` in vendor ``unit`` to the catalog's ``si_unit``.

    >>> to_si(100.0, "psi", "pascal")
    689475.7293168...
    """
    scale, offset = factors(unit, si_unit)
    return value * scale + offset


def from_si(value: float, unit: str, si_unit: str) -> float:
    """Inverse of :func:`to_si`: express an SI ``value`` in vendor ``unit`` (for encoders).

    >>> round(from_si(373.15, "degC", "kelvin"), 9)
    100.0
    """
    scale, offset = factors(unit, si_unit)
    return (value - offset) / scale
