"""Asset model files: the built-in fleet's, a user's, and the errors bad ones get."""

from __future__ import annotations

import textwrap

import pytest

from transforms import catalog
from transforms.model import BUILTIN, ModelError, load_model

COMPRESSOR = """\
model: plant-a
version: 3
asset_types:
  compressor:
    sensors:
      p_bar: {unit: bar, range: [0, 20], role: operating_point}
      amps:  {unit: ampere, range: [0, 500], role: operating_point}
      t_c:   {unit: degC, range: [-40, 200], role: condition}
      vib:   {unit: millimeter / second, range: [0, 50], role: condition}
assets:
  - {match: "comp-*", type: compressor, site: plant-a, line: air}
"""


def write(tmp_path, text, name="model.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_the_builtin_model_is_what_the_catalog_holds():
    m = load_model(BUILTIN)
    assert m.id == "builtin-fleet@1" and set(m.asset_types) == {"pump", "motor"}
    assert [s.name for s in m.asset_types["pump"].sensors] == [
        "flow", "discharge_pressure", "suction_pressure", "motor_current", "bearing_temp",
        "vibration", "speed", "ambient_temp"]
    assert catalog.sensors_of("motor") == m.asset_types["motor"].sensors
    r = catalog.roles("pump")
    assert r.exogenous == {"ambient_temp"} and r.condition == {"bearing_temp", "vibration"}
    assert "ambient_temp" in r.process and "speed" in r.process
    assert catalog.SETPOINTS["pump"].sensor == "speed"
    assert m.type_of("pump-007") == "pump" and m.type_of("fan-1") is None
    for t in m.asset_types.values():  # the catalog skips pint's check at import: do it here
        load_model(BUILTIN, check_units=True)
        assert all(s.low < s.high for s in t.sensors)


def test_a_users_model_registers_its_types(tmp_path):
    m = load_model(write(tmp_path, COMPRESSOR))
    assert m.id == "plant-a@3" and m.type_of("comp-7") == "compressor"
    assert m.rule_of("comp-7").site == "plant-a"
    catalog.use(m)
    catalog.use(m)  # idempotent
    assert catalog.RANGES["compressor"]["p_bar"] == (0.0, 20.0)
    assert catalog.roles("compressor").condition == {"t_c", "vib"}
    assert catalog.SETPOINTS["compressor"] is None  # nothing to command
    assert catalog.active_model("compressor") is m


@pytest.mark.parametrize("edit, where, says", [
    (("p_bar: {unit: bar, range: [0, 20], role: operating_point}",
      "p_bar: {unit: bar, range: [20, 0], role: operating_point}"),
     ":6: asset_types.compressor.sensors.p_bar.range", "low end must be below"),
    (("unit: degC", "unit: degrees_of_fun"),
     ":8: asset_types.compressor.sensors.t_c.unit", "unknown unit 'degrees_of_fun'"),
    (("role: condition}\n      vib", "role: conditon}\n      vib"),
     ":8: asset_types.compressor.sensors.t_c.role", "'conditon' is not one of"),
    (("type: compressor, site", "type: compresor, site"),
     ":11: assets[0].type", "unknown asset type 'compresor' (declared: compressor)"),
    (("      vib:   {unit", "      vib:   {units: x, unit"),
     ":9: asset_types.compressor.sensors.vib", "unknown field(s) 'units'"),
    (("version: 3\n", ""), ":1: (top level)", "'version' is missing"),
])
def test_bad_model_files_name_file_line_and_field(tmp_path, edit, where, says):
    old, new = edit
    assert old in COMPRESSOR
    path = write(tmp_path, COMPRESSOR.replace(old, new))
    with pytest.raises(ModelError) as err:
        load_model(path)
    assert str(err.value).startswith(f"{path}{where}: ") and says in str(err.value)


def test_a_setpoint_must_be_an_operating_point_within_its_bounds(tmp_path):
    text = COMPRESSOR.replace("assets:", "    setpoint: {sensor: vib, min: 0.8}\nassets:")
    with pytest.raises(ModelError, match=r":10: asset_types.compressor.setpoint.sensor: "
                                         r"the setpoint must be an operating_point sensor"):
        load_model(write(tmp_path, text))
    text = COMPRESSOR.replace("assets:", "    setpoint: {sensor: amps, min: 1.1}\nassets:")
    with pytest.raises(ModelError, match="min <= 1 <= max"):
        load_model(write(tmp_path, text))


def test_yaml_errors_and_a_redeclared_type(tmp_path):
    with pytest.raises(ModelError, match=r"model.yaml:3: not valid YAML"):
        load_model(write(tmp_path, "model: x\nversion: 1\nasset_types: {a: [}\n"))
    with pytest.raises(ModelError, match="a model file is a mapping"):
        load_model(write(tmp_path, "- just a list\n"))
    clash = COMPRESSOR.replace("range: [0, 20]", "range: [0, 30]").replace("plant-a", "b")
    with pytest.raises(ModelError, match="asset type 'compressor' differs"):
        load_model(write(tmp_path, COMPRESSOR), write(tmp_path, clash, "other.yaml"))
    catalog.use(load_model(write(tmp_path, COMPRESSOR)))
    with pytest.raises(ModelError, match="already declared differently"):
        catalog.use(load_model(write(tmp_path, clash, "other.yaml")))


def test_condition_sensors_say_which_component_they_watch(tmp_path):
    assert [s.name for s in catalog.component_sensors("motor", "winding")] == ["winding_temp"]
    assert catalog.component("pump", "vibration") == "bearing"
    assert catalog.component("pump", "flow") is None
    with pytest.raises(KeyError):
        catalog.component("pump", "nope")
    m = load_model(write(tmp_path, COMPRESSOR.replace("role: condition}",
                                                      "role: condition, component: bearing}")))
    assert [s.component for s in m.asset_types["compressor"].sensors] == [
        None, None, "bearing", "bearing"]
    bad = COMPRESSOR.replace("role: operating_point}\n      amps",
                             "role: operating_point, component: bearing}\n      amps")
    with pytest.raises(ModelError, match=r":6: asset_types.compressor.sensors.p_bar."
                                         r"component: only a condition sensor"):
        load_model(write(tmp_path, bad))
    with pytest.raises(ModelError, match="'gearbox' is not one of"):
        load_model(write(tmp_path, COMPRESSOR.replace("role: condition}",
                                                      "role: condition, component: gearbox}")))
