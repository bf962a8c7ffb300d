"""A drift-aware anomaly detector for one asset, fed one window of features at a time.

Why this shape
--------------
An industrial asset's sensors move together when its *operating point* moves (load,
speed, weather); they move apart when something breaks. So the detector does not ask
"is this value unusual?" but "is this value unusual *given the operating point*?":

1. **Targets**: every sensor but the exogenous ones (:data:`~transforms.catalog.
   EXOGENOUS_SENSORS`, the weather). Temperatures are taken as their *rise over
   ambient*, the quantity friction and copper loss set, so a hot afternoon or a season
   change moves no target.
2. **Scaling** (River ``StandardScaler``, learned during warm-up, then frozen) puts
   every window mean on a common scale.
3. **Residual models**: each target's window mean is predicted from the *process* sensors
   (operating point, :data:`transforms.catalog.PROCESS_SENSORS`) of this window and their
   exponential average over the last few windows (thermal lag), by recursive least
   squares with slow forgetting. Condition sensors (vibration, bearing and winding
   temperature) are only ever targets, so wear cannot explain itself away.
4. **Noise models**: the log spread of each sensor around its in-window trend, against its
   own running baseline. A stuck sensor (zero spread) or cavitation (broadband noise)
   shows here even when means look fine; a temperature ramping after a load change does
   not.
5. **Score**: the largest absolute z-score among all terms, turned into a Bonferroni tail
   probability over the number of terms; ``anomaly_score = 1 - p`` lies in [0, 1] and has
   the same meaning for every asset and sensor count.
6. **Drift**: an abrupt operating-point jump (window-to-window change of a process mean
   far beyond its usual step) is a *drift event* that triggers adaptation: for
   ``adapt_windows`` windows the residual models learn unconditionally with faster
   forgetting while mean residuals are left out of the score, so a regime change re-fits
   the model instead of paging anyone. Noise terms stay in, so a fault arriving with the
   jump (cavitation drops suction pressure) still shows. A gradual drift of the operating
   point (River ``ADWIN`` per process mean, checked every ``adwin_clock`` windows) and any
   drift of the weather are reported,
   not adapted to: the residual models already explain operating-point moves, and
   re-learning on every slow wander would teach them a slowly developing fault.
7. **Learning gate**: outside adaptation, models learn only from windows that score below
   ``learn_below``: a developing fault is not learned as the new normal.

Score before learn: :meth:`score_one` never changes state; :meth:`learn_one` does.
Cost per window, independent of the readings in it: one RLS covariance update of
``1 + 3k`` inputs for ``k`` regressors (each with its two lagged averages), shared by all
targets (the covariance depends only on the inputs), a weight update per target, and an
ADWIN update per process sensor (whose check for a change, which grows with the history,
runs every ``adwin_clock`` windows).

>>> import random
>>> rng = random.Random(1)
>>> det = DriftAwareDetector("pump", warmup=20)
>>> def window(vib=0.004):
...     load = 0.6 + rng.gauss(0, 0.02)
...     means = {"flow": 0.05 * load, "discharge_pressure": 4e5 - 1e5 * load,
...              "suction_pressure": 1.5e5 - 2e4 * load, "motor_current": 40 + 30 * load,
...              "bearing_temp": 320 + 10 * load, "vibration": vib, "speed": 155.0,
...              "ambient_temp": 293.0}
...     f = {}
...     for k, v in means.items():
...         f[k + ".mean"] = v * (1 + rng.gauss(0, 0.002))
...         f[k + ".std"] = abs(v) * 0.02 * (1 + rng.gauss(0, 0.2))
...     return f
>>> for _ in range(60):
...     _ = det.learn_one(window())
>>> det.score_one(window()) < 0.99
True
>>> det.score_one(window(vib=0.008)) > 0.999
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from river import drift, preprocessing

from transforms.catalog import EXOGENOUS_SENSORS, PROCESS_SENSORS, sensors_of
from transforms.features import FEATURE_KEY


@dataclass
class Assessment:
    """What :meth:`DriftAwareDetector.assess` concluded about one window."""

    score: float
    is_anomaly: bool
    warming_up: bool
    drift: bool
    drift_sensors: list[str] = field(default_factory=list)
    contributors: list[str] = field(default_factory=list)
    max_z: float = 0.0
    # series mode: each column's views, so learn_one need not recompute them
    views: dict[str, list[float] | None] = field(default_factory=dict, repr=False)
    # series mode: each column's pattern-change probe (:class:`_ShiftConfirm`), likewise
    shifts: dict[str, _ShiftProbe] = field(default_factory=dict, repr=False, compare=False)
    # asset mode: the terms' intermediates, valid for the same features and detector state
    terms: tuple | None = field(default=None, repr=False, compare=False)


class _RLS:
    """Recursive least squares with exponential forgetting (one target).

    The covariance ``P`` depends only on the inputs and the forgetting, not on the
    target: models of one asset fed the same inputs hold the same ``P``, and share one
    array (never changed in place), so an update's gain and next covariance are computed
    once for all of them (:meth:`step`). Pickled as weights and covariance, so a pickle
    of the detector keeps one copy of a shared covariance.
    """

    __slots__ = ("w", "P")

    def __init__(self, dim: int, delta: float = 100.0, ridge: float = 1.0) -> None:
        # prior covariance: a free intercept, slopes shrunk towards zero (inputs are scaled
        # and collinear; a ridge spreads the weight instead of fitting warm-up noise)
        self.w = np.zeros(dim)
        self.P = np.eye(dim) / ridge
        self.P[0, 0] = delta

    def __reduce__(self):
        return _rls_from, (self.w, self.P)

    def __setstate__(self, state: dict) -> None:  # a pickle from before __slots__
        for k, v in state.items():
            setattr(self, k, v)

    def sibling(self) -> _RLS:
        """A new model of another target that shares this one's covariance (valid while
        this one's weights are still the prior's, zero: both then hold the same state)."""
        model = _RLS.__new__(_RLS)
        model.w = np.zeros(len(self.w))
        model.P = self.P
        return model

    def predict(self, u: np.ndarray) -> float:
        return float(self.w @ u)

    def leverage(self, u: np.ndarray) -> float:
        """``u' P u``: how far ``u`` lies from what the model has seen (extrapolation)."""
        return float(u @ self.P @ u)

    def step(self, u: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
        """The gain and the next covariance of an update with input ``u``: the same for
        every model holding this ``P``."""
        Pu = self.P @ u
        k = Pu / (lam + u @ Pu)
        P = self.P - k[:, None] * Pu  # np.outer's values, without its wrapper
        P /= lam
        # keep P symmetric and bounded (numerical hygiene for long runs); in place where
        # the values are those of 0.5 * (P + P.T) and np.clip
        sym = P + P.T
        sym *= 0.5
        np.minimum(sym, 1e6, out=sym)
        np.maximum(sym, -1e6, out=sym)
        return k, sym

    def update(self, u: np.ndarray, y: float, lam: float,
               step: tuple[np.ndarray, np.ndarray] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Learn ``y`` at ``u``; ``step``: :meth:`step` of this ``P``, ``u`` and ``lam``
        if already computed (for a model sharing ``P``). Returns the step taken."""
        k, P = step if step is not None else self.step(u, lam)
        self.w += k * (y - self.w @ u)
        self.P = P
        return k, P


def _rls_from(w: np.ndarray, P: np.ndarray | None = None) -> _RLS:
    """A pickled model: weights and covariance, or (older pickles) one packed array."""
    model = _RLS.__new__(_RLS)
    if P is not None:
        model.w, model.P = w, P
        return model
    packed = w
    dim = int(round((-1 + math.sqrt(1 + 4 * len(packed))) / 2))  # dim + dim**2 numbers
    model.w = packed[:dim].copy()
    model.P = packed[dim:].reshape(dim, dim).copy()
    return model


# Series mode's one configuration (``twin replay``, the NAB benchmark, any table): 150
# rows to lay out the value bins and find each column's scale before scoring. The
# pattern-change channel's settings are the class constants of _ShiftConfirm and _Art.
SERIES_CONFIG = {"warmup": 150}

_MEAN, _STD, _RSTD = FEATURE_KEY["mean"], FEATURE_KEY["std"], FEATURE_KEY["rstd"]

SHIFT_SCORE = 0.99  # series mode: the score of a confirmed pattern change (an alarm)
RESID_CLIP = 2.0  # residuals beyond this many spreads count as this many in the spread


class _EW:
    """Exponentially weighted mean and variance (running mean until ``1/n < alpha``)."""

    __slots__ = ("alpha", "n", "mean", "var")

    def __init__(self, alpha: float) -> None:
        self.alpha, self.n, self.mean, self.var = alpha, 0, 0.0, 0.0

    def z(self, x: float, floor: float) -> float:
        return 0.0 if self.n < 2 else (x - self.mean) / math.sqrt(self.var + floor)

    def add(self, x: float) -> None:
        self.n += 1
        a = max(self.alpha, 1.0 / self.n)
        d = x - self.mean
        self.mean += a * d
        self.var = (1 - a) * (self.var + a * d * d)


class _SeriesNovelty:
    """How new one value of one series is, against that series' own history.

    Four views of the value, each a non-negative "strangeness":

    - ``level``: |z| against a slow exponential mean/variance (memory ~1,000 steps);
    - ``local``: |z| against a fast one (~50 steps): a jump relative to the recent level;
    - ``rarity``: -log of the share of history in the value's bin, neighbouring bins
      counting half (bins sized from the warm-up range, unbounded beyond it): a level never
      or seldom visited, whatever its distance from the mean (multi-modal signals,
      flat-lines inside the normal range), while a slow drift into the next bin is not new;
    - ``smooth``: |z| of a slow smoothing of the value (a sustained shift hidden in noise).

    The evidence of a value is its *record ratios*: each view's strangeness over the largest
    that view has ever produced on this series, raised by the view's margin. A ratio above 1
    is a value clearly stranger than anything seen before, whatever the series' noise,
    tails or units, so one scale serves every series. After a change the new extreme is the
    record: the same change does not alarm twice, and the fast views re-centre within tens
    of steps.

    Margins: a z view must beat its record by ``RECORD_MARGIN`` over the square root of
    the values it averages (25 % for ``level`` and ``local``, one value each; 4 % for
    ``smooth``, ~39 values). A record of a single heavy-tailed value is broken by a
    sliver again and again as history grows (a spiky or bursty series' noise, not a
    change); a record of an average moves less, so a smaller excess already counts.
    ``rarity`` has the same drift: the share of a bin visited once shrinks as history
    grows, so a revisit much later is "rarer than ever"; a bin already visited (count
    at least 1, neighbours counting half) must beat the rarity record by ``RECORD_MARGIN``
    too. A bin never visited has no margin: it beats the last such record only by the slow
    growth of history (a ratio of ~1.01), and a level never seen is the view's whole
    point. The margins remove false positives of noisy columns without losing changes of
    level.
    """

    VIEWS = ("level", "local", "rarity", "smooth")
    NEIGHBOUR = 0.5  # weight of the two adjacent bins in a bin's count
    RECORD_MARGIN = 0.25  # a z view beats its record by this over sqrt(values averaged)

    def __init__(self, warmup: int, slow: float = 0.001, fast: float = 0.02,
                 smooth: float = 0.05, bins: int = 20) -> None:
        self.warmup, self.bins, self.smooth_alpha = warmup, bins, smooth
        self.n = 0
        self.slow, self.fast = _EW(slow), _EW(fast)
        self.smoothed = 0.0
        self.first: list[float] | None = []  # warm-up values, until the bins are laid out
        self.lo = self.width = 0.0
        self.hist: dict[int, float] = {}
        self.total = 0.0
        self.records = [0.0] * len(self.VIEWS)
        averaged = (2.0 - smooth) / smooth  # effective values in the exponential smoothing
        one = 1.0 + self.RECORD_MARGIN
        avg = 1.0 + self.RECORD_MARGIN / math.sqrt(averaged)
        self.margins = (one, one, one, avg)  # level, local, rarity, smooth
        self.margins_new_bin = (one, one, 1.0, avg)  # ... for a value in a bin never visited

    def _bin(self, x: float) -> int:
        return math.floor((x - self.lo) / self.width)

    def _count(self, x: float) -> float:
        """Visits to ``x``'s bin so far, the two adjacent bins counting ``NEIGHBOUR``."""
        b, h = self._bin(x), self.hist
        return h.get(b, 0.0) + self.NEIGHBOUR * (h.get(b - 1, 0.0) + h.get(b + 1, 0.0))

    def views(self, x: float) -> list[float] | None:
        """Strangeness of ``x`` in each view; ``None`` while warming up (no state change)."""
        if self.first is not None:
            return None
        floor = (1e-3 * math.sqrt(self.slow.var)) ** 2 + 1e-12
        sm = (1 - self.smooth_alpha) * self.smoothed + self.smooth_alpha * x
        count = self._count(x)
        return [abs(self.slow.z(x, floor)), abs(self.fast.z(x, floor)),
                -math.log((count + 0.5) / (self.total + 0.5)),
                abs(self.slow.z(sm, floor))]

    def ratios(self, views: list[float], x: float) -> tuple[float, float, int]:
        """Largest and second-largest record ratio of ``x`` (with the views' margins), and
        the view of the largest."""
        best = second = 0.0
        arg = 0
        margins = self.margins if self._count(x) >= 1.0 else self.margins_new_bin
        for k, (v, rec, m) in enumerate(zip(views, self.records, margins, strict=True)):
            r = v / (rec * m) if rec > 0 else 0.0
            if r > best:
                best, second, arg = r, best, k
            elif r > second:
                second = r
        return best, second, arg

    def learn(self, x: float, views: list[float] | None) -> None:
        if views is not None:
            self.records = [max(r, v) for r, v in zip(self.records, views, strict=True)]
        self.slow.add(x)
        self.fast.add(x)
        sa = self.smooth_alpha
        self.smoothed = x if self.n == 0 else (1 - sa) * self.smoothed + sa * x
        self.n += 1
        if self.first is None:
            b = self._bin(x)
            self.hist[b] = self.hist.get(b, 0.0) + 1.0
            self.total += 1.0
            return
        self.first.append(x)
        if self.n >= self.warmup:  # lay the bins out over the warm-up range
            lo, hi = min(self.first), max(self.first)
            self.lo = lo
            self.width = (hi - lo) / self.bins if hi > lo else abs(lo) * 0.01 + 1e-6
            for y in self.first:
                b = self._bin(y)
                self.hist[b] = self.hist.get(b, 0.0) + 1.0
            self.total = float(len(self.first))
            self.first = None


def refractory_rows(rows: int, frac: float, seen: int) -> float:
    """Series mode's refractory period after an alarm: ``rows``, or ``frac`` of the steps
    seen once that is longer (an episode in a long series lasts longer in steps)."""
    return max(rows, frac * seen)


class _Art:
    """Online fuzzy-ART memory of the *shapes* of one series: is the stretch ending here one
    it has seen before? (An original compact implementation after ARTime's design.)

    Every ``BLOCK`` rows become one value (the block extreme farther from a running
    average, so a spike survives), normalised by the range of the first ``SPAN`` rows with
    headroom (no look-ahead; later values may leave it) and quantised to ``LEVELS`` levels.
    The last ``WINDOW`` such values form the input: their min-max normalised Haar transform
    (the shape) and the levels themselves (the position), complement coded. An input
    matching a category by at least the vigilance ``rho`` refines it; otherwise it founds
    a new one (at most ``CATEGORIES``, the least recently used is replaced). Novelty is
    ``1 - best match``; ``bar`` is the adaptive novelty bar (ARTime's vigilance adaptation
    every ``ADAPT`` inputs) above which a new category is a novelty event.
    """

    BLOCK, WINDOW, LEVELS, SPAN, CATEGORIES = 6, 8, 80, 300, 200
    P, Q = 3.0, 2.0  # match = (whole-input overlap)^P * (current-value overlap)^Q
    ADAPT, UP, UB_CAP, ANOM_KEPT = 52, 0.19, 0.97, 20

    def __init__(self, rho: float = 0.9, lower: float = 0.7) -> None:
        self.rho, self.bar = rho, 1.0 - lower
        self.n = 0
        self.lo, self.hi = math.inf, -math.inf
        self.span: tuple[float, float] | None = None  # the range, once SPAN rows are seen
        self.block: list[float] = []
        self.avg: float | None = None
        self.window: list[float] = []
        self.W = np.ones((8, 4 * self.WINDOW))  # categories (rows), grown on demand
        self.used = np.zeros(8)  # input count at each category's last use
        self.size = np.ones(8)  # |W_j| (match denominators, kept with W)
        self.cur_size = np.ones(8)  # |W_j| over the current level and its complement
        self.nc = self.t = 0
        self.match_sum, self.match_n = 0.0, 0
        self.recent: list[float] = []  # last 2*ADAPT best matches
        self.novel: list[float] = []  # best matches of the last novelty events

    def probe(self, x: float) -> tuple | None:
        """What ``x`` does (no state change): ``None`` if it does not end a block, else
        ``(avg, span, window, input, j, best, overlap_j)``, the input fields ``None``
        while the window fills and ``j`` ``None`` for the very first input."""
        if len(self.block) + 1 < self.BLOCK:
            return None
        b = [*self.block, x]
        mean, mx, mn = sum(b) / len(b), max(b), min(b)
        avg = mean if self.avg is None else 0.5 * (self.avg + mean)
        down = mn if abs(mx - avg) < abs(mn - avg) else mx
        span = self.span
        lo, hi = span or (min(self.lo, x), max(self.hi, x))
        if span is None and self.n + 1 >= self.SPAN:
            span = (lo, hi)
        r = (hi - lo) or (abs(hi) * 0.01 + 1e-6)
        y = round(min(1.0, max(0.0, ((down - lo) / r + 0.5) / 2.0)) * self.LEVELS) / self.LEVELS
        window = [*self.window[1 - self.WINDOW:], y]
        if len(window) < self.WINDOW:
            return avg, span, window, None, None, None, None
        m0 = min(window)
        m1 = max(window) - m0
        shape = _haar([(u - m0) / m1 for u in window] if m1 > 0 else [0.0] * self.WINDOW)
        f0 = min(shape)
        f1 = max(shape) - f0
        f = ([(u - f0) / f1 for u in shape] if f1 > 0 else [0.0] * self.WINDOW) + window
        inp = np.array(f + [1.0 - u for u in f])
        if self.nc == 0:
            return avg, span, window, inp, None, None, None
        em = np.minimum(self.W[:self.nc], inp)
        e = 2 * self.WINDOW - 1  # the current level, and its complement at -1
        cur = (em[:, e] + em[:, -1]) / self.cur_size[:self.nc]
        m = (em.sum(1) / self.size[:self.nc]) ** self.P * cur ** self.Q
        j = int(np.argmax(m))
        return avg, span, window, inp, j, float(m[j]), em[j]

    @staticmethod
    def novelty(p: tuple | None) -> float | None:
        return None if p is None or p[4] is None else 1.0 - p[5]

    def learn(self, x: float, p: tuple | None) -> None:
        self.n += 1
        if self.span is None:
            self.lo, self.hi = min(self.lo, x), max(self.hi, x)
        if p is None:
            self.block.append(x)
            return
        self.block = []
        self.avg, self.span, self.window, inp, j, best, overlap = p
        if inp is None:
            return
        self.t += 1
        if j is not None and best >= self.rho:
            self.W[j] = overlap
        else:
            if self.nc < self.CATEGORIES:
                j = self.nc
                self.nc += 1
                if self.nc > len(self.W):  # double the arrays, up to CATEGORIES rows
                    g = min(len(self.W), self.CATEGORIES - len(self.W))
                    self.W, self.used, self.size, self.cur_size = (
                        np.concatenate([a, np.ones((g, *a.shape[1:]))])
                        for a in (self.W, self.used, self.size, self.cur_size))
            else:
                j = int(np.argmin(self.used))
            self.W[j] = inp
        self.used[j] = self.t
        w, e = self.W[j], 2 * self.WINDOW - 1
        self.size[j] = float(w.sum()) or 1e-3
        self.cur_size[j] = w[e] + w[-1] + 1e-12
        if best is not None:
            self._adapt(best)

    def _adapt(self, best: float) -> None:
        """ARTime's vigilance adaptation: every ADAPT inputs, rho follows the mean match
        and the novelty bar rises while matches stay high, falls when they scatter."""
        self.match_sum += best
        self.match_n += 1
        self.recent = [*self.recent[1 - 2 * self.ADAPT:], best]
        if 1.0 - best > self.bar:
            self.novel = [*self.novel[1 - self.ANOM_KEPT:], best]
        if self.match_n % self.ADAPT:
            return
        ub = min(self.UB_CAP, self.match_sum / self.match_n)
        lb = 1.0 - self.bar
        low = min(self.recent[-(self.ADAPT // 2):])
        if lb <= low:
            lb += (low - lb) * self.UP
        else:
            d = [min(0.37, ub - a) for a in self.recent if ub - a > 0.05]
            lb -= max(0.01, sum(d) / len(d) if d else 0.0) / 2
            if self.novel:
                lb = max(lb, sum(self.novel) / len(self.novel))
        self.rho, self.bar = ub, 1.0 - min(lb, ub)


def _haar(a: list[float]) -> list[float]:
    """Orthonormal Haar transform (length a power of two): coarse average first."""
    out: list[float] = []
    c = 0.7071067811865476
    while len(a) > 1:
        out = [(a[2 * k] - a[2 * k + 1]) * c for k in range(len(a) // 2)] + out
        a = [(a[2 * k] + a[2 * k + 1]) * c for k in range(len(a) // 2)]
    return a + out


class _ShiftProbe(NamedTuple):
    """What one value does to a :class:`_ShiftConfirm` (computed by ``assess``, applied by
    ``learn_one``)."""

    art: tuple | None
    armed: int  # row of the latest shape novelty, including this one
    sums: tuple[float, float, float, float]
    v: float | None  # |V|, None before the windows are full
    fire: bool


class _ShiftConfirm:
    """Series mode's second alarm channel for one column: a *new shape confirmed by a
    change of volatility*.

    Why: the record views of :class:`_SeriesNovelty` see values stranger than any before,
    not a pattern change whose values stay in range (a periodic load that turns into a
    flat, quiet or differently shaped signal). A shape never seen before (:class:`_Art`) is
    a hint, but on its own it fires about 13 times as often away from real changes as at
    them; when it is followed within ``POST`` rows by a rare change of the series'
    volatility, the pattern has changed. So:

    1. **Candidate**: ``x_i`` makes the ART found a new category with novelty above its
       adaptive bar (as it stood before this row): armed for ``POST`` rows.
    2. **Confirmation**: ``V_i = 0.5 log((var_post + s^2) / (var_pre + s^2))``, the log
       ratio of spreads of rows ``(i-POST, i]`` and ``(i-POST-PRE, i-POST]`` (``s`` = 1 %
       of the spread of the first ``SCALE_ROWS`` rows, so a flat stretch is not an infinite
       change); ``|V_i|`` must rank at or above ``QUANTILE`` among this column's past
       ``|V|`` (a fixed-bin histogram, at least ``MIN_HISTORY`` of them): rare *for this
       series*, whatever its units or noise.
    3. **Alarm** if armed and confirmed, unless the channel fired within its own
       refractory ``max(refractory, refractory_frac * rows)`` or the primary detector is
       alarming or in its refractory (one episode, one report); firing disarms.

    Rolling sums are of ``x - ref`` and recomputed from the ring buffer (re-centred) every
    ``RECOMPUTE`` rows: a long series or a large offset stays precise. Cost: O(1)
    per row plus the ART's match every ``_Art.BLOCK`` rows.
    """

    POST, PRE, SCALE_ROWS = 20, 200, 150
    QUANTILE, MIN_HISTORY = 0.97, 100
    RESOLUTION, BINS = 100, 800  # |V| bins of 0.01 up to 8 (beyond: the last bin)
    RECOMPUTE = 1000

    def __init__(self, refractory: int, refractory_frac: float) -> None:
        self.refractory, self.refractory_frac = refractory, refractory_frac
        self.art = _Art()
        self.buf = [0.0] * (self.POST + self.PRE + 1)  # the last rows, a ring
        self.n = 0
        self.ref: float | None = None
        self.sums = (0.0, 0.0, 0.0, 0.0)  # post: sum, squares; pre: sum, squares
        self.s2: float | None = None
        self.counts = [0] * self.BINS
        self.total = 0
        self.armed = self.fired = -(10**9)

    def _bin(self, v: float) -> int:
        return min(int(v * self.RESOLUTION), self.BINS - 1)

    def probe(self, x: float, busy: bool) -> _ShiftProbe:
        """Score ``x`` (no state change); ``busy``: the record views are alarming now or
        in their refractory period."""
        i, h, w, ring = self.n, self.POST, self.PRE, len(self.buf)
        art = self.art.probe(x)
        nov = self.art.novelty(art)
        armed = i if nov is not None and nov > self.art.bar else self.armed
        ref = x if self.ref is None else self.ref
        sp, qp, sr, qr = self.sums
        d = x - ref
        sp, qp = sp + d, qp + d * d
        if i >= h:
            d = self.buf[(i - h) % ring] - ref
            sp, qp, sr, qr = sp - d, qp - d * d, sr + d, qr + d * d
        if i >= h + w:
            d = self.buf[(i - h - w) % ring] - ref
            sr, qr = sr - d, qr - d * d
        if i < h + w or self.s2 is None:
            return _ShiftProbe(art, armed, (sp, qp, sr, qr), None, False)
        var_post = max(qp / h - (sp / h) ** 2, 0.0)
        var_pre = max(qr / w - (sr / w) ** 2, 0.0)
        v = abs(0.5 * math.log((var_post + self.s2) / (var_pre + self.s2)))
        fire = (i - armed < h and not busy and self.total > self.MIN_HISTORY
                and i - self.fired >= refractory_rows(self.refractory, self.refractory_frac, i)
                and sum(self.counts[:self._bin(v)]) / self.total >= self.QUANTILE)
        return _ShiftProbe(art, armed, (sp, qp, sr, qr), v, fire)

    def learn(self, x: float, p: _ShiftProbe) -> None:
        self.art.learn(x, p.art)
        i = self.n
        self.n += 1
        self.buf[i % len(self.buf)] = x
        if self.ref is None:
            self.ref = x
        self.sums, self.armed = p.sums, p.armed
        if p.v is not None:
            self.counts[self._bin(p.v)] += 1
            self.total += 1
        if p.fire:
            self.fired, self.armed = i, -(10**9)
        if self.n == self.SCALE_ROWS:
            self.s2 = (float(np.std(self.buf[:self.n])) * 1e-2 + 1e-9) ** 2
        if self.n % self.RECOMPUTE == 0:  # exact sums again, centred on the newest value
            self.ref = x
            h, ring = self.POST, len(self.buf)
            post = [self.buf[(i - k) % ring] - x for k in range(min(h, self.n))]
            pre = [self.buf[(i - k) % ring] - x for k in range(h, min(h + self.PRE, self.n))]
            self.sums = (sum(post), sum(d * d for d in post), sum(pre),
                         sum(d * d for d in pre))


class DriftAwareDetector:
    """Drift-aware anomaly detector for one asset (window features) or one table of series.

    Two front ends share the scoring contract (score before learn, ``assess`` /
    ``learn_one``, drift reports, alarm rule, pickling):

    - **Asset mode** (``asset_type`` from the catalog): one step is one window of features
      (``<sensor>.mean`` / ``.std``) and the terms are residuals of the asset's physics, as
      described in the module docstring. This is what the pipelines run per asset.
    - **Series mode** (``asset_type=None``): one step is one row ``{column: value}`` of any
      numeric columns (``twin replay``, the NAB benchmark). Each column is judged against its
      own history (:class:`_SeriesNovelty`: record ratios ``r`` of four views). ``r > 1``
      (clearly stranger than anything seen in some view: a z view must beat its record by
      a margin) is an alarm, ``is_anomaly``, scored in
      (0.5, 1) by its evidence: how far the record falls (log r), whether a second view is
      near its own record, and how many plain z the value is from the slow and fast levels;
      a weak, uncorroborated record scores just above 0.5, so a stricter consumer can cut
      there. Rows without an alarm score ``r / 2`` (below 0.5). After an alarm, scores are
      held at 0 for ``max(refractory, refractory_frac * steps seen)`` steps, unless a
      record falls by more than ``quiet_override``: one episode is reported once, at its
      start. On stationary noise the alarm rate falls as history
      grows (records of i.i.d. values come at rate ~1/n per view, about ``4 ln(n2/n1)``
      alarms between steps n1 and n2). A second channel per column
      (:class:`_ShiftConfirm`) reports what no record sees, a *pattern change* inside the
      old range: a shape never seen before (online fuzzy ART) that is followed within 20
      rows by a change of volatility rare for that column (top 3 % of its own history).
      It speaks only while the record views are silent and outside their refractory
      period, scores ``SHIFT_SCORE`` (0.99, an alarm, contributor ``<column>.shift``) and
      has its own refractory period (the same rule); it does not start the record views'.
      A drift (a change of a column's mean, River ``ADWIN``) is reported as a change point
      and, like a regime change in asset mode, is not an anomaly by itself.

    Parameters
    ----------
    asset_type
        Selects the sensors (targets) and process sensors (inputs) from the catalog;
        ``None`` for series mode.
    warmup
        Windows learned before any score is given (score 0, ``warming_up``).
    forgetting
        RLS forgetting factor in normal operation (memory ~ ``1 / (1 - forgetting)``).
    adapt_forgetting
        Forgetting factor while adapting after a jump.
    adapt_windows
        Windows of adaptation after a jump.
    resid_fading
        Fading factor of the running residual and noise statistics.
    alarm_above
        ``is_anomaly`` when the score reaches this (1 - tail probability).
    learn_below
        Outside adaptation, learn only from windows scoring below this.
    jump_z
        A process mean moving more than this many usual steps in one window is a jump.
    adwin_delta
        Confidence of the ADWIN gradual-drift detectors.
    adwin_clock
        Windows between the ADWIN detectors' checks for a change (River's default, 32).
        A check walks every bucket of the detector's history, whose number grows with
        the history, so checking every window would make ADWIN most of a long-running
        detector's time. Updating stays per window; a gradual drift is reported up to
        ``adwin_clock - 1`` windows later.
    lag_alphas
        Weights of the newest window in the exponential averages of the process inputs
        that stand for thermal lag (``0.4, 0.15``: time constants of about two and six
        windows, a bearing's and a winding's, and any mix of them).
    ambient_alpha
        The same for the ambient temperature the rises are taken over.
    refractory, refractory_frac
        Series mode: after an alarm, scores are held at 0 for ``max(refractory,
        refractory_frac * steps seen)`` steps (one episode, one report) ...
    quiet_override
        ... unless a value beats a record by more than this factor: a weak alarm does not
        silence a much stronger event right after it.
    """

    def __init__(
        self,
        asset_type: str | None,
        warmup: int = 60,
        forgetting: float = 0.999,
        adapt_forgetting: float = 0.8,
        adapt_windows: int = 10,
        resid_fading: float = 0.01,
        alarm_above: float = 0.999,
        learn_below: float = 0.99,
        jump_z: float = 8.0,
        adwin_delta: float = 0.0001,
        adwin_clock: int = 32,
        lag_alphas: tuple[float, ...] = (0.4, 0.15),
        ambient_alpha: float = 0.25,
        refractory: int = 50,
        refractory_frac: float = 0.04,
        quiet_override: float = 2.0,
    ) -> None:
        self.asset_type = asset_type
        self.refractory = refractory
        self.refractory_frac = refractory_frac
        self.quiet_override = quiet_override
        self.warmup = warmup
        self.forgetting = forgetting
        self.adapt_forgetting = adapt_forgetting
        self.adapt_windows = adapt_windows
        self.resid_fading = resid_fading
        self.alarm_above = alarm_above
        self.learn_below = learn_below
        self.jump_z = jump_z
        self.adwin_delta = adwin_delta
        self.adwin_clock = adwin_clock
        self.lag_alphas = lag_alphas
        self.ambient_alpha = ambient_alpha
        # learned state, built on first use
        self.n_seen = 0
        self.adapt_left = 0
        self.drift_events = 0
        self._last_alarm: int | None = None  # series mode: step of the last alarm
        self._series: dict[str, _SeriesNovelty] = {}
        self._shifts: dict[str, _ShiftConfirm] = {}  # series mode: pattern-change channels
        sensors = sensors_of(asset_type) if asset_type is not None else ()
        self._sensors = [s.name for s in sensors]
        self._targets = [s for s in self._sensors if s not in PROCESS_SENSORS]
        self._inputs = [s for s in self._sensors if s in PROCESS_SENSORS]
        # regressors: the operating point the asset is driven at; the weather only enters
        # through the temperature rises (a wandering ambient would otherwise soak up any
        # slow fault as "explained")
        self._regressors = [s for s in self._inputs if s not in EXOGENOUS_SENSORS]
        self._condition = [s for s in self._sensors if s not in PROCESS_SENSORS]
        self._ambient = next((s for s in self._sensors if s in EXOGENOUS_SENSORS
                              and s.endswith("_temp")), None)
        self._rises = {s.name for s in sensors if s.unit == "kelvin"
                       and s.name not in EXOGENOUS_SENSORS}
        self._scaler = preprocessing.StandardScaler()
        self._models: dict[str, _RLS] = {}
        self._r2: dict[str, float] = {}  # running mean squared residual per target
        self._noise_mean: dict[str, float] = {}
        self._noise_var: dict[str, float] = {}
        self._step_var: dict[str, float] = {}  # usual window-to-window change, per input
        self._prev: dict[str, float] | None = None  # previous window's scaled means
        self._avg: dict[str, list[float]] | None = None  # exponential averages of inputs
        self._ambient_avg: float | None = None
        self._adwin: dict[str, drift.ADWIN] = {}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        # a pickle from before adwin_clock: its drift detectors check every window; keep
        # that (their own clock is in their pickles) for any it creates from now on too
        self.__dict__.setdefault("adwin_clock", 1)
        # a pickle from before covariances were shared holds equal copies: share them again
        models = list(self._models.values())
        for i, m in enumerate(models):
            twin = next((o for o in models[:i] if o.P is not m.P and o.P.shape == m.P.shape
                         and np.array_equal(o.P, m.P)), None)
            if twin is not None:
                m.P = twin.P

    # -- features -> model inputs -------------------------------------------------------
    def _ambient_lagged(self, x: dict[str, float]) -> float | None:
        """Ambient as the machine's thermal mass feels it: its exponential average."""
        now = x.get(_MEAN[self._ambient]) if self._ambient else None
        if now is None:
            return None
        old = self._ambient_avg if self._ambient_avg is not None else now
        return (1 - self.ambient_alpha) * old + self.ambient_alpha * now

    def _means(self, x: dict[str, float], ambient: float | None) -> dict[str, float]:
        """Window means, temperatures as their rise over (lagged) ambient when it is known."""
        means = {s: x[k] for s in self._sensors if (k := _MEAN[s]) in x}
        if ambient is not None:
            for s in self._rises:
                if s in means:
                    means[s] -= ambient
        return means

    def _scaled(self, means: dict[str, float]) -> dict[str, float]:
        if not self._scaler.counts:
            return dict.fromkeys(means, 0.0)
        z = self._scaler.transform_one(means)
        return {k: float(v) for k, v in z.items()}

    def _averaged(self, scaled: dict[str, float]) -> dict[str, float]:
        """The exponential input average including this window (no state change)."""
        old = self._avg or {}
        out = {}
        for s in self._regressors:
            if s in scaled:
                prev = old.get(s) or [scaled[s]] * len(self.lag_alphas)
                out[s] = [(1 - a) * p + a * scaled[s] for a, p in zip(self.lag_alphas, prev,
                                                                      strict=True)]
        return out

    def _design(self, scaled: dict[str, float], avg: dict[str, list[float]]) -> np.ndarray:
        """The residual models' input: intercept, then each regressor and its averages.
        One for every target (targets are never regressors: a regressor is a process
        sensor, a target is not)."""
        row = [1.0]
        for s in self._regressors:
            x = scaled.get(s, 0.0)
            row.append(x)
            row.extend(avg.get(s) or [x] * len(self.lag_alphas))
        return np.array(row)

    def _log_spread(self, x: dict[str, float], s: str, means: dict[str, float]) -> float | None:
        k = _RSTD[s]
        std = x[k] if k in x else x.get(_STD[s])
        if std is None:
            return None
        k = _MEAN[s]
        floor = 1e-9 * max(abs(x[k] if k in x else means.get(s, 0.0)), 1e-3)
        return math.log(std + floor)

    # -- scoring ------------------------------------------------------------------------
    def _terms(self, x: dict[str, float]) -> tuple[dict[str, float], dict[str, float], dict]:
        """z-scores of mean residuals and of noise levels, plus cached intermediates."""
        ambient = self._ambient_lagged(x)
        means = self._means(x, ambient)
        scaled = self._scaled(means)
        avg = self._averaged(scaled)
        mean_z: dict[str, float] = {}
        noise_z: dict[str, float] = {}
        designs = {}  # target -> its input (one array for all)
        resid = {}  # target -> residual of the current model (learn_one reuses it)
        u = None
        shared_P = leverage = None  # models sharing a covariance share its leverage
        for s in self._targets:
            if s not in scaled:
                continue
            if u is None:
                u = self._design(scaled, avg)
            designs[s] = u
            model = self._models.get(s)
            if model is not None:
                r = resid[s] = scaled[s] - model.predict(u)
                if s in self._r2:
                    if model.P is not shared_P:
                        shared_P, leverage = model.P, model.leverage(u)
                    # predictive spread: residual noise, widened where the model extrapolates
                    var = max(self._r2[s], 1e-4) * (1.0 + min(leverage, 1e6))
                    mean_z[s] = r / math.sqrt(var)
        spreads = {}
        for s in self._sensors:
            ls = self._log_spread(x, s, means)
            if ls is None:
                continue
            spreads[s] = ls
            if s in self._noise_var:
                sd = math.sqrt(max(self._noise_var[s], 0.01))
                noise_z[s] = (ls - self._noise_mean[s]) / sd
        return mean_z, noise_z, {"means": means, "scaled": scaled, "designs": designs,
                                 "avg": avg, "noise_z": noise_z, "resid": resid,
                                 "spreads": spreads, "ambient": ambient}

    def _jumps(self, scaled: dict[str, float]) -> list[str]:
        if self._prev is None:
            return []
        out = []
        for s in self._inputs:
            if s in scaled and s in self._prev and s in self._step_var:
                step = abs(scaled[s] - self._prev[s])
                if step > self.jump_z * math.sqrt(max(self._step_var[s], 1e-6)):
                    out.append(s)
        return out

    def _tail(self, z: float, n_terms: int) -> float:
        """Bonferroni tail probability of the largest of ``n_terms`` |z|-scores."""
        return min(1.0, n_terms * math.erfc(min(abs(z), 60.0) / math.sqrt(2.0)))

    def _adapts_to(self, jumps: list[str], noise_z: dict[str, float]) -> bool:
        """Whether a jump is a regime change to re-fit to.

        Not when only the weather jumped (nothing to re-fit), and not when the condition
        sensors turn noisy at the same moment: that is a fault arriving with the jump
        (cavitation collapsing suction pressure), and re-fitting would learn it.
        """
        if not any(s not in EXOGENOUS_SENSORS for s in jumps):
            return False
        cond = [noise_z[s] for s in self._condition if s in noise_z]
        n_terms = max(len(self._targets) + len(self._sensors), 1)
        return not cond or 1.0 - self._tail(max(cond, key=abs), n_terms) < self.alarm_above

    # -- series mode ----------------------------------------------------------------------
    @staticmethod
    def _numbers(x: dict[str, float]):
        for col, val in x.items():
            if val is not None and val == val and abs(val) != math.inf:  # skip NaN / inf
                yield col, float(val)

    def _quiet(self) -> bool:
        """Series mode: within the refractory period of the last alarm, which grows with
        the history (``refractory_frac`` of the steps seen): an episode in a long series
        lasts longer in steps, and a young series must not lose a second event."""
        if self._last_alarm is None:
            return False
        return self.n_seen - self._last_alarm < refractory_rows(
            self.refractory, self.refractory_frac, self.n_seen)

    def _assess_series(self, x: dict[str, float]) -> Assessment:
        views: dict[str, list[float] | None] = {}
        found: dict[str, tuple[float, float, int]] = {}  # column -> (ratio, evidence, view)
        numbers = list(self._numbers(x))
        for col, val in numbers:
            nov = self._series.get(col)
            views[col] = v = nov.views(val) if nov is not None else None
            if v is not None:
                r, r2, arg = nov.ratios(v, val)
                # how sure: by how much the record falls, whether a second view is near its
                # own record, and how far the value is from both levels in plain z
                e = (math.log(r) if r > 0 else -60.0) + min(r2, 1.5) + math.log1p(v[0]) \
                    + math.log1p(v[1])
                found[col] = (r, e, arg)
        if self.n_seen < self.warmup or not found:
            return Assessment(0.0, False, True, False, views=views)
        ranked = sorted(found, key=lambda c: -found[c][1])
        alarming = [c for c in ranked if found[c][0] > 1.0]
        r = max(f[0] for f in found.values())
        refractory = self._quiet()
        quiet = refractory and r <= self.quiet_override
        if quiet:
            score = 0.0
        elif alarming:  # (0.5, 1): ranked by the evidence of the surest column
            score = 0.5 + 0.5 / (1.0 + math.exp(-min(max(found[alarming[0]][1], -60), 60)))
        else:  # [0, 0.5]: the largest ratio, below every alarm
            score = 0.5 * r
        alarm = not quiet and bool(alarming)
        contributors = [f"{c}.{_SeriesNovelty.VIEWS[found[c][2]]}" for c in alarming[:3]]
        # the pattern-change channels speak only when the record views are silent
        busy = alarm or refractory
        shifts = {c: ch.probe(val, busy) for c, val in numbers
                  if (ch := self._shifts.get(c)) is not None}
        confirmed = [c for c, p in shifts.items() if p.fire]
        if confirmed:
            score, alarm, contributors = SHIFT_SCORE, True, [f"{c}.shift" for c in confirmed]
        return Assessment(
            score=score,
            is_anomaly=alarm,
            warming_up=False,
            drift=False,
            contributors=contributors[:3],
            max_z=r,
            views=views,
            shifts=shifts,
        )

    def _learn_series(self, x: dict[str, float], a: Assessment) -> list[str]:
        drifted = []
        warm = self.n_seen >= self.warmup
        for col, val in self._numbers(x):
            nov = self._series.get(col)
            if nov is None:
                nov = self._series[col] = _SeriesNovelty(self.warmup)
            nov.learn(val, a.views[col] if col in a.views else nov.views(val))
            ch = self._shifts.get(col)
            if ch is None:
                ch = self._shifts[col] = _ShiftConfirm(self.refractory, self.refractory_frac)
            ch.learn(val, a.shifts[col] if col in a.shifts else ch.probe(val, True))
            det = self._adwin.get(col)
            if det is None:
                det = self._adwin[col] = drift.ADWIN(delta=self.adwin_delta)
            det.update(val)
            if warm and det.drift_detected:
                drifted.append(col)
        if drifted:
            self.drift_events += 1
        if a.is_anomaly and not any(p.fire for p in a.shifts.values()):
            self._last_alarm = self.n_seen  # the record views' refractory (not the channel's)
        self.n_seen += 1
        return drifted

    # -- both modes -----------------------------------------------------------------------
    def assess(self, x: dict[str, float]) -> Assessment:
        """Score one step (a window of features, or a row in series mode); no learning."""
        if self.asset_type is None:
            return self._assess_series(x)
        mean_z, noise_z, cache = self._terms(x)
        stamp = (x, self.n_seen)  # learn_one reuses the terms for the same x and state
        jumps = self._jumps(cache["scaled"])
        warming = self.n_seen < self.warmup
        adapting = self.adapt_left > 0 or self._adapts_to(jumps, noise_z)
        terms = {_STD[k]: v for k, v in noise_z.items()}
        if not adapting:
            terms.update({_MEAN[k]: v for k, v in mean_z.items()})
        if warming or not terms:
            return Assessment(0.0, False, True, bool(jumps), jumps, terms=(stamp, cache))
        ranked = sorted(terms, key=lambda k: -abs(terms[k]))
        max_z = min(abs(terms[ranked[0]]), 60.0)
        score = 1.0 - self._tail(max_z, len(terms))
        return Assessment(
            score=score,
            is_anomaly=score >= self.alarm_above,
            warming_up=False,
            drift=bool(jumps),
            drift_sensors=jumps,
            contributors=[k for k in ranked[:3] if abs(terms[k]) > 3.0],
            max_z=max_z,
            terms=(stamp, cache),
        )

    def score_one(self, x: dict[str, float]) -> float:
        """Anomaly score in [0, 1] of one window of features (no learning)."""
        return self.assess(x).score

    # -- learning -----------------------------------------------------------------------
    def learn_one(self, x: dict[str, float], assessment: Assessment | None = None) -> list[str]:
        """Learn from one step; returns what drifted (process sensors, or columns in series
        mode; maybe none).

        Pass the :class:`Assessment` of the same window from :meth:`assess` to avoid
        scoring twice.
        """
        a = assessment if assessment is not None else self.assess(x)
        if self.asset_type is None:
            return self._learn_series(x, a)
        if a.terms is not None and a.terms[0][0] is x and a.terms[0][1] == self.n_seen:
            cache = a.terms[1]
        else:
            _, _, cache = self._terms(x)
        means, scaled, designs = cache["means"], cache["scaled"], cache["designs"]
        resid = cache["resid"]
        warm = self.n_seen >= self.warmup
        drifted = list(a.drift_sensors) if warm else []
        if warm and self.adapt_left == 0 and self._adapts_to(drifted, cache["noise_z"]):
            self.adapt_left = self.adapt_windows  # a jump: re-fit to the new regime
        # gradual drift of the operating point: reported, not adapted to
        for s in self._inputs:
            if s in scaled and warm:
                det = self._adwin.get(s)
                if det is None:
                    det = self._adwin[s] = drift.ADWIN(delta=self.adwin_delta,
                                                       clock=self.adwin_clock)
                det.update(scaled[s])
                if det.drift_detected and s not in drifted:
                    drifted.append(s)
        if drifted:
            self.drift_events += 1
        adapting = self.adapt_left > 0
        gate_open = not warm or adapting or a.score < self.learn_below
        lam = self.adapt_forgetting if adapting else self.forgetting
        fade = self.resid_fading
        # running means over the warm-up, then exponential fading (residuals only once
        # the models have had half the warm-up to find their feet)
        fade_r = fade if warm else max(fade, 1.0 / max(1, self.n_seen - self.warmup // 2 + 1))
        fade_n = fade if warm else max(fade, 1.0 / (self.n_seen + 1))
        if gate_open:
            first = None  # models first learning now start as one (a shared covariance)
            for s, u in designs.items():
                if s not in self._models:
                    model = self._models[s] = _RLS(len(u)) if first is None else first.sibling()
                    first = first or model
            steps: list[tuple] = []  # (covariance, input, step) taken this window
            for s, u in designs.items():
                model = self._models[s]
                r = resid[s] if s in resid else scaled[s] - model.predict(u)
                if s in self._r2:
                    if not adapting:  # robust: a creeping fault must not widen the band
                        r2 = min(r * r, RESID_CLIP**2 * self._r2[s]) if warm else r * r
                        self._r2[s] = (1 - fade_r) * self._r2[s] + fade_r * r2
                elif self.n_seen >= self.warmup // 2:  # once the model has a first fit
                    self._r2[s] = r * r + 0.01
                step = next((st for P, v, st in steps if P is model.P and v is u), None)
                P = model.P
                steps.append((P, u, model.update(u, scaled[s], lam, step)))
            if not adapting or not warm:
                for s, ls in cache["spreads"].items():  # the sensors' order, as in _terms
                    if s not in self._noise_mean:
                        self._noise_mean[s], self._noise_var[s] = ls, 0.25
                    else:
                        d = ls - self._noise_mean[s]
                        self._noise_mean[s] += fade_n * d
                        self._noise_var[s] = (1 - fade_n) * (self._noise_var[s] + fade_n * d * d)
        if self._prev is not None:
            for s in self._inputs:
                if s in scaled and s in self._prev and s not in drifted:
                    d2 = (scaled[s] - self._prev[s]) ** 2
                    v = self._step_var.get(s)
                    self._step_var[s] = d2 if v is None else (1 - fade) * v + fade * d2
        if not warm:  # frozen afterwards: models live in these units
            self._scaler.learn_one(means)
            self._prev = self._scaled(means)
            self._avg = self._averaged(self._prev)
        else:  # the scaler did not move: _terms already scaled and averaged these means
            self._prev, self._avg = scaled, cache["avg"]
        self._ambient_avg = cache["ambient"]
        self.n_seen += 1
        if self.adapt_left > 0:
            self.adapt_left -= 1
        return drifted
