"""How a bounded Kafka run runs each slice's pipeline: in a forked child whose counters,
or error, come back to the run (no broker needed)."""

from __future__ import annotations

import os
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.metrics import Metrics

from jobs.kafka_run import BoundedKafkaRun, SliceFailed, _Run
from pipelines.kafka.broker import BrokerUnavailable


def a_run(fork: bool = True) -> _Run:
    return _Run(BoundedKafkaRun(out=Path("unused"), config={}, key=b"k", topics=[],
                                fork=fork), [])


def count(n):
    Metrics.counter("twin", "readings_in").inc(n)
    return n


def fail(_):
    raise BrokerUnavailable("no progress reading t/0")


def die(_):
    os._exit(9)


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "in-process"])
def test_a_slice_returns_its_counters(fork):
    counts = a_run(fork)._run_pipeline(
        lambda p: p | beam.Create([3, 4]) | beam.Map(count), expected=2)
    assert counts["readings_in"] == 7


def test_a_slice_raises_what_its_pipeline_raised_so_the_exit_code_is_the_same():
    with pytest.raises(BrokerUnavailable, match="no progress reading t/0"):
        a_run()._run_pipeline(lambda p: p | beam.Create([1]) | beam.Map(fail), expected=1)


def test_a_slice_whose_process_dies_is_a_clear_error():
    with pytest.raises(SliceFailed, match="exited with code 9.*nothing of the slice was "
                                          "committed"):
        a_run()._run_pipeline(lambda p: p | beam.Create([1]) | beam.Map(die), expected=1)


def wait_for(path):
    import time

    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never came")
        time.sleep(0.05)
    return 1


def test_the_next_slice_is_cut_while_the_child_runs_this_one(tmp_path):
    """``meanwhile`` (the next slice's cut) runs in the run's process while the slice's
    child is still working: this child waits for what ``meanwhile`` writes, so run one
    after the other they would never finish."""
    marker = tmp_path / "cut"
    counts = a_run()._run_pipeline(
        lambda p: p | beam.Create([str(marker)]) | beam.Map(wait_for) | beam.Map(count),
        expected=1, meanwhile=lambda: marker.write_text("next slice"))
    assert counts["readings_in"] == 1


def test_without_fork_meanwhile_runs_after_the_pipeline():
    seen = []
    counts = a_run(fork=False)._run_pipeline(
        lambda p: p | beam.Create([5]) | beam.Map(count), expected=1,
        meanwhile=lambda: seen.append("cut"))
    assert counts["readings_in"] == 5 and seen == ["cut"]
