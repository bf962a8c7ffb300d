"""What one window's model work would cost if many assets' windows were computed at once.

A small measurement behind the README's "Where the targets stand": the numpy core of one
window step of a pump (8 sensors, 10 readings; the window statistics, then one RLS
covariance step of 1 + 3 * 5 inputs, the leverage, predictions, z-scores and weight
updates of its 2 targets), stacked over N assets, timed per asset and window (best of
20). It leaves out what a real detector bank would still pay per asset: River's ADWIN
per process sensor, gathering and scattering each twin's arrays, the output records.
Not imported by anything; run it with

    .venv/bin/python infra/bench/batched_core.py
"""

from __future__ import annotations

import time

import numpy as np

ROWS, SENSORS, INPUTS, TARGETS = 10, 8, 1 + 3 * 5, 2
LAMBDA = 0.999


def best(f, repeat: int = 20) -> float:
    out = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        out = min(out, time.perf_counter() - t0)
    return out


def measure(n: int, rng: np.random.Generator) -> tuple[float, float]:
    """Seconds per asset and window: (window statistics, RLS step and z-scores)."""
    tc = np.arange(float(ROWS)) - (ROWS - 1) / 2
    var_t = float(tc @ tc)
    x = rng.normal(size=(n, ROWS, SENSORS))
    u = rng.normal(size=(n, INPUTS))
    y = rng.normal(size=(n, TARGETS))
    r2 = np.ones((n, TARGETS))
    state = {"P": np.tile(np.eye(INPUTS), (n, 1, 1)), "W": np.zeros((n, TARGETS, INPUTS))}

    def features():
        mean = x.mean(1)
        xc = x - mean[:, None]
        ss = (xc * xc).sum(1)
        slope = np.einsum("t,nts->ns", tc, xc) / var_t
        rstd = np.sqrt(np.maximum((ss - slope * slope * var_t) / ROWS, 0))
        return np.stack((mean, np.sqrt(ss / ROWS), x.min(1), x.max(1), slope, rstd), -1)

    def step():
        P, W = state["P"], state["W"]
        Pu = np.einsum("nij,nj->ni", P, u)
        lev = np.einsum("ni,ni->n", u, Pu)
        resid = y - np.einsum("nkd,nd->nk", W, u)
        z = resid / np.sqrt(r2 * (1 + lev[:, None]))
        k = Pu / (LAMBDA + lev)[:, None]
        P = (P - k[:, :, None] * Pu[:, None, :]) / LAMBDA
        P = 0.5 * (P + P.transpose(0, 2, 1))
        np.clip(P, -1e6, 1e6, out=P)
        state["P"], state["W"] = P, W + resid[:, :, None] * k[:, None, :]
        return z

    return best(features) / n, best(step) / n


def main() -> None:
    rng = np.random.default_rng(1)
    for n in (1, 10, 100, 1000):
        tf, ts = measure(n, rng)
        print(f"N={n:5d} assets: window statistics {tf * 1e6:6.2f} us, "
              f"RLS step + z-scores {ts * 1e6:6.2f} us per asset and window")


if __name__ == "__main__":
    main()
