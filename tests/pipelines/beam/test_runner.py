"""The DirectRunner's state cache follows --max_cache_memory_usage_mb."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import worker_handlers

from jobs.cli import main
from pipelines.beam.runner import (
    DIRECT_CACHE_MB,
    BeamOptionsError,
    apply_state_cache,
    direct_options,
)


@pytest.fixture
def cache_sizes(monkeypatch):
    """The byte sizes of the state caches the in-process runner creates."""
    sizes = []
    real = worker_handlers.StateCache

    def recording(max_weight):
        sizes.append(max_weight)
        return real(max_weight)

    monkeypatch.setattr(worker_handlers, "StateCache", recording)
    monkeypatch.setattr(worker_handlers, "STATE_CACHE_SIZE_MB",
                        worker_handlers.STATE_CACHE_SIZE_MB)  # restored afterwards
    return sizes


def run(options: PipelineOptions) -> None:
    with beam.Pipeline(options=options) as p:
        p | beam.Create([("a", 1), ("a", 2)]) | beam.GroupByKey()


def test_default_direct_options_give_the_runner_twinstreams_cache(cache_sizes):
    options = direct_options()
    assert apply_state_cache(options) == DIRECT_CACHE_MB
    run(options)
    assert cache_sizes and set(cache_sizes) == {DIRECT_CACHE_MB << 20}


def test_the_flag_wins(cache_sizes):
    assert apply_state_cache(direct_options("--max_cache_memory_usage_mb=250")) == 250
    run(direct_options())
    assert set(cache_sizes) == {250 << 20}
    with pytest.raises(BeamOptionsError, match="must be >= 0"):
        apply_state_cache(direct_options("--max_cache_memory_usage_mb=-1"))


def test_twin_run_refuses_a_negative_cache_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--assets", "1", "--duration", "1m", "--out", str(out),
                 "--no-progress", "--", "--max_cache_memory_usage_mb=-1"]) == 2
    err = capsys.readouterr().err
    assert "twin run: --max_cache_memory_usage_mb must be >= 0, got -1" in err
    assert "Traceback" not in err


def test_other_runners_and_no_flag_leave_beam_alone(cache_sizes):
    before = worker_handlers.STATE_CACHE_SIZE_MB
    assert apply_state_cache(PipelineOptions(["--runner=DirectRunner"])) is None  # Beam's 0
    assert apply_state_cache(direct_options("--max_cache_memory_usage_mb=0")) is None
    assert apply_state_cache(PipelineOptions([
        "--runner=FlinkRunner", "--max_cache_memory_usage_mb=500"])) is None
    assert apply_state_cache(direct_options("--direct_running_mode=multi_processing")) is None
    assert worker_handlers.STATE_CACHE_SIZE_MB == before
