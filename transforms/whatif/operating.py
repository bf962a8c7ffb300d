"""How an asset's operating point moves: its level, how its process sensors vary together,
and how long a deviation lasts.

A what-if question changes the operating point ("run at 140 rad/s", "flow +20 %"); the
condition sensors follow from it through the detector's residual models. Those need every
process sensor, so the twin also learns how the ones a scenario does not set follow the
ones it does, from the asset's own history:

- **level**: an exponential average of each process sensor's window mean (memory about
  ``1 / level_alpha`` windows), restarted at a regime change (a jump the detector
  reported): where the asset is being run now;
- **covariance** of the deviations from the level (window mean minus the previous
  level) of the driven process sensors (every process sensor but the weather), with a
  long memory: how they move together, e.g. flow, pressures and current with the load,
  and with speed wherever the speed has varied. Conditioning on the sensors a scenario
  sets gives the others (Gaussian conditioning: a linear regression of the unset on the
  set, with its residual covariance);
- **persistence**: one AR(1) coefficient for the driven sensors (the lag-one
  autocorrelation of their main common factor, the load): how fast a present deviation
  fades from a forecast;
- **the weather** (exogenous sensors) as a local linear trend (a structural time series
  model): a level followed by Holt's method, a slope from the means of the last two
  blocks of ``block`` windows (an hour), and how much that slope itself changes from
  block to block (a random walk's variance: a daily cycle bends the trend), so a
  forecast hours ahead says how far the weather may have moved. Until three blocks are
  seen, the slope is taken as zero and its variance as unknown (``blocks`` says so).

The weather is taken as independent of how the asset is run. Everything is in SI units;
the statistics learn only from windows the detector learns from (``gate``), the level
follows every window.

>>> import random
>>> rng = random.Random(3)
>>> op = OperatingPoint("pump")
>>> load = 0.6
>>> for _ in range(300):
...     load += 0.1 * (0.6 - load) + rng.gauss(0, 0.01)
...     op.learn({"flow": 0.08 * load, "discharge_pressure": 4.6e5 - 1e5 * load,
...               "suction_pressure": 1.5e5 - 4e4 * load, "motor_current": 18 + 42 * load,
...               "speed": 155.0 + rng.gauss(0, 0.1), "ambient_temp": 293.0})
>>> fit = op.export()
>>> round(fit["phi"], 1)
0.9
"""

from __future__ import annotations

import numpy as np

from transforms.catalog import roles, sensors_of


class OperatingPoint:
    """Level, covariance and persistence of one asset's process sensors (module docs).

    Parameters
    ----------
    asset_type
        Selects the process sensors from the catalog.
    level_alpha
        Weight of the newest window in the level (memory about ``1 / level_alpha``).
    fading
        Weight of the newest deviation in the covariances (a long memory, so that what
        the asset showed once, a speed step say, is remembered for days).
    block
        Windows per block of the weather's trend (an hour of 60 s windows).
    weather_alpha
        Holt's weight of the newest window in the weather's level.
    """

    def __init__(self, asset_type: str, level_alpha: float = 1 / 60,
                 fading: float = 0.001, block: int = 60, weather_alpha: float = 0.2) -> None:
        self.asset_type = asset_type
        self.level_alpha = level_alpha
        self.fading = fading
        self.block = block
        self.weather_alpha = weather_alpha
        role = roles(asset_type)  # from the asset type's model
        names = [s.name for s in sensors_of(asset_type) if s.name in role.process]
        self.driven = [s for s in names if s not in role.exogenous]
        self.exogenous = [s for s in names if s in role.exogenous]
        # learned state, built on first use
        self.level: dict[str, float] = {}
        self.n = 0
        self._cov: np.ndarray | None = None  # deviations of the driven sensors
        self._lag1: np.ndarray | None = None  # E[d_t d_{t-1}']
        self._prev: np.ndarray | None = None  # the previous window's deviation
        # the weather, per exogenous sensor: Holt level, block sums, block means, slope,
        # slope variance, white-noise variance around the trend
        self._weather: dict[str, dict] = {}

    def learn(self, means: dict[str, float], gate: bool = True, jump: bool = False) -> None:
        """Take one window's means (SI); ``gate``: the window may teach the statistics (the
        detector learns from it); ``jump``: a regime change, the level restarts here."""
        level = self.level
        first = not level
        dev = None
        if not first:
            try:
                dev = np.array([means[s] - level[s] for s in self.driven])
            except KeyError:  # a sensor missing from this window (or from the level)
                dev = None
        if gate and dev is not None and not jump:
            self.n += 1
            f = max(self.fading, 1.0 / self.n)
            col = dev[:, None]
            if self._cov is None:
                self._cov = col * dev
                self._lag1 = np.zeros_like(self._cov)
            else:
                self._cov *= 1 - f
                self._cov += (f * col) * dev
                if self._prev is not None:
                    self._lag1 *= 1 - f
                    self._lag1 += (f * col) * self._prev
        self._prev = None if jump else dev
        for s in self.exogenous:
            if s in means:
                self._learn_weather(s, float(means[s]))
        a = self.level_alpha
        for s, v in means.items():
            if first or jump or s not in level:
                level[s] = float(v)
            else:
                level[s] += a * (v - level[s])

    def _learn_weather(self, s: str, x: float) -> None:
        w = self._weather.get(s)
        if w is None:
            w = self._weather[s] = {"level": x, "sum": 0.0, "count": 0, "means": [],
                                    "slope": 0.0, "slopes": [], "slope_var": None,
                                    "noise_var": None}
        ahead = w["level"] + w["slope"]  # Holt's one-window forecast
        err = x - ahead
        nv = w["noise_var"]
        w["noise_var"] = err * err if nv is None else nv + self.fading * (err * err - nv)
        w["level"] = ahead + self.weather_alpha * err
        w["sum"] += x
        w["count"] += 1
        if w["count"] == self.block:
            w["blocks"] = w.get("blocks", 0) + 1
            w["means"] = (w["means"] + [w["sum"] / self.block])[-2:]
            w["sum"], w["count"] = 0.0, 0
            if len(w["means"]) == 2:
                w["slope"] = (w["means"][1] - w["means"][0]) / self.block
                w["slopes"] = (w["slopes"] + [w["slope"]])[-2:]
                if len(w["slopes"]) == 2:
                    d2 = (w["slopes"][1] - w["slopes"][0]) ** 2 / self.block
                    w["slope_var"] = d2 if w["slope_var"] is None else (
                        0.75 * w["slope_var"] + 0.25 * d2)

    def phi(self) -> float:
        """Persistence of the driven sensors' deviations per window: the lag-one
        autocorrelation of their main common factor (the top principal component of the
        deviations' correlation)."""
        if self._cov is None or self.n < 3:
            return 0.0
        sd = np.sqrt(np.maximum(np.diag(self._cov), 1e-300))
        corr = self._cov / np.outer(sd, sd)
        lag = self._lag1 / np.outer(sd, sd)
        _, vecs = np.linalg.eigh(corr)
        v = vecs[:, -1]
        denom = float(v @ corr @ v)
        if denom <= 0:
            return 0.0
        return float(min(0.999, max(0.0, v @ lag @ v / denom)))

    def export(self) -> dict:
        """The learned statistics as plain data (see :mod:`transforms.whatif.model`)."""
        exo = {}
        for s, w in self._weather.items():
            exo[s] = {"level": float(w["level"]), "slope": float(w["slope"]),
                      "slope_var": None if w["slope_var"] is None else float(w["slope_var"]),
                      "noise_var": float(w["noise_var"] or 0.0),
                      "since_block": int(w["count"]), "block": int(self.block),
                      "blocks": int(w.get("blocks", 0))}
        return {
            "driven": list(self.driven),
            "exogenous": list(self.exogenous),
            "level": {s: float(v) for s, v in self.level.items()},
            "cov": None if self._cov is None else [[float(v) for v in row]
                                                   for row in self._cov],
            "phi": self.phi(),
            "exo": exo,
            "n": int(self.n),
            "level_alpha": float(self.level_alpha),
            "fading": float(self.fading),
            "weather_alpha": float(self.weather_alpha),
        }


def conditional(cov: np.ndarray, set_idx: list[int], n_eff: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian conditioning of deviations with covariance ``cov`` on the ones at
    ``set_idx``: ``(B, residual covariance, information)`` where the unset deviations'
    mean is ``B @ d_set``, and ``information`` (``n_eff * cov_set``) turns a shift of the
    set sensors into its leverage (``shift' inv(information) shift``: how many times the
    history's spread the shift is, per effective window). Unset sensors in index order."""
    k = cov.shape[0]
    unset = [i for i in range(k) if i not in set_idx]
    if not set_idx:
        return np.zeros((len(unset), 0)), cov[np.ix_(unset, unset)], np.zeros((0, 0))
    s_s = cov[np.ix_(set_idx, set_idx)]
    s_us = cov[np.ix_(unset, set_idx)]
    # a ridge of a millionth of each variance keeps a sensor that never moved invertible
    ridge = np.diag(np.maximum(np.diag(s_s), 1e-300)) * 1e-6
    inv = np.linalg.inv(s_s + ridge)
    b = s_us @ inv
    resid = cov[np.ix_(unset, unset)] - b @ s_us.T
    resid = 0.5 * (resid + resid.T)
    return b, resid, max(n_eff, 1.0) * (s_s + ridge)


def effective_windows(n: int, fading: float) -> float:
    """How many windows a fading average over ``n`` windows is worth."""
    if n <= 0:
        return 0.0
    return min(float(n), (2 - fading) / fading) if fading > 0 else float(n)

__all__ = ["OperatingPoint", "conditional", "effective_windows"]
