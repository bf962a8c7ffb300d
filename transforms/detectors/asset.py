"""The asset detector: is this window unusual *given the asset's operating point*?

Why this shape
--------------
An industrial asset's sensors move together when its *operating point* moves (load,
speed, weather); they move apart when something breaks. So the detector does not ask
"is this value unusual?" but "is this value unusual *given the operating point*?":

1. **Targets**: every sensor but the exogenous ones (the weather: a sensor's role in the
   asset model, :mod:`transforms.model`). Temperatures are taken as their *rise over
   ambient*, the quantity friction and copper loss set, so a hot afternoon or a season
   change moves no target.
2. **Scaling** (River ``StandardScaler``, learned during warm-up, then frozen) puts
   every window mean on a common scale.
3. **Residual models**: each target's window mean is predicted from the *process* sensors
   (the model's ``operating_point`` sensors) of this window and their exponential
   average over the last few windows (thermal lag), by recursive least squares with slow
   forgetting. Condition sensors (vibration, bearing and winding
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
>>> det = AssetDetector("pump", warmup=20)
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

import numpy as np
from river import drift, preprocessing

from transforms.catalog import roles, sensors_of
from transforms.detectors.base import Assessment, Detector, tail_probability
from transforms.features import FEATURE_KEY

_MEAN, _STD, _RSTD = FEATURE_KEY["mean"], FEATURE_KEY["std"], FEATURE_KEY["rstd"]
# units of temperatures, whose rise over the ambient (an exogenous temperature) is modelled
TEMPERATURE_UNITS = frozenset({"kelvin", "K", "degC", "degree_Celsius", "celsius",
                               "degF", "degree_Fahrenheit", "fahrenheit"})
RESID_CLIP = 2.0  # residuals beyond this many spreads count as this many in the spread

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


class AssetDetector(Detector):
    """Drift-aware anomaly detector for one asset, fed one window of features at a time.

    One step is one window of features (``<sensor>.mean`` / ``.std`` / ``.rstd``); the
    terms are residuals of the asset's physics and the spreads of its sensors, as the
    module docstring describes. This is what the pipelines run per asset.

    Parameters
    ----------
    asset_type
        Selects the sensors (targets) and process sensors (inputs) from the catalog.
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
    """

    def __init__(
        self,
        asset_type: str,
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
    ) -> None:
        self.asset_type = asset_type
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
        sensors = sensors_of(asset_type)
        role = roles(asset_type)
        process, exogenous = role.process, role.exogenous
        self._sensors = [s.name for s in sensors]
        self._targets = [s for s in self._sensors if s not in process]
        self._inputs = [s for s in self._sensors if s in process]
        # regressors: the operating point the asset is driven at; the weather only enters
        # through the temperature rises (a wandering ambient would otherwise soak up any
        # slow fault as "explained")
        self._regressors = [s for s in self._inputs if s not in exogenous]
        self._condition = [s for s in self._sensors if s not in process]
        self._ambient = next((s.name for s in sensors if s.name in exogenous
                              and s.unit in TEMPERATURE_UNITS), None)
        self._rises = {s.name for s in sensors if s.unit in TEMPERATURE_UNITS
                       and s.name not in exogenous}
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
        # a pickle from before the detectors were split holds series-mode leftovers
        for key in ("refractory", "refractory_frac", "quiet_override", "_last_alarm",
                    "_series", "_shifts"):
            state.pop(key, None)
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
        levs = {}  # target -> leverage of this window's inputs (explain reuses it)
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
                    levs[s] = leverage
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
                                 "spreads": spreads, "ambient": ambient, "levs": levs}

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

    def _adapts_to(self, jumps: list[str], noise_z: dict[str, float]) -> bool:
        """Whether a jump is a regime change to re-fit to.

        Not when only the weather jumped (nothing to re-fit), and not when the condition
        sensors turn noisy at the same moment: that is a fault arriving with the jump
        (cavitation collapsing suction pressure), and re-fitting would learn it.
        """
        if not any(s not in roles(self.asset_type).exogenous for s in jumps):
            return False
        cond = [noise_z[s] for s in self._condition if s in noise_z]
        n_terms = max(len(self._targets) + len(self._sensors), 1)
        return not cond or 1.0 - tail_probability(max(cond, key=abs), n_terms) < self.alarm_above

    # -- the protocol ---------------------------------------------------------------------
    def assess(self, x: dict[str, float]) -> Assessment:
        """Score one window of features; no learning."""
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
        score = 1.0 - tail_probability(max_z, len(terms))
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

    # -- learning -----------------------------------------------------------------------
    def learn_one(self, x: dict[str, float], assessment: Assessment | None = None) -> list[str]:
        """Learn from one window; returns the process sensors that drifted (maybe none).

        Pass the :class:`Assessment` of the same window from :meth:`assess` to avoid
        scoring twice.
        """
        a = assessment if assessment is not None else self.assess(x)
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

    # -- the learned models, for what-if questions ---------------------------------------
    def export(self) -> dict:
        """The learned models as plain data (lists, floats, names): what a what-if needs
        to roll the asset forward (:mod:`transforms.whatif`). Changes nothing.

        ``scale``: the frozen scaler's mean and standard deviation per sensor (the models
        live in its units); ``weights`` and ``covariance``: each target's residual model
        (intercept, then each regressor and its ``lag_alphas`` averages) and its RLS
        covariance; ``r2``: the running mean squared residual of each target (scaled);
        ``avg`` and ``ambient_avg``: the lagged inputs after the last window learned.
        """
        scaler = self._scaler
        shared: list[np.ndarray] = []  # the models' covariances, each once
        for m in self._models.values():
            if not any(P is m.P for P in shared):
                shared.append(m.P)
        return {
            "asset_type": self.asset_type,
            "regressors": list(self._regressors),
            "targets": list(self._targets),
            "rises": sorted(self._rises),
            "ambient": self._ambient,
            "lag_alphas": [float(a) for a in self.lag_alphas],
            "forgetting": float(self.forgetting),
            "ambient_alpha": float(self.ambient_alpha),
            "scale": {s: [float(scaler.means[s]), float(scaler.vars[s]) ** 0.5]
                      for s in self._sensors if scaler.counts.get(s)},
            "avg": {s: [float(v) for v in lags] for s, lags in (self._avg or {}).items()},
            "ambient_avg": None if self._ambient_avg is None else float(self._ambient_avg),
            "weights": {s: [float(v) for v in m.w] for s, m in self._models.items()},
            "covariances": [[float(v) for v in P[np.triu_indices(len(P))]] for P in shared],
            "covariance_of": {s: next(i for i, P in enumerate(shared) if P is m.P)
                              for s, m in self._models.items()},
            "r2": {s: float(v) for s, v in self._r2.items()},
            "noise_mean": {s: float(v) for s, v in self._noise_mean.items()},
            "noise_var": {s: float(v) for s, v in self._noise_var.items()},
            "n_seen": int(self.n_seen),
            "warmup": int(self.warmup),
            "adapt_left": int(self.adapt_left),
            "alarm_above": float(self.alarm_above),
            "n_terms": len(self._targets) + len(self._sensors),
        }

    def explain(self, assessment: Assessment
                ) -> dict[str, tuple[float, float, float, float]]:
        """How well the residual models predicted the window ``assessment`` judged,
        before learning it: per target with a residual spread, ``(observed, predicted,
        spread, leverage)``, the first three in SI units (a temperature as its rise over
        lagged ambient; ``spread``: the predictive standard deviation the score divides
        by; ``leverage``: ``u' P u`` of the window's inputs). Empty while the models have
        no spread yet or the assessment carries no terms. Changes nothing."""
        if assessment.terms is None:
            return {}
        cache = assessment.terms[1]
        levs = cache.get("levs", {})
        out = {}
        for s, r in cache["resid"].items():
            if s not in self._r2 or not self._scaler.counts.get(s):
                continue
            sd = self._scaler.vars[s] ** 0.5
            if sd <= 0:
                continue
            lev = levs[s] if s in levs else self._models[s].leverage(cache["designs"][s])
            var = max(self._r2[s], 1e-4) * (1.0 + min(lev, 1e6))
            observed = cache["means"][s]
            out[s] = (observed, observed - r * sd, math.sqrt(var) * sd, lev)
        return out
