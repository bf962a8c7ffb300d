"""The fleet: assets stepped chunk by chunk, their samples sent through three vendors.

:meth:`Fleet.messages` yields every vendor message in broker arrival order. Generation is
lazy (ten minutes of event time at a time), so memory stays flat whatever the duration,
and a setpoint accepted by :meth:`Fleet.apply_setpoint` shapes every chunk made after it.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from transforms.catalog import sensors_of
from transforms.normalize import VENDORS, encode_message
from transforms.sample import Sample
from transforms.simulator.defects import (
    FATES,
    break_message,
    draw_fates,
    malformed_kinds,
)
from transforms.simulator.physics import AssetModel
from transforms.simulator.scenario import AssetSpec, FleetConfig, plan

CHUNK_S = 600.0
SETPOINT_NAME = "speed"
SETPOINT_LIMITS = (0.5, 1.1)  # the asset's own interlock, as a fraction of nominal speed
_CLEAN, _DROPOUT, _MALFORMED, _DUPLICATE, _OOO, _LATE = range(len(FATES))


@dataclass(frozen=True)
class RawMessage:
    """One vendor message as a broker would hold it."""

    topic: str  # twin.raw.<vendor>
    vendor: str
    key: bytes  # asset id
    value: bytes  # Confluent-framed Avro (unless it is malformed)
    event_ms: int  # the sample's true event time
    arrival_ms: int  # when the broker got it (its log-append time)
    defect: str  # clean | duplicate | out_of_order | late | malformed:<kind>


class Fleet:
    """A seeded, deterministic fleet of pumps and motors (see :mod:`transforms.simulator`)."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.scenario = plan(config)
        self.assets: list[AssetSpec] = self.scenario.assets
        self._by_id = {a.asset_id: a for a in self.assets}
        self.interval_ms = config.interval_s * 1000.0
        self.samples_per_asset = int(config.duration_s / config.interval_s)
        self.per_chunk = max(1, int(round(CHUNK_S / config.interval_s)))
        self.chunks = math.ceil(self.samples_per_asset / self.per_chunk)
        self._kinds = {v: list(malformed_kinds(v)) for v in VENDORS}
        self._setpoints: dict[str, list[tuple[int, float]]] = {}
        self._loads: dict[str, list[tuple[int, float]]] = {}
        self.setpoint_log: list[dict[str, Any]] = []
        self.models: dict[str, AssetModel] = {}  # the assets' physics, once generating

    # -- closing the loop -----------------------------------------------------------------

    def apply_setpoint(self, asset_id: str, name: str, value: float,
                       at_ms: int) -> tuple[bool, str]:
        """Ask ``asset_id`` to run at ``value`` (SI) of ``name`` from ``at_ms`` on.

        Returns ``(accepted, reason)``. The asset's interlock refuses unknown assets and
        setpoints, non-finite values and speeds outside :data:`SETPOINT_LIMITS` of nominal.
        Accepted setpoints shape samples generated after the call.
        """
        spec = self._by_id.get(asset_id)
        if spec is None:
            ok, why = False, f"unknown asset {asset_id!r}"
        elif name != SETPOINT_NAME:
            ok, why = False, f"{asset_id} has no setpoint {name!r}"
        elif not math.isfinite(value):
            ok, why = False, f"non-finite setpoint {value!r}"
        else:
            frac = value / spec.nominal_speed
            lo, hi = SETPOINT_LIMITS
            if not lo <= frac <= hi:
                ok, why = False, f"{frac:.2f} of nominal speed is outside [{lo}, {hi}]"
            else:
                ok, why = True, f"speed {frac:.3f} of nominal from {at_ms}"
                self._setpoints.setdefault(asset_id, []).append((int(at_ms), frac))
                self._setpoints[asset_id].sort()
        self.setpoint_log.append({"asset_id": asset_id, "name": name, "value": value,
                                  "at_ms": at_ms, "accepted": ok, "reason": why})
        return ok, why

    def change_load(self, asset_id: str, delta: float, at_ms: int) -> None:
        """From ``at_ms`` on, ask ``asset_id`` for ``delta`` (a fraction of rated) more load
        than its base (a change of demand: another duty, a valve opened). Like a setpoint,
        it shapes samples generated after the call; the load still wanders around it."""
        if asset_id not in self._by_id:
            raise KeyError(f"unknown asset {asset_id!r}")
        if not math.isfinite(delta):
            raise ValueError(f"non-finite load change {delta!r}")
        self._loads.setdefault(asset_id, []).append((int(at_ms), float(delta)))
        self._loads[asset_id].sort()

    def load_offset(self, asset_id: str, t_ms: np.ndarray) -> np.ndarray | None:
        changes = self._loads.get(asset_id)
        if not changes:
            return None
        out = np.zeros(len(t_ms))
        for at_ms, delta in changes:
            out[t_ms >= at_ms] = delta
        return out

    def speed_fraction(self, asset_id: str, t_ms: np.ndarray) -> np.ndarray:
        frac = np.ones(len(t_ms))
        for at_ms, value in self._setpoints.get(asset_id, ()):
            frac[t_ms >= at_ms] = value
        return frac

    # -- what an asset would have done -------------------------------------------------------

    def rerun(self, asset_id: str, setpoints: list[tuple[int, float]] | None = None,
              loads: list[tuple[int, float]] | None = None, until_ms: int | None = None,
              window_ms: int = 60_000) -> dict[str, Any]:
        """One asset's true sensor values again, from the start, under the given speed
        setpoints (``(at_ms, fraction of nominal)``) and load changes (``(at_ms, delta)``)
        instead of the fleet's: the same seed, so the same load wander, weather, fault
        and noise. Returns the mean of every sensor per event-time window
        (``{"window_start_ms": array, "values": {sensor: array}, "failed_ms": ...}``;
        windows in which the asset is stopped for repair are left out) and, with the wear
        law, when the fault failed. ``until_ms`` may lie past the fleet's end (the same
        physics goes on). The fleet itself is not touched."""
        spec = self._by_id[asset_id]
        model = AssetModel(spec, self.config.interval_s, self.config.start_ms,
                           self.scenario.faults.get(asset_id),
                           self.scenario.regimes.get(asset_id), wear_law=self.config.wear_law)
        phys, _ = self._rngs(spec)
        until = self.config.end_ms if until_ms is None else until_ms
        starts, sums, counts = [], {}, []
        fault = self.scenario.faults.get(asset_id)
        for c in range(10**9):  # past the fleet's end too: the same physics goes on
            k = np.arange(c * self.per_chunk, (c + 1) * self.per_chunk)
            t = self.config.start_ms + spec.phase_ms + np.rint(k * self.interval_ms).astype(
                np.int64)
            if t[0] >= until:
                break
            frac = np.ones(len(t))
            for at_ms, value in sorted(setpoints or ()):
                frac[t >= at_ms] = value
            offset = None
            if loads:
                offset = np.zeros(len(t))
                for at_ms, delta in sorted(loads):
                    offset[t >= at_ms] = delta
            values = model.step(t, frac, phys, offset)
            if model.wear_law:
                online = ~model.offline(t)
            elif fault is not None:
                online = (t < fault.failure_ms) | (t >= fault.repaired_ms)
            else:
                online = np.ones(len(t), dtype=bool)
            online &= t < until
            if not online.any():
                continue
            t = t[online]
            win = t - t % window_ms
            uniq, inv = np.unique(win, return_inverse=True)
            starts.append(uniq)
            counts.append(np.bincount(inv))
            for name, arr in values.items():
                sums.setdefault(name, []).append(np.bincount(inv, weights=arr[online]))
        if not starts:
            return {"window_start_ms": np.empty(0, dtype=np.int64), "values": {},
                    "failed_ms": model.failed_ms}
        # a window cut by a chunk boundary: merge its parts
        allw = np.concatenate(starts)
        uniq, inv = np.unique(allw, return_inverse=True)
        n = np.bincount(inv, weights=np.concatenate(counts))
        means = {name: np.bincount(inv, weights=np.concatenate(parts)) / n
                 for name, parts in sums.items()}
        return {"window_start_ms": uniq, "values": means, "failed_ms": model.failed_ms}

    # -- generation -------------------------------------------------------------------------

    def _grid(self, spec: AssetSpec, chunk: int) -> np.ndarray:
        k = np.arange(chunk * self.per_chunk,
                      min((chunk + 1) * self.per_chunk, self.samples_per_asset))
        return self.config.start_ms + spec.phase_ms + np.rint(k * self.interval_ms).astype(
            np.int64)

    def _online(self, spec: AssetSpec, t_ms: np.ndarray) -> np.ndarray:
        f = self.scenario.faults.get(spec.asset_id)
        if f is None:
            return np.ones(len(t_ms), dtype=bool)
        model = self.models.get(spec.asset_id)
        if model is not None and model.wear_law:  # the failure the law brought about
            return ~model.offline(t_ms)
        return (t_ms < f.failure_ms) | (t_ms >= f.repaired_ms)

    def _rngs(self, spec: AssetSpec) -> tuple[np.random.Generator, np.random.Generator]:
        return (np.random.default_rng([self.config.seed, 0, spec.index]),
                np.random.default_rng([self.config.seed, 1, spec.index]))

    def _chunks(self) -> Iterator[tuple[int, list[tuple[AssetSpec, np.ndarray, Any, Any]]]]:
        """Per chunk: for each asset its event times, true values and fates (all samples)."""
        models = self.models = {
            a.asset_id: AssetModel(a, self.config.interval_s, self.config.start_ms,
                                   self.scenario.faults.get(a.asset_id),
                                   self.scenario.regimes.get(a.asset_id),
                                   wear_law=self.config.wear_law)
            for a in self.assets}
        rngs = {a.asset_id: self._rngs(a) for a in self.assets}
        for c in range(self.chunks):
            rows = []
            for a in self.assets:
                t = self._grid(a, c)
                phys, fate_rng = rngs[a.asset_id]
                values = models[a.asset_id].step(t, self.speed_fraction(a.asset_id, t), phys,
                                                 self.load_offset(a.asset_id, t))
                fates = draw_fates(self.config, len(t), fate_rng, len(self._kinds[a.vendor]))
                rows.append((a, t, values, fates))
            yield c, rows

    def samples(self) -> Iterator[Sample]:
        """Every sample the assets take while running (no transport defects), chunk by chunk."""
        for _, rows in self._chunks():
            for a, t, values, fates in rows:
                online = self._online(a, t)
                for i in np.flatnonzero(online):
                    yield self._sample(a, t, values, fates, i)

    def _sample(self, a: AssetSpec, t: np.ndarray, values: dict[str, np.ndarray], fates,
                i: int) -> Sample:
        names = [s.name for s in sensors_of(a.asset_type)][:self.config.sensors]
        quality = {}
        if fates.quality[i]:
            flagged = names[int(fates.which[i] * len(names))]
            quality[flagged] = "uncertain" if fates.quality[i] == 1 else "bad"
        return Sample(a.asset_id, a.asset_type, int(t[i] + fates.jitter_ms[i]),
                      {n: float(values[n][i]) for n in names}, quality)

    def messages(self) -> Iterator[RawMessage]:
        """Every vendor message, in arrival order (ties broken by generation order)."""
        for _, batch in self.message_chunks():
            yield from batch

    def message_chunks(self) -> Iterator[tuple[int, list[RawMessage]]]:
        """:meth:`messages` cut into ``(chunk, messages)`` for ``chunk`` in
        ``range(self.chunks)``, each list in arrival order and every message of a chunk
        arriving before those of the next. The cut is deterministic, so an engine can
        number the chunks (Flink's number-sequence source) and regenerate chunk ``c`` after
        a restart; setpoints applied while generating change later chunks."""
        heap: list[tuple[int, int, RawMessage]] = []
        seq = 0
        for c, rows in self._chunks():
            for a, t, values, fates in rows:
                online = self._online(a, t)
                for i in np.flatnonzero(online):
                    for m in self._fate(a, t, values, fates, int(i)):
                        heapq.heappush(heap, (m.arrival_ms, seq, m))
                        seq += 1
            # later chunks only hold samples at or after this event time, arriving later
            horizon = self.config.start_ms + (c + 1) * self.per_chunk * self.interval_ms - 1000
            if c == self.chunks - 1:
                horizon = float("inf")
            batch = []
            while heap and heap[0][0] < horizon:
                batch.append(heapq.heappop(heap)[2])
            yield c, batch

    def _fate(self, a: AssetSpec, t, values, fates, i: int) -> list[RawMessage]:
        fate = int(fates.fate[i])
        if fate == _DROPOUT:
            return []
        sample = self._sample(a, t, values, fates, i)
        payload = encode_message(a.vendor, sample)
        arrival = sample.ts_ms + int(fates.delay_ms[i])
        topic, key = f"twin.raw.{a.vendor}", a.asset_id.encode()
        if fate == _MALFORMED:
            kind = self._kinds[a.vendor][int(fates.kind[i])]
            rng = random.Random(f"{self.config.seed}:{a.index}:{sample.ts_ms}")
            if kind == "impossible_value":
                sample = Sample(sample.asset_id, sample.asset_type, sample.ts_ms,
                                sample.values, {})
            bad = break_message(a.vendor, kind, sample, payload, rng)
            return [RawMessage(topic, a.vendor, key, bad, sample.ts_ms, arrival,
                               f"malformed:{kind}")]
        label = FATES[fate]
        first = RawMessage(topic, a.vendor, key, payload, sample.ts_ms, arrival, label)
        if fate != _DUPLICATE:
            return [first]
        copy = RawMessage(topic, a.vendor, key, payload, sample.ts_ms,
                          arrival + int(fates.extra_ms[i]), label)
        return [first, copy]

    # -- ground truth -----------------------------------------------------------------------

    def message_counts(self) -> tuple[Counter, Counter, int]:
        """(messages by defect, expected dead letters by reason, dropouts), without physics."""
        counts: Counter = Counter()
        reasons: Counter = Counter()
        dropouts = 0
        for a in self.assets:
            _, fate_rng = self._rngs(a)
            expected = malformed_kinds(a.vendor)
            for c in range(self.chunks):
                t = self._grid(a, c)
                fates = draw_fates(self.config, len(t), fate_rng, len(self._kinds[a.vendor]))
                online = self._online(a, t)
                for fate, kind in zip(fates.fate[online], fates.kind[online], strict=True):
                    if fate == _DROPOUT:
                        dropouts += 1
                    elif fate == _MALFORMED:
                        name = self._kinds[a.vendor][kind]
                        counts[f"malformed:{name}"] += 1
                        reasons[expected[name]] += 1
                    else:
                        counts[FATES[fate]] += 2 if fate == _DUPLICATE else 1
        return counts, reasons, dropouts

    def ground_truth(self) -> dict[str, Any]:
        """What really happened: config, assets, faults, regime changes, message counts.

        ``messages`` counts emitted messages by defect (both copies of a duplicate count),
        so its sum is exactly what a consumer reads; ``expected_dead_letters`` is the
        reason each malformed message must be rejected with.
        """
        counts, reasons, dropouts = self.message_counts()
        return {
            "config": asdict(self.config),
            **self.scenario.ground_truth(),
            "messages": dict(sorted(counts.items())),
            "expected_dead_letters": dict(sorted(reasons.items())),
            "dropouts": dropouts,
        }
