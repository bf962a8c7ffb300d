"""The table detector: ``twin replay``'s, for any table of numeric columns.

Two views of each row, each answering what it is good at:

- :class:`~transforms.detectors.series.SeriesDetector`, per column: is this value new
  for its column (stranger than anything it has shown, or a new pattern)? Its alarms are
  the onsets worth a person's attention, once per episode;
- :class:`~transforms.detectors.joint.JointDetector`, across columns: is the row's state
  abnormal for how the columns move together, now? Calibrated, so its verdict has a stated
  false-alarm rate and holds for as long as the abnormal state does.

A row's ``score`` is the larger of the two views' (the joint state's ``1 - p``, or a
column's novelty evidence when it alarms); ``is_anomaly`` is the joint state's calibrated
verdict (about ``false_alarm_rate`` of in-control rows); ``alarm`` is the onset of an
episode: a column's novelty alarm, with its own refractory period. A change in how the
columns move together that makes no column new shows in ``is_anomaly`` and ``score``, not
as an alarm. With one column the joint state is that column's z and its exponentially
weighted average, so the same configuration serves a single series and a plant of fifty
sensors.
"""

from __future__ import annotations

from transforms.detectors.base import Assessment, Detector
from transforms.detectors.joint import JointDetector
from transforms.detectors.series import SeriesDetector


class TableDetector(Detector):
    """Per-column novelty and the columns' joint state, one row a step.

    Parameters
    ----------
    warmup
        Rows learned before any verdict (the joint state needs ``3`` per column too).
    false_alarm_rate
        Share of in-control rows the joint state judges abnormal.
    memory
        Rows the joint state's model remembers; a state abnormal for longer is a regime
        change the model restarts from.
    """

    def __init__(self, warmup: int = 150, false_alarm_rate: float = 0.01,
                 memory: int = 1000) -> None:
        self.warmup = warmup
        self.false_alarm_rate = false_alarm_rate
        self.memory = memory
        self.series = SeriesDetector(warmup=warmup)
        self.joint = JointDetector(warmup=warmup, false_alarm_rate=false_alarm_rate,
                                   memory=memory)

    def _get_params(self) -> dict:
        return {"warmup": self.warmup, "false_alarm_rate": self.false_alarm_rate,
                "memory": self.memory}

    @property
    def n_seen(self) -> int:
        return self.series.n_seen

    @property
    def drift_events(self) -> int:
        return self.series.drift_events + self.joint.drift_events

    @property
    def change_started(self) -> dict[str, int]:
        return {**self.joint.change_started, **self.series.change_started}

    def assess(self, x: dict[str, float]) -> Assessment:
        """Score one row; no learning."""
        s, j = self.series.assess(x), self.joint.assess(x)
        if s.warming_up:
            return Assessment(0.0, False, True, False, terms=(s, j))
        novel = s.is_anomaly
        if novel and (s.score >= j.score or not j.is_anomaly):
            contributors, weights = s.contributors, []
        else:
            contributors, weights = j.contributors, j.weights
        return Assessment(
            score=max(j.score, s.score if novel else 0.0),
            is_anomaly=j.is_anomaly,
            warming_up=False,
            drift=False,
            contributors=contributors if (novel or j.is_anomaly) else [],
            weights=weights if (novel or j.is_anomaly) else [],
            max_z=j.max_z,
            alarm=novel,
            terms=(s, j),
        )

    def alarm_strength(self, a: Assessment) -> float:
        """How sure an alarm is, in (0.5, 1]; 0 without one (the novelty view's evidence)."""
        return a.terms[0].score if a.alarm else 0.0

    def learn_one(self, x: dict[str, float], assessment: Assessment | None = None) -> list[str]:
        """Learn from one row; returns the columns whose level changed or whose joint
        state was confirmed as a new regime (maybe none)."""
        s, j = assessment.terms if assessment is not None and assessment.terms else (None, None)
        drifted = self.series.learn_one(x, s)
        for c in self.joint.learn_one(x, j):
            if c not in drifted:
                drifted.append(c)
        return drifted
