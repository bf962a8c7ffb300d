"""The joint detector: is this row unusual for how the columns move *together*?

A change in how sensors move together is invisible to any one column judged against its
own history: each stays in its range while their relation breaks. Multivariate
statistical process control answers it with a model of the columns' joint normal state
(their mean and covariance) and two charts of the distance from it:

1. **Hotelling's T²** of the row, ``(x - μ)' S⁻¹ (x - μ)``: a row far from the normal
   state in any direction, including the low-variance directions where a broken relation
   shows (which a per-column view and a principal-subspace T² both miss). Its limit is the
   Phase II one for a mean and covariance estimated from ``n`` rows,
   ``p (n + 1)(n - 1) / (n (n - p)) F(p, n - p)``, so a young model is not over-trusted.
2. **MEWMA** (Lowry et al. 1992): the same distance of an exponentially weighted average of
   the rows' deviations (weight ``rate`` on the newest): small persistent shifts that no
   single row shows add up. Real data are autocorrelated, which the textbook limit
   ignores, so its tail is learned from its own in-control values
   (:class:`~transforms.detectors.calibration.ExponentialTail`).

The row's tail probability is the smaller of the two, Bonferroni-corrected; ``score`` is
one minus it, and ``is_anomaly`` is ``p < false_alarm_rate``: on in-control data about
that share of rows is flagged, whatever the data. A **frozen** column (the same value
repeated far longer than any run it showed while normal: a stuck transmitter, a held
analyser) makes the row abnormal too.

What the model learns from, so that a persistent fault does not become the new normal:
rows that are not abnormal and whose T² is below its median (``keep``), the covariance
corrected for that truncation as robust MCD estimators are (a Gaussian truncated at a
Mahalanobis radius has a known, smaller covariance). A slow drift's rows soon stop being
typical and stop being learned. The model's memory is ``memory`` rows (exponential
forgetting after a growing-window start); a state abnormal for longer than that memory is a
confirmed regime change: the model starts again from it (warm-up included) and the row
where the state began is reported as a change point.

Columns are fixed by the first row; later rows may miss any of them (their deviation is
taken as 0 when scoring, and such rows are not learned).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special, stats

from transforms.detectors.base import Assessment, Detector
from transforms.detectors.calibration import ExponentialTail


class JointDetector(Detector):
    """Multivariate state detector for a table of numeric columns (one row a step).

    Parameters
    ----------
    warmup
        Rows learned before any verdict, at least three per column (``max(warmup, 3 d)``).
    false_alarm_rate
        Share of in-control rows judged abnormal (``is_anomaly``).
    rate
        Weight of the newest row in the MEWMA (0.1: a memory of about 20 rows).
    memory
        Rows the normal-state model remembers (exponential forgetting beyond them); also
        how long an abnormal state must last to be taken as the new normal.
    keep
        Rows are learned only when their T² is below this quantile of its distribution.
    frozen_factor
        A column repeating one value for more than this many times its longest normal
        run (and at least ``frozen_min`` rows) is frozen.
    frozen_min
        See ``frozen_factor``.
    """

    INVERT_EVERY = 25  # learned rows between refreshes of the inverse covariance
    RIDGE = 1e-3  # of each variance, added before inverting (a constant column stays finite)

    def __init__(self, warmup: int = 150, false_alarm_rate: float = 0.01, rate: float = 0.1,
                 memory: int = 1000, keep: float = 0.5, frozen_factor: float = 3.0,
                 frozen_min: int = 10) -> None:
        self.warmup = warmup
        self.false_alarm_rate = false_alarm_rate
        self.rate = rate
        self.memory = memory
        self.keep = keep
        self.frozen_factor = frozen_factor
        self.frozen_min = frozen_min
        # learned state, built on first use
        self.n_seen = 0
        self.drift_events = 0
        self._columns: list[str] | None = None
        # step at which the latest confirmed regime change began, per column
        self.change_started: dict[str, int] = {}
        self._reset_model()

    def _reset_model(self) -> None:
        self._n = 0  # rows in the model (since the last regime change)
        self._mu: np.ndarray | None = None
        self._S: np.ndarray | None = None
        self._inv: np.ndarray | None = None
        self._since_inv = 0
        self._w: np.ndarray | None = None
        self._tail = ExponentialTail()
        self._abnormal_run = 0
        self._last: np.ndarray | None = None
        self._runs: np.ndarray | None = None
        self._longest: np.ndarray | None = None
        self._frozen_bar: np.ndarray | None = None

    # -- helpers ------------------------------------------------------------------------
    def _vector(self, x: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        if self._columns is None:
            self._columns = [c for c, v in x.items() if _number(v)]
        get = x.get
        v = np.fromiter((_as_float(get(c)) for c in self._columns), float,
                        len(self._columns))
        ok = np.isfinite(v)
        return v, ok

    def _warm(self) -> int:
        return max(self.warmup, 3 * len(self._columns or ()))

    def _consistency(self) -> float:
        """What truncation at the ``keep`` quantile does to a Gaussian's covariance."""
        d = len(self._columns or ())
        q = stats.chi2.ppf(self.keep, d)
        return float(stats.chi2.cdf(q, d + 2) / stats.chi2.cdf(q, d))

    def _refresh(self) -> None:
        """The inverse of the model's covariance, corrected for the truncation of what it
        learned (the whole estimate is taken as learned from typical rows, the warm-up's
        included: slightly conservative while young), each variance floored at
        ``RIDGE`` of itself (a constant column, or a sample covariance's near-zero
        eigenvalues, must not make T² infinite)."""
        S = self._S / self._consistency_factor
        floor = (1e-6 * (np.abs(self._mu) + 1e-6)) ** 2  # a constant column's resolution
        S = S + np.diag(self.RIDGE * np.diag(S) + floor)
        self._inv = np.linalg.pinv(S, hermitian=True)
        self._since_inv = 0

    def _limit_scale(self) -> tuple[float, int]:
        d = len(self._columns)
        n = min(self._n, self.memory)
        dof = max(n - d, 1)
        return d * (n + 1) * (n - 1) / (n * dof), dof

    # -- the protocol -------------------------------------------------------------------
    def assess(self, x: dict[str, float]) -> Assessment:
        """Score one row; no learning."""
        v, ok = self._vector(x)
        if self._n < self._warm() or self._mu is None:
            return Assessment(0.0, False, True, False, terms=(self.n_seen, None))
        if self._inv is None or self._since_inv >= self.INVERT_EVERY:
            self._refresh()
        e = np.where(ok, v - self._mu, 0.0)
        Se = self._inv @ e
        t2 = float(e @ Se)
        scale, dof = self._limit_scale()
        d = len(e)
        p_t2 = float(special.fdtrc(d, dof, max(t2, 0.0) / scale))
        w = (1.0 - self.rate) * self._w + self.rate * e
        Sw = self._inv @ w
        m2 = float(w @ Sw) * (2.0 - self.rate) / self.rate if self.rate > 0 else 0.0
        p_m = self._tail.p(m2) if self._tail.n >= 200 and self.rate > 0 else 1.0
        p = min(1.0, (2.0 if self.rate > 0 else 1.0) * min(p_t2, p_m))
        # frozen columns: a run of one value far beyond the longest seen while normal
        runs = np.where(ok & (v == self._last), self._runs + 1, 0)
        frozen = bool((runs > self._frozen_bar).any())
        abnormal = p < self.false_alarm_rate or frozen
        names: list[str] = []
        weights: list[float] = []
        if frozen:
            names = [f"{self._columns[i]}.frozen"
                     for i in np.flatnonzero(runs > self._frozen_bar)]
            weights = [1.0 / len(names)] * len(names)
        elif abnormal:
            contrib = e * Se if p_t2 <= p_m else w * Sw  # the deciding chart's decomposition
            total = float(contrib[contrib > 0].sum()) or 1.0
            order = np.argsort(-contrib)[:3]
            names = [self._columns[i] for i in order if contrib[i] > 0]
            weights = [round(float(contrib[i]) / total, 3) for i in order if contrib[i] > 0]
        return Assessment(
            score=1.0 - p, is_anomaly=abnormal, warming_up=False, drift=False,
            contributors=names, weights=weights, max_z=math.sqrt(max(t2, 0.0)),
            terms=(self.n_seen, (v, ok, e, w, p_t2, m2, runs, frozen)))

    def learn_one(self, x: dict[str, float], assessment: Assessment | None = None) -> list[str]:
        """Learn from one row; returns the columns of a confirmed regime change (the model
        starts again) or nothing."""
        a = assessment if assessment is not None and assessment.terms is not None \
            and assessment.terms[0] == self.n_seen else self.assess(x)
        self.n_seen += 1
        cache = a.terms[1]
        if cache is None:  # warming up: every complete row is learned
            v, ok = self._vector(x)
            self._track_runs(v, ok, None, learn=True)
            if ok.all():
                self._update(v)
            return []
        v, ok, e, w, p_t2, m2, runs, frozen = cache
        self._w = w
        if 2.0 * p_t2 >= self.false_alarm_rate and not frozen:
            # the MEWMA's in-control distribution: every row whose T² is in control (its
            # own verdict would cut the tail it is calibrated on, and lower the limit)
            self._tail.add(m2)
        if a.is_anomaly:
            self._track_runs(v, ok, runs, learn=False)
            self._abnormal_run += 1
            if self._abnormal_run > self.memory:  # outlasted the model's memory
                self.drift_events += 1
                began = self.n_seen - self._abnormal_run
                self.change_started = dict.fromkeys(self._columns, began)
                self._reset_model()
                return list(self._columns)
            return []
        self._abnormal_run = 0
        self._track_runs(v, ok, runs, learn=True)
        if ok.all() and p_t2 >= 1.0 - self.keep:
            self._update(v)
        return []

    # -- learning -------------------------------------------------------------------------
    def _update(self, v: np.ndarray) -> None:
        if self._mu is None:
            d = len(v)
            self._mu, self._S = v.copy(), np.zeros((d, d))
            self._w = np.zeros(d)
            self._consistency_factor = self._consistency()
            self._n = 1
            return
        self._n += 1
        a = max(1.0 / self._n, 1.0 / self.memory)
        e = v - self._mu
        self._mu = self._mu + a * e
        self._S = (1.0 - a) * (self._S + a * np.outer(e, e))
        self._since_inv += 1

    def _track_runs(self, v: np.ndarray, ok: np.ndarray, runs: np.ndarray | None,
                    learn: bool) -> None:
        """Runs of one repeated value per column; a run that ends while the row is normal
        counts towards the column's longest (a run still going never raises its own
        bar)."""
        if self._last is None:
            self._last, self._runs = v.copy(), np.zeros(len(v))
            self._longest = np.zeros(len(v))
            self._frozen_bar = np.full(len(v), float(self.frozen_min))
            return
        if runs is None:
            same = ok & (v == self._last)
            runs = np.where(same, self._runs + 1, 0)
        if learn:
            ended = ok & (runs == 0)
            self._longest = np.where(ended, np.maximum(self._longest, self._runs),
                                     self._longest)
            self._frozen_bar = np.maximum(self.frozen_factor * self._longest, self.frozen_min)
        self._runs = runs
        self._last = np.where(ok, v, self._last)


def _as_float(v) -> float:
    """A cell as a float: NaN for anything that is not a finite number (missing)."""
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _number(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and v == v and abs(v) != math.inf
