"""ProcessMessages on the DirectRunner: forged event times end as dead letters with their
reasons, the counters keep ``readings_in == readings_valid + dead_letters``, and the
outputs are the in-process reference binding's (pipelines.local), forged input or not."""

from __future__ import annotations

import time

import apache_beam as beam

from pipelines.beam.pipeline import ProcessMessages
from pipelines.beam.runner import direct_options
from pipelines.local import run_messages
from transforms.normalize import encode_message, normalize_message
from transforms.sample import Sample
from transforms.simulator import Fleet, FleetConfig

START_MS = 1_795_800_000_000
YEAR_2100_MS = 4_102_444_800_000
DAY_MS = 86_400_000


def forge(message, ts_ms: int) -> tuple[str, bytes, bytes, int]:
    """``message``'s reading again, its event time and its arrival time ``ts_ms``."""
    r = normalize_message(message.value, now_ms=message.arrival_ms)
    value = encode_message(message.vendor, Sample(r["asset_id"], r["asset_type"], ts_ms,
                                                  r["values"]))
    return message.topic, message.key, value, ts_ms


def messages():
    """A fleet's messages, with two forged copies of one of its readings after the 600th:
    one in 2100 (arrival too), one a day ahead of its asset (arrival too)."""
    fleet = Fleet(FleetConfig(assets=3, duration_s=2 * 3600, seed=4, start_ms=START_MS,
                              malformed_rate=0.01))
    clean = [(m.topic, m.key, m.value, m.arrival_ms) for m in fleet.messages()]
    like = next(m for m in list(fleet.messages())[600:] if m.defect == "clean")
    forged = [forge(like, YEAR_2100_MS), forge(like, like.event_ms + DAY_MS)]
    return clean, clean[:601] + forged + clean[601:], forged


def counters(result) -> dict:
    out: dict = {}
    for c in result.metrics().query()["counters"]:
        key = (c.key.metric.namespace, c.key.metric.name)
        out[key] = out.get(key, 0) + (c.committed or 0)
    return out


# module level: the DoFns below run in this process (DirectRunner, in memory) and are
# pickled by reference, so they append here
DEAD: list = []
PREDICTIONS: list = []


def _dead(record) -> None:
    DEAD.append(record)


def _prediction(record) -> None:
    PREDICTIONS.append(record)


def test_forged_times_are_dead_letters_and_outputs_are_the_references():
    clean, msgs, forged = messages()
    DEAD.clear()
    PREDICTIONS.clear()
    twin = {"detector": {"warmup": 20}}
    clock = int(time.time() * 1000)  # one machine clock for both bindings: same details
    p = beam.Pipeline(options=direct_options())
    outs = (p | beam.Create([msgs], reshuffle=False)
            | ProcessMessages(twin, normalize_kwargs={"clock_ms": clock}, shards=4))
    outs["dead_letters"] | "Dead" >> beam.Map(_dead)
    outs["predictions"] | "Preds" >> beam.Map(_prediction)
    result = p.run()
    result.wait_until_finish()
    c = counters(result)
    local, counts = run_messages(msgs, twin, clock_ms=clock)
    reference, _ = run_messages(clean, twin, clock_ms=clock)

    assert c[("twin", "readings_in")] == len(msgs) == counts["readings_in"]
    assert c[("twin", "readings_in")] == c[("twin", "readings_valid")] + c[
        ("twin", "dead_letters")]
    assert c[("twin", "readings_valid")] == counts["readings_valid"]
    assert c[("twin", "dead_letters")] == counts["dead_letters"] == len(DEAD)
    assert counts["readings_valid"] == len(clean) - len(reference["dead_letter"])
    mine = {d["payload"]: d for d in DEAD}
    assert mine[forged[0][2]]["reason"] == "timestamp_in_future"
    assert mine[forged[0][2]]["stage"] == "normalize"
    jump = [d for d in DEAD if d["stage"] == "twin"]
    assert [d["reason"] for d in jump] == ["timestamp_jump"]
    by_reason = {}
    for d in reference["dead_letter"]:
        by_reason[d["reason"]] = by_reason.get(d["reason"], 0) + 1
    for reason in ("timestamp_in_future", "timestamp_jump"):
        by_reason[reason] = by_reason.get(reason, 0) + 1
    assert {r: c[("twin.dead_letters", r)] for r in by_reason} == by_reason
    assert sorted((d["reason"], d["detail"]) for d in DEAD) == sorted(
        (d["reason"], d["detail"]) for d in local["dead_letter"])
    # the predictions are the reference binding's, and those of the fleet without the
    # forged readings: they moved nothing
    beam_preds = {r["prediction_id"]: r["anomaly_score"] for r in PREDICTIONS}
    assert beam_preds == {r["prediction_id"]: r["anomaly_score"]
                          for r in local["prediction"]}
    assert beam_preds == {r["prediction_id"]: r["anomaly_score"]
                          for r in reference["prediction"]}
