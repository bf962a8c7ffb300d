"""The fleet simulator: the physical side of the twin and twinstream's embedded source.

Runbook
-------
>>> from transforms.simulator import Fleet, FleetConfig
>>> fleet = Fleet(FleetConfig(assets=2, duration_s=1800, seed=3, start_ms=1_795_800_000_000))
>>> [(a.asset_id, a.vendor) for a in fleet.assets]
[('pump-000', 'helios'), ('motor-001', 'kestrel')]
>>> first = next(fleet.messages())
>>> first.topic in ("twin.raw.helios", "twin.raw.kestrel"), first.value[:1]
(True, b'\\x00')

- :mod:`~transforms.simulator.scenario` decides, from the seed alone, each asset's
  operating point, its labelled fault (if any: kind, start, failure and repair times) and
  its unlabelled regime change (a load step or an ambient shift, never near a fault).
- :mod:`~transforms.simulator.physics` steps coupled pump and motor models in SI.
- :mod:`~transforms.simulator.defects` gives every sample one transport fate (clean,
  dropout, duplicate, out of order, late, malformed) and breaks malformed messages in
  ways each with a known dead-letter reason.
- :mod:`~transforms.simulator.fleet` ties them together: :meth:`Fleet.messages` (arrival
  order), :meth:`Fleet.samples` (true samples), :meth:`Fleet.ground_truth` and
  :meth:`Fleet.apply_setpoint` (the loop closed back to the assets).

Same config, same bytes: everything is seeded, nothing depends on the wall clock.
"""

from transforms.simulator.fleet import Fleet, RawMessage
from transforms.simulator.scenario import FAULTS, REGIMES, AssetSpec, FleetConfig

__all__ = ["FAULTS", "REGIMES", "AssetSpec", "Fleet", "FleetConfig", "RawMessage"]
