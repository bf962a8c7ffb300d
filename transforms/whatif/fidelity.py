"""The twin's running fidelity: how well its models predict each new window before
learning it, and what they keep missing.

Each scored window, before the detector learns it, its residual models predict the
window's condition sensors from the window's process sensors (:meth:`~transforms.
detectors.asset.AssetDetector.explain`). :class:`Fidelity` follows two figures of those
predictions, exponentially averaged over about ``1 / fading`` windows:

- ``error``: the median over condition sensors of the relative error, ``|observed -
  predicted| / |observed|``, a temperature taken as its rise over ambient (a relative
  error of an absolute temperature would flatter: 3 K is 1 % of 300 K but 12 % of a 25 K
  rise);
- ``coverage``: the share of condition sensors inside their 90 % prediction interval.

A faithful twin keeps ``error`` small and ``coverage`` near 0.9; a twin whose asset has
changed (a fault, a rebuild, a new duty) shows it here first. It also follows each
condition sensor's residual (Holt's level and trend, SI units): what a developing fault
adds to what the operating point explains, which a what-if carries forward while an
alert is open.

It also keeps the largest leverage (``u' P u``) of the windows the models were asked to
predict, fading slowly: a what-if whose inputs lie beyond it is an extrapolation (the
textbook test for hidden extrapolation in regression: a new point's leverage above the
largest of the data's).

>>> fid = Fidelity()
>>> for i in range(200):
...     e, c = fid.update({"vibration": (3.0e-3, 3.0e-3 * (1 + 0.01 * (-1) ** i), 6e-5, 0.1)})
>>> round(e, 3), round(c, 2)
(0.01, 1.0)
"""

from __future__ import annotations

import math
from statistics import NormalDist, median

Z90 = NormalDist().inv_cdf(0.95)  # half-width of a central 90 % interval, in spreads


def clipped_variance_factor(clip: float, rounds: int = 50) -> float:
    """What a mean of squared Gaussian residuals, each clipped at ``clip`` times the
    running spread it feeds, settles at, as a share of the true variance: the fixed point
    ``k = E[min(Z², clip² k)]`` (the consistency factor of robust scale estimators). The
    detector's residual variances are such means, so a prediction interval divides them
    by it."""
    k = 1.0
    nd = NormalDist()
    for _ in range(rounds):
        c = clip * math.sqrt(k)
        tail = 2 * nd.cdf(-c)
        k = (1 - tail) - 2 * c * nd.pdf(c) + c * c * tail
    return k


class Fidelity:
    """Running fidelity of an asset's models and the residuals they leave (module docs).

    Parameters
    ----------
    fading
        Weight of the newest window in the running figures.
    level_alpha, trend_beta
        Holt's weights for the residuals' level and trend.
    clip
        The detector's residual clip (its residual variances are clipped means).
    leverage_decay
        Per window, the largest leverage seen is multiplied by this before the window's
        is compared with it (memory about ``1 / (1 - leverage_decay)`` windows).
    """

    def __init__(self, fading: float = 0.02, level_alpha: float = 0.2,
                 trend_beta: float = 0.05, clip: float = 2.0,
                 leverage_decay: float = 0.999) -> None:
        self.fading = fading
        self.leverage_decay = leverage_decay
        self.max_leverage = 0.0
        self.level_alpha = level_alpha
        self.trend_beta = trend_beta
        self.clip = clip
        self.error: float | None = None
        self.coverage: float | None = None
        self.windows = 0
        self.resid_level: dict[str, float] = {}
        self.resid_trend: dict[str, float] = {}
        self.health_err_var: float | None = None
        self._kappa = clipped_variance_factor(clip)

    def update(self, explained: dict[str, tuple[float, float, float, float]]
               ) -> tuple[float | None, float | None]:
        """Fold in one window's ``{sensor: (observed, predicted, spread, leverage)}`` (SI;
        spread as the detector divides by); returns the running ``(error, coverage)``."""
        if not explained:
            return self.error, self.coverage
        rel, inside = [], []
        top = max(v[3] for v in explained.values())
        self.max_leverage = max(self.max_leverage * self.leverage_decay, top)
        for s, (obs, pred, sd, _) in explained.items():
            r = obs - pred
            rel.append(abs(r) / max(abs(obs), 1e-12))
            inside.append(1.0 if abs(r) <= Z90 * sd / math.sqrt(self._kappa) else 0.0)
            level = self.resid_level.get(s)
            if level is None:
                self.resid_level[s], self.resid_trend[s] = r, 0.0
            else:
                trend = self.resid_trend[s]
                new = self.level_alpha * r + (1 - self.level_alpha) * (level + trend)
                self.resid_trend[s] = (self.trend_beta * (new - level)
                                       + (1 - self.trend_beta) * trend)
                self.resid_level[s] = new
        err, cov = median(rel), sum(inside) / len(inside)
        self.windows += 1
        f = max(self.fading, 1.0 / self.windows)
        self.error = err if self.error is None else (1 - f) * self.error + f * err
        self.coverage = cov if self.coverage is None else (1 - f) * self.coverage + f * cov
        return self.error, self.coverage

    def health_step(self, predicted: float | None, actual: float) -> None:
        """The health forecaster's one-window-ahead error (for its forecast's interval)."""
        if predicted is None:
            return
        e2 = (actual - predicted) ** 2
        v = self.health_err_var
        self.health_err_var = e2 if v is None else (1 - self.fading) * v + self.fading * e2

    def export(self) -> dict:
        return {"error": self.error, "coverage": self.coverage, "windows": self.windows,
                "resid_level": dict(self.resid_level), "resid_trend": dict(self.resid_trend),
                "health_err_var": self.health_err_var, "kappa": self._kappa,
                "max_leverage": self.max_leverage, "level_alpha": self.level_alpha,
                "trend_beta": self.trend_beta}
