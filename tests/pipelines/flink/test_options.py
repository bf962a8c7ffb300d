"""`twin flink run` flags -> FlinkJobOptions (no JVM needed)."""

from __future__ import annotations

import pytest

from jobs.cli import build_parser
from jobs.flink_job import options_from_args


def _opts(*argv: str):
    args = build_parser().parse_args(["flink", "run", "--assets", "3", "--duration", "1h",
                                      *argv])
    return options_from_args(args)


def test_state_cache_defaults_to_three_entries_for_each_of_ten_thousand_assets():
    assert _opts().state_cache_size == 30_000


def test_state_cache_size_flag_reaches_the_job_options():
    opts = _opts("--state-cache-size", "1234", "--checkpoint-interval", "5s")
    assert (opts.state_cache_size, opts.checkpoint_interval_ms) == (1234, 5_000)
    assert opts.fleet["assets"] == 3 and opts.sinks == ["files"]


def test_state_cache_size_must_be_positive():
    with pytest.raises(SystemExit):
        _opts("--state-cache-size", "0")


def test_bundle_size_defaults_to_a_hundred_thousand_and_the_flag_reaches_the_job_options():
    assert _opts().bundle_size == 100_000
    assert _opts("--bundle-size", "5000").bundle_size == 5_000
    with pytest.raises(SystemExit):
        _opts("--bundle-size", "0")
