"""What if the asset were run differently? The twin's learned models, rolled forward.

The library call other tools use (the dashboard, notebooks, ``twin whatif``)::

    from transforms.whatif import whatif
    result = whatif(state, {"steps": [{"set": {"speed": "-10%"}, "from": "+30m"}]})

``state`` is a twin (:class:`~transforms.twin.AssetTwin`), a model document
(:func:`~transforms.whatif.model.snapshot`, or a state record's ``learned`` JSON), or a state
record carrying one; the scenario a :class:`~transforms.whatif.scenario.Scenario` or its
document (``None``: the baseline alone). The result is a JSON-serialisable dict
(:func:`~transforms.whatif.rollforward.roll_forward`). The method and its limits:
``docs/what-if.md``.

Modules: :mod:`.scenario` (parsing and checks), :mod:`.operating` (how the operating point
moves), :mod:`.fidelity` (the twin's running fidelity), :mod:`.model` (the models as one
document), :mod:`.life` (life laws), :mod:`.rollforward` (the roll-forward),
:mod:`.optimize` (recommended setpoints).
"""

from __future__ import annotations

from typing import Any

from transforms.whatif.model import ModelError, from_states, loads, snapshot
from transforms.whatif.scenario import Scenario, ScenarioError, parse_scenario

__all__ = ["ModelError", "Scenario", "ScenarioError", "document", "from_states",
           "parse_scenario", "whatif"]


def document(state: Any) -> dict[str, Any]:
    """The model document of ``state`` (a twin, a model document, a state record with a
    ``learned`` document, or that record's JSON)."""
    if hasattr(state, "detector") and hasattr(state, "asset_id"):
        return snapshot(state)
    if isinstance(state, str | bytes):
        return loads(state)
    if isinstance(state, dict):
        if "version" in state and "detector" in state:
            return loads(state)
        if "learned" in state:
            if not state["learned"]:
                raise ModelError(f"state record of {state.get('asset_id')} carries no model "
                                 f"(only every learned_every-th record does): use the latest "
                                 f"record that does, or from_states over the records")
            return loads(state["learned"])
    raise ModelError(f"cannot read a twin's models from a {type(state).__name__}")


def whatif(state: Any, scenario: Scenario | dict[str, Any] | None = None, *,
           resolution_s: float | None = None) -> dict[str, Any]:
    """Roll the asset of ``state`` forward under ``scenario`` and without it (module
    docs); a JSON-serialisable dict."""
    from transforms.whatif.rollforward import roll_forward

    doc = document(state)
    if scenario is None:
        scenario = Scenario()
    elif isinstance(scenario, dict):
        scenario = parse_scenario(scenario, doc["asset_type"])
    else:
        from transforms.whatif.scenario import settable

        known = settable(doc["asset_type"])
        wrong = [s for s in scenario.sensors() if s not in known]
        if wrong:
            raise ScenarioError(f"{doc['asset_id']} is a {doc['asset_type']}: it has no "
                                f"{', '.join(wrong)} to set (settable: "
                                f"{', '.join(sorted(known))})")
    return roll_forward(doc, scenario, resolution_s)
