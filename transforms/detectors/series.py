"""The series detector: is this value new for its column, against the column's own history?

What ``twin replay`` runs on a table with no asset model, and what the NAB benchmark
measures: each numeric column is judged against its own history, with no knowledge of its
units, noise or range (:class:`SeriesDetector`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from river import drift

from transforms.detectors.base import Assessment, Detector

# The one configuration of ``twin replay`` and the NAB benchmark: 150 rows to lay out the
# value bins and find each column's scale before scoring. The pattern-change channel's
# settings are the class constants of _ShiftConfirm and _Art.
SERIES_CONFIG = {"warmup": 150}

SHIFT_SCORE = 0.99  # the score of a confirmed pattern change (an alarm)


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

class SeriesDetector(Detector):
    """Anomaly detector for a table of numeric series, one row ``{column: value}`` a step.

    Each column is judged against its own history (:class:`_SeriesNovelty`: record ratios
    ``r`` of four views). ``r > 1`` (clearly stranger than anything seen in some view: a
    z view must beat its record by a margin) is an alarm, ``is_anomaly``, scored in
    (0.5, 1) by its evidence: how far the record falls (log r), whether a second view is
    near its own record, and how many plain z the value is from the slow and fast levels;
    a weak, uncorroborated record scores just above 0.5, so a stricter consumer can cut
    there. Rows without an alarm score ``r / 2`` (below 0.5). After an alarm, scores are
    held at 0 for ``max(refractory, refractory_frac * steps seen)`` steps, unless a record
    falls by more than ``quiet_override``: one episode is reported once, at its start. On
    stationary noise the alarm rate falls as history grows (records of i.i.d. values come
    at rate ~1/n per view, about ``4 ln(n2/n1)`` alarms between steps n1 and n2). A second
    channel per column (:class:`_ShiftConfirm`) reports what no record sees, a *pattern
    change* inside the old range: a shape never seen before (online fuzzy ART) that is
    followed within 20 rows by a change of volatility rare for that column (top 3 % of
    its own history). It speaks only while the record views are silent and outside their
    refractory period, scores ``SHIFT_SCORE`` (0.99, an alarm, contributor
    ``<column>.shift``) and has its own refractory period (the same rule); it does not
    start the record views'. A drift (a change of a column's mean, River ``ADWIN``) is
    reported as a change point, and is not an anomaly by itself.

    Parameters
    ----------
    warmup
        Rows learned before any score is given (score 0, ``warming_up``).
    adwin_delta
        Confidence of the ADWIN change-point detectors.
    refractory, refractory_frac
        After an alarm, scores are held at 0 for ``max(refractory, refractory_frac * rows
        seen)`` rows (one episode, one report) ...
    quiet_override
        ... unless a value beats a record by more than this factor: a weak alarm does not
        silence a much stronger event right after it.
    """

    def __init__(self, warmup: int = 150, adwin_delta: float = 0.0001, refractory: int = 50,
                 refractory_frac: float = 0.04, quiet_override: float = 2.0) -> None:
        self.warmup = warmup
        self.adwin_delta = adwin_delta
        self.refractory = refractory
        self.refractory_frac = refractory_frac
        self.quiet_override = quiet_override
        # learned state, built on first use
        self.n_seen = 0
        self.drift_events = 0
        self._last_alarm: int | None = None  # step of the last alarm
        self._series: dict[str, _SeriesNovelty] = {}
        self._shifts: dict[str, _ShiftConfirm] = {}  # pattern-change channels
        self._adwin: dict[str, drift.ADWIN] = {}
        # step at which each column's latest reported change began (ADWIN's cut)
        self.change_started: dict[str, int] = {}

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
                # ADWIN keeps the window after its cut: the change began that long ago
                self.change_started[col] = max(self.n_seen - int(det.width) + 1, 0)
        if drifted:
            self.drift_events += 1
        if a.is_anomaly and not any(p.fire for p in a.shifts.values()):
            self._last_alarm = self.n_seen  # the record views' refractory (not the channel's)
        self.n_seen += 1
        return drifted

    def __setstate__(self, state: dict) -> None:
        state.setdefault("change_started", {})  # a pickle from before it was kept
        self.__dict__.update(state)

    # -- the protocol ---------------------------------------------------------------------
    def assess(self, x: dict[str, float]) -> Assessment:
        """Score one row; no learning."""
        return self._assess_series(x)

    def learn_one(self, x: dict[str, float], assessment: Assessment | None = None) -> list[str]:
        """Learn from one row; returns the columns whose level changed (maybe none)."""
        return self._learn_series(x, assessment if assessment is not None else self.assess(x))
