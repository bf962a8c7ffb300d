"""Where the detectors lived before :mod:`transforms.detectors`: kept so that state pickled
by earlier versions (Beam state files, Flink checkpoints) still loads.

A pickle stores a class by its module path: ``transforms.detector.DriftAwareDetector`` for
both the asset and the series detector of old, and this module's helpers for their
parts. Loading one gives the detector of today (:class:`AssetDetector` or
:class:`SeriesDetector`, by its ``asset_type``), which pickles under its new path.
"""

from __future__ import annotations

from transforms.detectors.asset import _RLS, AssetDetector, _rls_from  # noqa: F401
from transforms.detectors.base import Assessment  # noqa: F401
from transforms.detectors.series import (  # noqa: F401
    _EW,
    SERIES_CONFIG,
    SHIFT_SCORE,
    SeriesDetector,
    _Art,
    _SeriesNovelty,
    _ShiftConfirm,
    _ShiftProbe,
)


class DriftAwareDetector:
    """Loads a detector pickled before the split; never instantiated by today's code."""

    def __new__(cls, *args, **kwargs):
        if args or kwargs:
            raise TypeError("DriftAwareDetector is gone: use transforms.detectors.make("
                            "'asset' | 'series', ...)")
        return object.__new__(cls)

    def __setstate__(self, state: dict) -> None:
        if state.get("asset_type") is None:
            self.__class__ = SeriesDetector
            for key in list(state):
                if key not in _SERIES_STATE:
                    state.pop(key)
            self.__dict__.update(state)
        else:
            self.__class__ = AssetDetector
            AssetDetector.__setstate__(self, state)


_SERIES_STATE = {"warmup", "adwin_delta", "refractory", "refractory_frac", "quiet_override",
                 "n_seen", "drift_events", "_last_alarm", "_series", "_shifts", "_adwin"}
