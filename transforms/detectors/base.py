"""What every detector is: a narrow protocol, its assessment, and River-style settings.

A detector scores one step (a window of an asset's features, or a row of a table) before
it learns from it:

- :meth:`Detector.assess` judges a step and changes nothing;
- :meth:`Detector.learn_one` learns it (given the step's assessment, so nothing is computed
  twice) and returns what drifted;
- :meth:`Detector.score_one` is ``assess(x).score``.

An :class:`Assessment` carries three answers with three meanings: ``score``, how abnormal
the step is *now* (monotone in severity, high for as long as an abnormal state lasts);
``is_anomaly``, whether the step is abnormal by the detector's own calibrated limit; and
``alarm``, whether an *episode* of abnormal steps starts here (what pages a person, once
per episode; see :mod:`transforms.detectors.alarm`).

Settings are stored under their own names by ``__init__`` (so :meth:`Detector.clone`
rebuilds a fresh detector with the same settings), learned state starts empty and is built
on first use, and a detector pickles (Beam and Flink keep it in state).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Assessment:
    """What a detector concluded about one step."""

    score: float
    is_anomaly: bool
    warming_up: bool
    drift: bool
    drift_sensors: list[str] = field(default_factory=list)
    contributors: list[str] = field(default_factory=list)
    max_z: float = 0.0
    # the onset of an episode (set by detectors that keep an alarm rule)
    alarm: bool = False
    # how much each contributor weighs (its share of the evidence, largest first)
    weights: list[float] = field(default_factory=list)
    # series mode: each column's views, so learn_one need not recompute them
    views: dict[str, list[float] | None] = field(default_factory=dict, repr=False)
    # series mode: each column's pattern-change probe, likewise
    shifts: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    # intermediates valid for the same step and detector state (learn_one reuses them)
    terms: tuple | None = field(default=None, repr=False, compare=False)


def tail_probability(z: float, n_terms: int) -> float:
    """Bonferroni tail probability of the largest of ``n_terms`` Gaussian |z|-scores.

    >>> round(tail_probability(3.0, 1), 5), round(tail_probability(3.0, 10), 4)
    (0.0027, 0.027)
    """
    return min(1.0, n_terms * math.erfc(min(abs(z), 60.0) / math.sqrt(2.0)))


class Detector:
    """Base of the detectors: the protocol and River's conventions for settings."""

    def assess(self, x: dict[str, float]) -> Assessment:  # pragma: no cover - protocol
        raise NotImplementedError

    def learn_one(self, x: dict[str, float],
                  assessment: Assessment | None = None) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    def score_one(self, x: dict[str, float]) -> float:
        """The step's anomaly score in [0, 1] (no learning)."""
        return self.assess(x).score

    def _get_params(self) -> dict[str, Any]:
        """The settings ``__init__`` took, by name (River's convention)."""
        return {name: getattr(self, name)
                for name in inspect.signature(type(self).__init__).parameters
                if name != "self"}

    def clone(self) -> Detector:
        """A new detector with the same settings and nothing learned."""
        return type(self)(**self._get_params())
