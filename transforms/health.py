"""Health index, its forecast and a remaining-useful-life estimate for one asset.

The health index turns the detector's unexplained deviation (largest z-score of a window)
into a number between 1 (healthy) and 0 (failed): ``exp(-excess / scale)`` where
``excess`` is the smoothed deviation above what a healthy asset shows. Holt's linear
(double exponential) smoothing follows the index; its trend extrapolated to
``failure_level`` gives the remaining useful life. (River's ``HoltWinters`` would fit,
but its instances do not survive a pickle round trip in River 0.23, and engine state
must; Holt's two update lines are written out here instead.)

>>> h = HealthForecaster(window_s=60, horizon_windows=30)
>>> for z in [1.0] * 10 + [3.0 + 0.5 * i for i in range(20)]:
...     hi, fc, rul = h.update(z)
>>> round(hi, 2) < 0.5, fc < hi, rul is not None and rul > 0
(True, True, True)
"""

from __future__ import annotations

import math


class HealthForecaster:
    """Health index, forecast and remaining useful life from per-window deviation.

    Parameters
    ----------
    window_s
        Seconds per window (converts forecast steps to seconds).
    horizon_windows
        Forecast horizon in windows.
    healthy_z
        Deviation a healthy asset shows anyway (not counted against health).
    scale_z
        Deviation above ``healthy_z`` that takes the index to ``1/e``.
    smoothing
        Weight of the newest window in the smoothed deviation.
    failure_level
        Health index at which the asset is considered failed.
    max_rul_s
        Longest remaining useful life reported; beyond it, ``None`` (no trend to speak of).
    """

    def __init__(
        self,
        window_s: float = 60.0,
        horizon_windows: int = 60,
        healthy_z: float = 3.0,
        scale_z: float = 6.0,
        smoothing: float = 0.3,
        failure_level: float = 0.1,
        max_rul_s: float = 30 * 86_400.0,
        alpha: float = 0.3,
        beta: float = 0.1,
    ) -> None:
        self.window_s = window_s
        self.horizon_windows = horizon_windows
        self.healthy_z = healthy_z
        self.scale_z = scale_z
        self.smoothing = smoothing
        self.failure_level = failure_level
        self.max_rul_s = max_rul_s
        self.alpha = alpha
        self.beta = beta
        self.excess = 0.0
        self.health = 1.0
        self.level: float | None = None
        self.trend = 0.0
        self._n = 0

    def update(self, max_z: float) -> tuple[float, float, float | None]:
        """Fold in one window's deviation; returns ``(health, forecast, rul_s)``."""
        excess = max(0.0, max_z - self.healthy_z)
        self.excess += self.smoothing * (excess - self.excess)
        self.health = math.exp(-self.excess / self.scale_z)
        if self.level is None:
            self.level = self.health
        else:
            prev = self.level
            self.level = self.alpha * self.health + (1 - self.alpha) * (prev + self.trend)
            self.trend = self.beta * (self.level - prev) + (1 - self.beta) * self.trend
        self._n += 1
        if self._n < 3:
            return self.health, self.health, None
        level, trend = self.level, self.trend
        forecast = min(1.0, max(0.0, level + trend * self.horizon_windows))
        if self.health <= self.failure_level:
            return self.health, forecast, 0.0
        if trend >= 0:
            return self.health, forecast, None
        steps = (level - self.failure_level) / -trend
        rul = max(0.0, steps * self.window_s)
        return self.health, forecast, (rul if rul <= self.max_rul_s else None)

    def reset(self) -> None:
        """Forget the degradation history (after maintenance)."""
        self.excess, self.health, self.level, self.trend, self._n = 0.0, 1.0, None, 0.0, 0
