"""Unit conversion: cached affine factors derived from pint."""

from __future__ import annotations

import math

import pytest

from transforms import units
from transforms.catalog import ASSET_TYPES
from transforms.errors import InvalidReading


@pytest.mark.parametrize(
    ("value", "unit", "si_unit", "expected"),
    [
        (212.0, "degF", "kelvin", 373.15),
        (32.0, "degF", "kelvin", 273.15),
        (-40.0, "degF", "kelvin", 233.15),
        (100.0, "degC", "kelvin", 373.15),
        (300.0, "K", "kelvin", 300.0),
        (100.0, "psi", "pascal", 689475.7293168361),
        (1.0, "bar", "pascal", 1.0e5),
        (101.325, "kPa", "pascal", 101325.0),
        (1.0, "in/s", "meter / second", 0.0254),
        (4.5, "mm/s", "meter / second", 0.0045),
        (3600.0, "m3/h", "meter ** 3 / second", 1.0),
        (1.0, "gpm", "meter ** 3 / second", 3.785411784e-3 / 60),
        (1000.0, "l/s", "meter ** 3 / second", 1.0),
        (60.0, "rpm", "radian / second", 2 * math.pi),
        (1.0, "Hz", "radian / second", 2 * math.pi),
        (1.0, "lbf*ft", "newton * meter", 1.3558179483314004),
        (5.0, "N*m", "newton * meter", 5.0),
        (2.0, "kV", "volt", 2000.0),
        (7.0, "A", "ampere", 7.0),
    ],
)
def test_to_si(value, unit, si_unit, expected):
    assert units.to_si(value, unit, si_unit) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("unit", sorted(units.SPELLINGS))
def test_from_si_inverts_to_si(unit):
    for si_unit in {s.unit for ss in ASSET_TYPES.values() for s in ss}:
        try:
            units.factors(unit, si_unit)
        except InvalidReading:
            continue
        assert units.to_si(units.from_si(123.456, unit, si_unit), unit, si_unit) == (
            pytest.approx(123.456, rel=1e-12)
        )


def test_every_vendor_spelling_converts_to_exactly_one_catalog_unit():
    """(The built-in fleet's units: a user's model may keep values in degC beside kelvin.)"""
    from transforms.model import BUILTIN, load_model

    builtin = load_model(BUILTIN, check_units=False)
    si_units = {s.unit for t in builtin.asset_types.values() for s in t.sensors}
    assert si_units == {s.unit for t in ("pump", "motor") for s in ASSET_TYPES[t]}
    for unit in list(units.BUILTIN_SPELLINGS):
        ok = []
        for si in si_units:
            try:
                units.factors(unit, si)
                ok.append(si)
            except InvalidReading:
                pass
        assert len(ok) == 1, (unit, ok)


def test_factors_are_affine_and_exact_for_decimal_units():
    assert units.factors("l/s", "meter ** 3 / second") == (0.001, 0.0)
    assert units.factors("degC", "kelvin") == (1.0, 273.15)
    scale, offset = units.factors("degF", "kelvin")
    assert scale == pytest.approx(5 / 9, rel=1e-15) and offset == pytest.approx(255.3722222222)


def test_factors_are_cached():
    units.factors("psi", "pascal")
    before = units._factors.cache_info().hits
    units.factors("psi", "pascal")
    assert units._factors.cache_info().hits == before + 1


@pytest.mark.parametrize(
    ("unit", "si_unit"),
    [
        ("psi", "kelvin"),  # wrong dimension
        ("rpm", "meter / second"),
        ("A", "volt"),
        ("degF", "pascal"),
        ("furlong", "meter / second"),  # pint knows it, we do not accept it
        ("%", "kelvin"),
        ("", "kelvin"),
        ("m3/h", "no such unit"),
        ("__import__('os')", "kelvin"),
    ],
)
def test_unknown_or_wrong_dimension_is_unknown_unit(unit, si_unit):
    with pytest.raises(InvalidReading) as err:
        units.to_si(1.0, unit, si_unit)
    assert err.value.reason == "unknown_unit"
    assert repr(unit) in err.value.detail or repr(si_unit) in err.value.detail


def test_failures_are_not_cached():
    size = units._factors.cache_info().currsize
    for i in range(50):
        with pytest.raises(InvalidReading):
            units.factors(f"junk{i}", "kelvin")
    assert units._factors.cache_info().currsize == size


def test_non_string_unit():
    with pytest.raises(InvalidReading) as err:
        units.factors(None, "kelvin")
    assert err.value.reason == "unknown_unit"
