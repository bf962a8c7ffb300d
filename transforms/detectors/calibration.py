"""How rare is a statistic's value? Its tail, learned online from in-control values.

A monitoring statistic whose distribution has no usable closed form (a MEWMA of
autocorrelated data, any statistic of non-Gaussian data) is calibrated against its own
past values while the process was in control: below the ``q`` quantile of those values the
tail probability is the empirical one; above it, the excesses are modelled as exponential
(the peaks-over-threshold approach of extreme value theory, as in Siffer et al., "Anomaly
detection in streams with extreme value theory", KDD 2017, with the shape fixed at 0). So a
limit far in the tail comes from the data's own spread, whatever its units or shape.
"""

from __future__ import annotations

import math

import numpy as np


class ExponentialTail:
    """The tail of a statistic, from its last ``keep`` in-control values.

    >>> import random
    >>> rng = random.Random(0)
    >>> tail = ExponentialTail()
    >>> for _ in range(2000):
    ...     tail.add(rng.expovariate(1.0))
    >>> round(tail.p(0.0), 2), 0.005 < tail.p(math.log(100)) < 0.02
    (1.0, True)
    """

    def __init__(self, keep: int = 1000, q: float = 0.9, refit: int = 25) -> None:
        self.keep, self.q, self.refit = keep, q, refit
        self.values = np.zeros(keep)
        self.n = 0
        self.threshold: float | None = None
        self.scale = 0.0
        self._sorted = np.empty(0)

    def add(self, value: float) -> None:
        """Take one in-control value."""
        self.values[self.n % self.keep] = value
        self.n += 1
        if self.n % self.refit == 0 or self.n < 4 * self.refit:
            self._fit()

    def _fit(self) -> None:
        v = np.sort(self.values[:min(self.n, self.keep)])
        if len(v) < 20:
            return
        u = float(v[min(int(self.q * len(v)), len(v) - 1)])
        excess = v[v > u] - u
        self.threshold = u
        self.scale = float(excess.mean()) if len(excess) else 0.0
        self._sorted = v

    @property
    def ready(self) -> bool:
        return self.threshold is not None

    def p(self, value: float) -> float:
        """Probability that an in-control value is at least ``value`` (1 before any fit)."""
        if self.threshold is None:
            return 1.0
        if value <= self.threshold:
            above = len(self._sorted) - np.searchsorted(self._sorted, value, side="left")
            return max(float(above) / len(self._sorted), 1.0 - self.q)
        if self.scale <= 0.0:
            return 0.0
        return (1.0 - self.q) * math.exp(-(value - self.threshold) / self.scale)
