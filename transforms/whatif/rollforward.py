"""Rolling an asset forward with its twin's learned models, under a scenario and without.

Given a twin's models (:mod:`transforms.whatif.model`) and a :class:`~transforms.whatif.
scenario.Scenario`, :func:`roll_forward` computes, window by window up to the horizon,
two paths: the **baseline** (the asset run as now) and the **scenario**. Each path holds
the expected window mean of every condition and process sensor with a 90 % prediction
interval, the health index, the anomaly score and the remaining useful life.

The maths, all linear and Gaussian, so exact rather than sampled:

1. **Operating point** (:class:`~transforms.whatif.operating.OperatingPoint`): each
   process sensor is its level plus a deviation that fades by ``phi`` per window (AR(1))
   and is renewed with the covariance the asset showed. The setpoint (speed) stays where
   it is unless the scenario sets it; a set sensor's level is the scenario's value; the
   unset ones follow by Gaussian conditioning on the set ones (a regression on the
   asset's own history). That regression's uncertainty grows with how far the shift
   lies outside what the asset has shown (its leverage), and the part of the response
   that comes from beyond the 99 % region of that history counts as uncertain as it is
   large: the history says nothing about it.
2. **Condition sensors**: the detector's residual models (RLS, one per condition sensor)
   on the process sensors and their lagged averages, propagated as a linear state-space
   model (deviations and lagged averages as the state), so the interval holds the
   operating point's wander, the residual noise (the detector's residual variance over
   the consistency factor of its clipping) and the models' own uncertainty at those
   inputs (RLS leverage ``u' P u``, which grows where the models extrapolate).
   Temperatures are predicted as their rise over lagged ambient, plus ambient.
3. **A developing fault** (an alert is open): what the models leave unexplained (each
   condition sensor's residual level and trend, :class:`~transforms.whatif.fidelity.
   Fidelity`) is carried forward on the fault's own clock, which a life law
   (:mod:`transforms.whatif.life`) runs faster or slower at the scenario's operating
   point, with the widening interval of Holt's method.
4. **Health and remaining life**: the health forecaster's Holt trend on the same clock,
   with the interval of Holt's method (ETS(A,A,N)); the remaining useful life is where the
   forecast (and its interval's edges) cross the failure level.
5. **Anomaly score**: the median and 90 % band of the largest |z| over the detector's
   terms (mean residuals from the fault's carried residuals; noise terms as now while an
   alert is open, else in control), through the detector's Bonferroni tail probability.

**Extrapolation** is reported, not smoothed over: a window is flagged when the residual
models' leverage at its expected inputs exceeds the largest leverage of the windows they
were asked to predict so far (the test for hidden extrapolation in regression; Montgomery,
Peck and Vining), when a set sensor's shift lies outside the 99 % region of the asset's
history (Mahalanobis distance against the chi-squared quantile), for temperatures when
it lies further ahead than the weather has been watched (how far the weather moves in
6 h cannot be learned from 4 h of it), and where a predicted value leaves the catalog's
plausible range (it is then kept within it). A life law applies only where the models
predict the component's levels to within +-25 % (90 %): a law on levels the models cannot
tell apart is no law.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from transforms.catalog import component, component_sensors, sensor
from transforms.detectors.base import tail_probability
from transforms.whatif.fidelity import Z90
from transforms.whatif.life import LAWS, rate_ratio
from transforms.whatif.model import ModelError
from transforms.whatif.operating import conditional, effective_windows
from transforms.whatif.scenario import Scenario

CHI2_99 = {1: 6.635, 2: 9.210, 3: 11.345, 4: 13.277, 5: 15.086, 6: 16.812, 7: 18.475}


def _chi2_99(k: int) -> float:
    if k in CHI2_99:
        return CHI2_99[k]
    from scipy.stats import chi2

    return float(chi2.ppf(0.99, k))


def _upper(flat: list[float], dim: int) -> np.ndarray:
    """A symmetric matrix from its upper triangle, row by row."""
    m = np.zeros((dim, dim))
    m[np.triu_indices(dim)] = flat
    return m + np.triu(m, 1).T


class _Models:
    """The document's parts as arrays, in the state-space layout."""

    def __init__(self, doc: dict[str, Any]) -> None:
        det, op = doc["detector"], doc["operating"]
        self.doc = doc
        self.asset_type = doc["asset_type"]
        self.window_s = float(doc["window_s"])
        if det["n_seen"] < det["warmup"]:
            raise ModelError(f"{doc['asset_id']}: the twin is still warming up "
                             f"({det['n_seen']} of {det['warmup']} windows): its models "
                             f"cannot answer yet")
        if op.get("cov") is None:
            raise ModelError(f"{doc['asset_id']}: no operating-point history yet")
        self.values = doc["values"]
        self.scale = det["scale"]
        self.regs = [r for r in det["regressors"] if r in self.scale]
        self.alphas = det["lag_alphas"]
        self.ambient = det["ambient"]
        self.beta = det["ambient_alpha"]
        self.rises = set(det["rises"])
        self.targets = [t for t in det["targets"] if t in det["weights"] and t in det["r2"]
                        and t in self.scale and self.scale[t][1] > 0]
        if not self.targets:
            raise ModelError(f"{doc['asset_id']}: no condition sensor has a fitted model yet")
        self.weights = {t: np.asarray(det["weights"][t]) for t in self.targets}
        dim = len(next(iter(self.weights.values())))
        covs = [_upper(c, dim) for c in det["covariances"]]
        self.rls_p = {t: covs[det["covariance_of"][t]] for t in self.targets}
        self.r2 = {t: max(det["r2"][t], 1e-4) for t in self.targets}
        self.n_rls = min(det["n_seen"], 1.0 / max(1.0 - det.get("forgetting", 0.999), 1e-9))
        self.p_dim = dim
        self.kappa = doc["fidelity"].get("kappa") or 1.0
        # beyond the largest leverage of the windows the models predicted: extrapolation
        # (Montgomery, Peck and Vining, hidden extrapolation); without that record, the
        # high-leverage rule 2 p / n (Hoaglin and Welsch)
        self.lev_limit = doc["fidelity"].get("max_leverage") or (
            2.0 * dim / max(self.n_rls, 1.0))
        # operating point
        self.driven = op["driven"]
        self.exo = [s for s in op["exogenous"] if s in op["exo"]]
        self.level = op["level"]
        self.cov = np.asarray(op["cov"])
        self.phi = float(op["phi"])
        self.weather = {s: op["exo"][s] for s in self.exo}
        # how far ahead the weather's history reaches: a temperature forecast further
        # ahead than the weather has been watched is an extrapolation in time
        self.weather_windows = min(
            (w.get("blocks", 0) * w["block"] + w["since_block"] for w in self.weather.values()),
            default=float("inf"))
        self.n_op = effective_windows(op["n"], op.get("fading", 0.001))
        # the operating point's wander: the deviations' covariance given the setpoint,
        # which the controller holds (a setpoint the asset was moved to is no wander)
        sp = doc["policy"]["setpoint_name"]
        self.wander = self.cov.copy()
        if sp in self.driven:
            j = self.driven.index(sp)
            rest = [i for i in range(len(self.driven)) if i != j]
            _, resid, _ = conditional(self.cov, [j], self.n_op)
            self.wander = np.zeros_like(self.cov)
            self.wander[np.ix_(rest, rest)] = resid
        missing = [s for s in self.regs if s not in self.driven]
        if missing:
            raise ModelError(f"{doc['asset_id']}: regressors {missing} have no operating "
                             f"history")
        if any(s not in self.values or s not in self.level for s in self.driven):
            raise ModelError(f"{doc['asset_id']}: the last window lacks a process sensor")
        # state layout: driven deviations | weather (level error, slope error) per
        # exogenous sensor | lagged averages | lagged ambient
        k, m, nl = len(self.driven), 2 * len(self.exo), len(self.alphas)
        self.i_d = {s: i for i, s in enumerate(self.driven)}
        self.i_x = {s: k + 2 * i for i, s in enumerate(self.exo)}  # level error; +1: slope
        self.i_e = {(r, j): k + m + ri * nl + j for ri, r in enumerate(self.regs)
                    for j in range(nl)}
        self.i_a = k + m + len(self.regs) * nl if self.ambient in self.i_x else None
        self.n = k + m + len(self.regs) * nl + (1 if self.i_a is not None else 0)
        self._build_dynamics()
        self._build_outputs()

    def sd(self, s: str) -> float:
        return self.scale[s][1] if self.scale[s][1] > 0 else 1.0

    def _build_dynamics(self) -> None:
        """``s' = F s + G e``: AR(1) deviations of the driven sensors, a local linear
        trend per exogenous sensor (noise ``e``: the driven wander, the slopes' random
        walks, the weather's white noise), and the lagged averages that follow them."""
        n, k, m = self.n, len(self.driven), len(self.exo)
        F = np.zeros((n, n))
        G = np.zeros((n, k + 2 * m))
        Q = np.zeros((k + 2 * m, k + 2 * m))
        Q[:k, :k] = (1 - self.phi ** 2) * self.wander
        for i in range(k):
            F[i, i] = self.phi
            G[i, i] = 1.0
        self.P0 = np.zeros((n, n))
        for c, (s, i) in enumerate(self.i_x.items()):
            w = self.weather[s]
            F[i, i] = F[i, i + 1] = F[i + 1, i + 1] = 1.0  # level += slope; slope walks
            G[i + 1, k + c] = 1.0
            Q[k + c, k + c] = w["slope_var"] or 0.0
            Q[k + m + c, k + m + c] = w["noise_var"]
            # the slope was measured between the last two blocks: as old as a block and
            # what has passed of the current one
            self.P0[i + 1, i + 1] = (w["slope_var"] or 0.0) * (w["block"] + w["since_block"])
        for (r, j), i in self.i_e.items():
            a, d = self.alphas[j], self.i_d[r]
            F[i, i] = 1 - a
            F[i, d] = a * self.phi / self.sd(r)
            G[i, d] = a / self.sd(r)
        if self.i_a is not None:
            x = self.i_x[self.ambient]
            c = self.exo.index(self.ambient)
            F[self.i_a, self.i_a] = 1 - self.beta
            F[self.i_a, x] = F[self.i_a, x + 1] = self.beta
            G[self.i_a, k + m + c] = self.beta
        self.F, self.GQG = F, G @ Q @ G.T

    def _build_outputs(self) -> None:
        """Each target's design as a linear map of the state (``M``: design rows), and
        each target's SI output as one (``h``)."""
        n = self.n
        rows = [np.zeros(n)]  # the intercept: no random part
        for r in self.regs:
            row = np.zeros(n)
            row[self.i_d[r]] = 1.0 / self.sd(r)
            rows.append(row)
            for j in range(len(self.alphas)):
                row = np.zeros(n)
                row[self.i_e[(r, j)]] = 1.0
                rows.append(row)
        self.M = np.array(rows)
        self.h = {}
        for t in self.targets:
            h = self.scale[t][1] * (self.weights[t] @ self.M)
            if t in self.rises and self.i_a is not None:
                h = h.copy()
                h[self.i_a] += 1.0
            self.h[t] = h


def _holt_var(err_var: float, h: float, alpha: float, beta: float) -> float:
    """Variance of Holt's h-step forecast (ETS(A,A,N); Hyndman et al. 2008, table 6.1)."""
    if h <= 0:
        return 0.0
    return err_var * (1 + (h - 1) * (alpha ** 2 + alpha * beta * h
                                     + beta ** 2 * h * (2 * h - 1) / 6))


def _max_abs_quantiles(mus: np.ndarray, n_terms: int, q: float) -> np.ndarray:
    """Per row of ``mus`` (time x terms), the ``q`` quantile of the largest |N(mu, 1)|
    over ``n_terms`` terms (those beyond the row's centred): bisection on its CDF."""
    from scipy.special import ndtr

    mus = np.atleast_2d(np.asarray(mus, dtype=float))
    extra = max(0, n_terms - mus.shape[1])
    lo = np.zeros(len(mus))
    hi = np.full(len(mus), 60.0)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        m = mid[:, None]
        cdf = np.prod(ndtr(m - mus) - ndtr(-m - mus), axis=1)
        cdf *= (ndtr(mid) - ndtr(-mid)) ** extra
        below = cdf < q
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def _targets_at(models: _Models, changes: dict, current: dict[str, float]) -> dict[str, float]:
    return {s: c.resolve(current[s]) for s, c in changes.items() if s in current}


def _path(models: _Models, scenario: Scenario, windows: int,
          clock: np.ndarray | None, fault: dict[str, Any] | None) -> dict[str, Any]:
    """One path, window by window: sensor means and spreads, leverage, flags."""
    mo, doc = models, models.doc
    W = mo.window_s
    det = doc["detector"]
    sp = doc["policy"]["setpoint_name"]
    values = mo.values
    d0 = np.array([values[s] - mo.level[s] for s in mo.driven])
    E = {(r, j): det["avg"].get(r, [0.0] * len(mo.alphas))[j] for r in mo.regs
         for j in range(len(mo.alphas))}
    A = det["ambient_avg"] if det["ambient_avg"] is not None else values.get(mo.ambient)
    P = mo.P0.copy()
    names = mo.targets + mo.driven + mo.exo
    out = {s: {"mean": [], "sd": []} for s in names}
    healthy = {s: [] for s in mo.targets}
    leverage, op_distance, flags = [], [], []
    lev_limit = mo.lev_limit
    for i in range(1, windows + 1):
        t_mid = (i - 0.5) * W
        changes = scenario.at(t_mid)
        set_vals = _targets_at(mo, changes, values)
        held = {sp: values[sp]} if sp in mo.i_d else {}
        set_d = {**held, **{s: v for s, v in set_vals.items() if s in mo.i_d}}
        decay = mo.phi ** i
        idx = [mo.i_d[s] for s in set_d]
        B, resid_cov, info = conditional(mo.cov, idx, mo.n_op)
        unset = [j for j in range(len(mo.driven)) if j not in idx]
        shift = np.array([set_d[s] - mo.level[s] - decay * d0[mo.i_d[s]] for s in set_d])
        x = np.empty(len(mo.driven))
        for s, v in set_d.items():
            x[mo.i_d[s]] = v
        if unset:
            x[unset] = (np.array([mo.level[mo.driven[j]] for j in unset]) + decay * d0[unset]
                        + (B @ shift if len(idx) else 0.0))
        # how far the set sensors' shift lies outside the asset's history; the part of
        # the unset sensors' response that comes from beyond its 99 % region is as
        # uncertain as it is large (the history says nothing about it)
        beyond = np.zeros(len(unset))
        if len(idx):
            lev_op = float(shift @ np.linalg.solve(info, shift))
            dist = float(shift @ np.linalg.solve(info / mo.n_op, shift))
            edge = _chi2_99(len(idx))
            if dist > edge and unset:
                beyond = B @ (shift * (1.0 - math.sqrt(edge / dist)))
        else:
            lev_op, dist = 0.0, 0.0
        xe = {}
        for s in mo.exo:
            w = mo.weather[s]
            xe[s] = set_vals[s] if s in set_vals else w["level"] + w["slope"] * i
        # the state's mean: lagged averages of the scaled regressors, lagged ambient
        xs = {r: (x[mo.i_d[r]] - mo.scale[r][0]) / mo.sd(r) for r in mo.regs}
        for (r, j) in E:
            a = mo.alphas[j]
            E[(r, j)] = (1 - a) * E[(r, j)] + a * xs[r]
        if mo.ambient in xe and A is not None:
            A = (1 - mo.beta) * A + mo.beta * xe[mo.ambient]
        P = mo.F @ P @ mo.F.T + mo.GQG
        u = [1.0]
        for r in mo.regs:
            u.append(xs[r])
            u.extend(E[(r, j)] for j in range(len(mo.alphas)))
        u = np.array(u)
        cov_u = mo.M @ P @ mo.M.T
        lev_i = 0.0  # of the expected inputs: the extrapolation test
        tau = clock[i - 1] if clock is not None else float(i)
        for t in mo.targets:
            Pt = mo.rls_p[t]
            lev_mean = float(u @ Pt @ u)
            lev = lev_mean + float(np.sum(Pt * cov_u))  # E[u' P u] over the inputs' spread
            lev_i = max(lev_i, lev_mean)
            mu_t, sd_t = mo.scale[t]
            mean = mu_t + sd_t * float(mo.weights[t] @ u)
            if t in mo.rises and A is not None:
                mean += A
            healthy[t].append(mean)
            var = float(mo.h[t] @ P @ mo.h[t])
            var += sd_t ** 2 * mo.r2[t] / mo.kappa * (1 + lev)
            if unset and len(idx) and lev_op > 0:
                w = mo.weights[t]
                c = np.zeros(len(unset))
                for jj, j in enumerate(unset):
                    r = mo.driven[j]
                    if r in mo.regs:
                        base = 1 + mo.regs.index(r) * (1 + len(mo.alphas))
                        c[jj] = sd_t * float(w[base:base + 1 + len(mo.alphas)].sum()) / mo.sd(r)
                var += lev_op * float(c @ resid_cov @ c) + float(c @ beyond) ** 2
            if fault is not None:  # the fault's residual, carried on its clock by Holt
                mean += fault["level"].get(t, 0.0) + fault["trend"].get(t, 0.0) * tau
                var += _holt_var(sd_t ** 2 * mo.r2[t] / mo.kappa, tau, fault["alpha"],
                                 fault["beta"])
            out[t]["mean"].append(mean)
            out[t]["sd"].append(math.sqrt(max(var, 0.0)))
        for s in mo.driven:
            j = mo.i_d[s]
            var = float(P[j, j])
            if unset and j in unset and lev_op > 0:
                jj = unset.index(j)
                var += lev_op * float(resid_cov[jj, jj]) + float(beyond[jj]) ** 2
            out[s]["mean"].append(float(x[j]))
            out[s]["sd"].append(math.sqrt(max(var, 0.0)))
        for s in mo.exo:
            var = float(P[mo.i_x[s], mo.i_x[s]]) + mo.weather[s]["noise_var"]
            out[s]["mean"].append(float(xe[s]))
            out[s]["sd"].append(math.sqrt(max(var, 0.0)))
        leverage.append(lev_i)
        op_distance.append(dist)
        why = []
        if lev_i > lev_limit:
            why.append("models")
        if len(idx) and dist > _chi2_99(len(idx)):
            why.append("operating point")
        if mo.rises and i > mo.weather_windows:
            why.append("weather")
        flags.append(why)
    return {"sensors": out, "healthy": healthy, "leverage": leverage,
            "op_distance": op_distance, "flags": flags, "leverage_limit": lev_limit}


LAW_PRECISION = 0.25  # a life law needs the levels within +-25 % (90 % interval)


def _precise(path: dict, name: str, i: int) -> bool:
    s = path["sensors"][name]
    return Z90 * s["sd"][i] <= LAW_PRECISION * abs(s["mean"][i])


def _fault(doc: dict[str, Any], models: _Models) -> dict[str, Any] | None:
    """The developing fault's carried residuals and its component, while an alert is
    open."""
    if not doc["policy"].get("alert_open"):
        return None
    fid = doc["fidelity"]
    level = {t: fid["resid_level"].get(t, 0.0) for t in models.targets}
    trend = {t: fid["resid_trend"].get(t, 0.0) for t in models.targets}
    spread = {t: models.scale[t][1] * math.sqrt(models.r2[t]) for t in models.targets}
    worst = max(models.targets, key=lambda t: abs(level[t]) / spread[t])
    return {"level": level, "trend": trend, "sensor": worst,
            "component": component(models.asset_type, worst),
            "alpha": fid.get("level_alpha", 0.2), "beta": fid.get("trend_beta", 0.05)}


def _health(doc: dict[str, Any], clock: np.ndarray, windows: int,
            rate_tail: float) -> dict[str, Any]:
    """Health index path and remaining useful life on the fault's clock ``clock``."""
    h = doc["health"]
    W = float(doc["window_s"])
    fl, cap = h["failure_level"], h["max_rul_s"]
    level = h["level"] if h["level"] is not None else h["health"]
    trend = h["trend"] if h["n"] >= 3 else 0.0
    err = doc["fidelity"].get("health_err_var") or 0.0
    mean, lo, hi = [], [], []
    for i in range(windows):
        tau = float(clock[i])
        m = level + trend * tau
        sd = math.sqrt(_holt_var(err, tau, h["alpha"], h["beta"]))
        mean.append(min(1.0, max(0.0, m)))
        lo.append(min(1.0, max(0.0, m - Z90 * sd)))
        hi.append(min(1.0, max(0.0, m + Z90 * sd)))
    # remaining life: where the forecast (and its band's edges) cross the failure level,
    # on a clock that runs on past the horizon at the last window's rate
    cap_windows = int(cap / W)
    extra = max(0, cap_windows - windows)
    full = np.concatenate([np.asarray(clock, float),
                           clock[-1] + rate_tail * np.arange(1, extra + 1)])
    times = np.arange(1, len(full) + 1) * W
    sds = np.sqrt(np.maximum(err * (1 + (full - 1) * (h["alpha"] ** 2 + h["alpha"] * h["beta"]
                                                      * full + h["beta"] ** 2 * full
                                                      * (2 * full - 1) / 6)), 0.0))
    sds[full <= 0] = 0.0
    fc = level + trend * full

    def crossing(series: np.ndarray) -> float | None:
        if h["health"] <= fl:
            return 0.0
        below = np.flatnonzero(series <= fl)
        return float(times[below[0]]) if len(below) else None

    return {"mean": mean, "lo": lo, "hi": hi,
            "rul_s": crossing(fc), "rul_lo_s": crossing(fc - Z90 * sds),
            "rul_hi_s": crossing(fc + Z90 * sds)}


def _scores(models: _Models, path: dict, fault: dict | None, doc: dict,
            keep: list[int]) -> dict[str, list]:
    """Median and 90 % band of the anomaly score at the windows ``keep``."""
    n_terms = doc["detector"]["n_terms"]
    noise = list(doc.get("noise_z", {}).values()) if fault is not None else []
    cols = [np.full(len(keep), z) for z in noise]
    if fault is not None:
        lev = np.asarray(path["leverage"])[keep]
        for t in models.targets:
            sd_det = models.scale[t][1] * np.sqrt(models.r2[t] * (1 + lev))
            shift = (np.asarray(path["sensors"][t]["mean"])[keep]
                     - np.asarray(path["healthy"][t])[keep])
            cols.append(shift / sd_det)
    mus = np.column_stack(cols) if cols else np.zeros((len(keep), 0))
    score = np.vectorize(lambda z: 1.0 - tail_probability(z, n_terms))
    return {"median": score(_max_abs_quantiles(mus, n_terms, 0.5)),
            "lo": score(_max_abs_quantiles(mus, n_terms, 0.05)),
            "hi": score(_max_abs_quantiles(mus, n_terms, 0.95))}


def roll_forward(doc: dict[str, Any], scenario: Scenario,
                 resolution_s: float | None = None) -> dict[str, Any]:
    """Baseline and scenario paths of the asset of ``doc`` up to the scenario's horizon.

    Returns a JSON-ready dict: ``times_s`` (offsets from ``from_ms`` of the reported
    windows' ends), ``baseline`` and ``scenario`` (each: ``sensors`` -> ``mean``, ``lo``,
    ``hi``, ``unit``; ``health``; ``anomaly_score``; ``rul_s`` with its interval;
    ``extrapolating``), the fault and life law in use, and notes.
    """
    mo = _Models(doc)
    W = mo.window_s
    windows = max(1, int(math.ceil(scenario.horizon_s / W)))
    fault = _fault(doc, mo)
    base_clock = np.arange(1, windows + 1, dtype=float)
    base = _path(mo, Scenario([], scenario.horizon_s), windows, base_clock, fault)
    # the scenario's first pass gives its healthy levels; the life law turns them into
    # the fault's clock, and the second pass carries the fault on that clock
    first = _path(mo, scenario, windows, base_clock, None)
    part = fault["component"] if fault is not None else None
    ratios = np.ones(windows)
    law_windows = 0
    if part is not None:
        healthy = _path(mo, Scenario([], scenario.horizon_s), windows, base_clock, None)
        watched = [c.name for c in component_sensors(mo.asset_type, part)
                   if c.name in mo.targets]
        for i in range(windows):
            # a law on levels the models cannot tell apart is no law: it applies only
            # where both paths predict the component's levels to within LAW_PRECISION
            if not all(_precise(p, s, i) for p in (first, healthy) for s in watched):
                continue
            scen = {s: v["mean"][i] for s, v in first["sensors"].items()}
            bl = {s: v["mean"][i] for s, v in healthy["sensors"].items()}
            ratios[i] = rate_ratio(part, scen, bl, mo.asset_type)
            law_windows += 1
    clock = np.cumsum(ratios)
    scen = _path(mo, scenario, windows, clock, fault) if fault is not None else first
    step = max(1, int(round((resolution_s or max(W, scenario.horizon_s / 120)) / W)))
    keep = list(range(step - 1, windows, step))
    if keep[-1] != windows - 1:
        keep.append(windows - 1)

    def report(path: dict, clk: np.ndarray, rate_tail: float) -> dict[str, Any]:
        sensors = {}
        for s, v in path["sensors"].items():
            m, sd = np.asarray(v["mean"]), np.asarray(v["sd"])
            cat = sensor(mo.asset_type, s)
            # beyond the catalog's plausible range a value is a broken reading, not a
            # forecast: such a window is flagged, and the answer kept within the range
            out_of_range = (m < cat.low) | (m > cat.high)
            for i in np.flatnonzero(out_of_range):
                if "implausible" not in path["flags"][i]:
                    path["flags"][i].append("implausible")
            sensors[s] = {"unit": cat.unit,
                          "mean": _r(np.clip(m, cat.low, cat.high)[keep]),
                          "lo": _r(np.clip(m - Z90 * sd, cat.low, cat.high)[keep]),
                          "hi": _r(np.clip(m + Z90 * sd, cat.low, cat.high)[keep]),
                          "sd": _r(sd[keep])}
        health = _health(doc, clk, windows, rate_tail)
        scores = _scores(mo, path, fault, doc, keep)
        flagged = [i for i, f in enumerate(path["flags"]) if f]
        reasons = sorted({r for f in path["flags"] for r in f})
        return {
            "sensors": sensors,
            "health": {k: _r(np.asarray(health[k])[keep]) for k in ("mean", "lo", "hi")},
            "anomaly_score": {k: _r(scores[k]) for k in scores},
            "rul_s": health["rul_s"], "rul_lo_s": health["rul_lo_s"],
            "rul_hi_s": health["rul_hi_s"],
            "leverage": _r(np.asarray(path["leverage"])[keep]),
            "extrapolating": bool(flagged),
            "extrapolating_at": [bool(path["flags"][i]) for i in keep],
            "extrapolation": {
                "windows": len(flagged), "from_s": (flagged[0] + 1) * W if flagged else None,
                "reasons": reasons, "max_leverage": round(max(path["leverage"]), 6),
                "leverage_limit": round(path["leverage_limit"], 6),
                "max_operating_distance": round(max(path["op_distance"]), 3),
            },
        }

    result = {
        "asset_id": doc["asset_id"], "asset_type": mo.asset_type, "from_ms": doc["ts_ms"],
        "window_s": W, "horizon_s": scenario.horizon_s,
        "scenario": {**scenario.to_dict(), "text": scenario.describe()},
        "times_s": [float((i + 1) * W) for i in keep],
        "condition_sensors": list(mo.targets),
        "process_sensors": list(mo.driven + mo.exo),
        "baseline": report(base, base_clock, 1.0),
        "scenario_path": report(scen, clock, float(ratios[-1])),
        "fault": None if fault is None else {
            "sensor": fault["sensor"], "component": fault["component"],
            "life_law": LAWS.get(fault["component"]) if fault["component"] else None,
            "rate_ratio_end": round(float(ratios[-1]), 6),
            "rate_ratio_mean": round(float(ratios.mean()), 6),
            "law_applied_share": round(law_windows / windows, 4)},
        "fidelity": {"error": doc["fidelity"].get("error"),
                     "coverage": doc["fidelity"].get("coverage")},
        "notes": _notes(doc, fault),
    }
    return result


def _notes(doc: dict[str, Any], fault: dict | None) -> list[str]:
    notes = []
    fid = doc["fidelity"]
    if fid.get("error") is not None and fid["error"] > 0.05:
        notes.append(f"the twin's running fidelity is poor: it misses its condition sensors "
                     f"by {fid['error']:.1%} a window ahead")
    if fid.get("coverage") is not None and fid["coverage"] < 0.8:
        notes.append(f"only {fid['coverage']:.0%} of recent windows fell inside the models' "
                     f"90 % intervals")
    if fault is not None and fault["component"] is None:
        notes.append(f"the developing fault shows on {fault['sensor']}, which watches no "
                     f"component with a life law: no operating point is assumed to slow it")
    if fault is not None:
        notes.append("a fault is developing: its residuals are carried forward on its own "
                     "clock; healthy-asset fidelity figures do not apply")
    return notes


def _r(a: np.ndarray) -> list[float]:
    """Rounded to 7 significant digits for JSON."""
    return [float(f"{v:.7g}") for v in np.asarray(a, dtype=float)]


def value_at(result: dict[str, Any], path: str, name: str, t_s: float) -> dict[str, float]:
    """``mean``, ``lo``, ``hi`` of sensor ``name`` on ``path`` (``baseline`` or
    ``scenario_path``) at the reported time nearest ``t_s``."""
    times = result["times_s"]
    i = min(range(len(times)), key=lambda j: abs(times[j] - t_s))
    s = result[path]["sensors"][name]
    return {"t_s": times[i], "mean": s["mean"][i], "lo": s["lo"][i], "hi": s["hi"][i]}
