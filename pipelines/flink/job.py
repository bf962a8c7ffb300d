"""The twin as a PyFlink DataStream job.

::

    source (simulator chunks | Kafka raw topics: key, value, topic/partition@offset, time)
         with watermarks per partition: arrival time - delay, idle partitions skipped
      -> NormalizeFunction (chained to the source: one asset's messages stay in order),
         a message or a batch at a time, as columns
                                     -> (twin key, readings) | dead letters (side output)
      -> key by asset id or shard -> TwinFunction (TwinShard in keyed state, event-time
         timers)
      -> predictions | actions, state, features, late (side outputs)
      -> sinks: Kafka topics (twin.predictions, twin.actions signed, twin.state,
         twin.deadletter) and/or JSON-lines files

The job is described by :class:`FlinkJobOptions` (a JSON file when submitted with
``flink run -py``: secrets are never on a command line, and the file is created mode 0600
in a 0700 folder); :func:`build` wires it on a ``StreamExecutionEnvironment``;
:func:`main` is what ``jobs/flink_job.py`` runs.

Actions are signed with the key the submitting command resolved exactly as the Beam path
does (``--hmac-key-file``, ``twin.hmac.key``, ``$TWIN_HMAC_KEY``, the per-user key: see
:mod:`pipelines.kafka.secrets`), carried in the options (a key file by its path, any other
key itself), never looked up again where the job happens to run (:func:`job_signer`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transforms.signing import DEFAULT_VALIDITY_MS

# file output name -> (side output tag or None for the main output, Kafka output tag)
OUTPUTS: dict[str, tuple[str | None, str | None]] = {
    "predictions": (None, "prediction"),
    "actions": ("action", "action"),
    "state": ("state", "state"),
    "features": ("features", None),
    "late": ("late", None),
    "dead_letters": ("dead_letters", "dead_letter"),
}


@dataclass
class FlinkJobOptions:
    """Everything the job needs, as plain JSON-able values."""

    source: str = "simulator"  # simulator | kafka
    # simulator
    fleet: dict[str, Any] = field(default_factory=dict)  # FleetConfig fields
    # kafka
    # client settings incl. bootstrap (and secrets such as sasl.password: not in the repr)
    kafka: dict[str, Any] = field(default_factory=dict, repr=False)
    topics: list[str] = field(default_factory=list)
    # a plant declared in files (absolute paths; loaded where the job is built, and the
    # Plant object travels inside the job's functions to every worker)
    model_files: list[str] = field(default_factory=list)
    format_files: list[str] = field(default_factory=list)
    group_id: str = "twinstream-flink"
    stop_offsets: dict[str, int] | None = None  # kafka, bounded: "topic/partition" -> end
    schema_registry_url: str | None = None
    registry_conf: dict[str, Any] = field(default_factory=dict, repr=False)
    # the signing key: a key file's absolute path, or the key itself when it came from a
    # setting, the environment or the per-user file (None and no file: resolved where the
    # job is built, for options made by hand)
    hmac_key_file: str | None = None
    hmac_key: str | None = field(default=None, repr=False)
    command_validity_ms: int = DEFAULT_VALIDITY_MS
    # sinks
    sinks: list[str] = field(default_factory=lambda: ["files"])  # files and/or kafka
    out_dir: str = "out/flink"
    # the outputs the files sink writes (None: all of OUTPUTS)
    file_outputs: list[str] | None = None
    # engine
    parallelism: int | None = None
    checkpoint_interval_ms: int = 10_000
    # unaligned checkpoints (Flink's own remedy for backpressure): a barrier overtakes the
    # records queued between operators, which are stored with the checkpoint, instead of
    # waiting until the slowest operator (the twins' Python worker) has processed them all
    unaligned_checkpoints: bool = True
    # where checkpoints go (a file:// URI or path); None: the cluster's setting. The local
    # mini-cluster's default keeps them in the JobManager's memory, capped at 5 MB: a
    # thousand twins do not fit, so `twin flink run` always sets one.
    checkpoint_dir: str | None = None
    watermark_delay_ms: int = 30_000  # engine watermark: arrival time minus this
    # keyed-state values each Python worker keeps unpickled between elements: three per
    # asset (twin, pending readings, timer). Flink's default, 1,000, thrashes beyond ~330
    # assets: each reading then fetches and unpickles its twin from the JVM
    state_cache_size: int = 30_000
    idleness_ms: int = 30_000
    # the most elements a Python worker's bundle holds. Each bundle ends with a state write
    # per asset it touched, a round trip to the JVM each: at Flink's default of 1,000
    # elements, with 1,000 assets most readings would pay one
    bundle_size: int = 100_000
    # the longest a bundle stays open (python.fn-execution.bundle.time). A Python operator
    # hands its outputs and the watermark on only when its bundle ends, so under steady
    # input every Python operator on the way adds up to this much to a prediction's
    # latency. Flink's default, 1 s, made it ~5 s; the state writes a shorter bundle adds
    # are a small share of a reading's cost
    bundle_time_ms: int = 100
    # where the Python functions run: "process", a Python worker per slot fed in bundles
    # over gRPC (Flink's default: an element waits for its bundle to end at each Python
    # operator, and again for its outputs), or "thread", inside the TaskManager's JVM
    # (PyFlink's embedded interpreter: an element is handed over and its outputs come back
    # at once; seconds less latency, but operators that open together can deadlock while
    # importing a C extension: see docs/flink.md)
    python_mode: str = "process"
    python_executable: str = field(default_factory=lambda: sys.executable)
    jars: list[str] = field(default_factory=list)
    twin_kwargs: dict[str, Any] = field(default_factory=dict)
    # twin keys: 0, one per asset; N, the assets hashed into N shards whose twins are
    # stepped together (a batch of messages becomes at most N elements and state values).
    # None: DEFAULT_SHARDS for the simulator (batches of messages), 0 for Kafka (a message
    # at a time: a shard's snapshot would be rewritten for a few readings)
    shards: int | None = None
    # the simulator source's messages per element
    batch: int = 50_000
    job_name: str = "twinstream"

    def twin_shards(self) -> int:
        from transforms.twin import DEFAULT_SHARDS

        if self.shards is not None:
            return self.shards
        return DEFAULT_SHARDS if self.source == "simulator" else 0

    def dump(self, path: str | Path) -> Path:
        """Write the options (they may hold secrets: mode 0600 from the start, in a 0700
        folder, atomically)."""
        from pipelines.private_files import write_private

        return write_private(path, json.dumps(asdict(self), indent=1).encode())

    @classmethod
    def load(cls, path: str | Path) -> FlinkJobOptions:
        return cls(**json.loads(Path(path).read_text()))


def job_signer(opts: FlinkJobOptions):
    """The :class:`~transforms.signing.Signer` of the job's action sink."""
    from pipelines.kafka.secrets import hmac_key
    from transforms.signing import Signer

    if opts.hmac_key:
        key = opts.hmac_key.encode()
    else:
        key = hmac_key(opts.hmac_key_file, {})
    return Signer(key, opts.command_validity_ms)


def _venv_on_path(python_executable: str) -> None:
    """Put the job's Python's folder first on this process's ``PATH``, which the local
    cluster's JVM inherits. In thread mode the interpreter embedded in the JVM finds its
    packages through the ``python`` on ``PATH``: a venv's Python called by its full path
    (``.venv/bin/twin``) leaves the venv off it, and every Python operator then fails to
    open ("No module named 'pemja'") and the job restarts without end, which looks like a
    hang. (A standalone cluster's scripts get the same from :meth:`FlinkCluster.env`.)"""
    import os

    folder = str(Path(python_executable).parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != folder:
        os.environ["PATH"] = os.pathsep.join([folder, path]) if path else folder


def configuration(opts: FlinkJobOptions) -> dict[str, str]:
    """The Flink settings the job's options become (what :func:`environment` sets)."""
    conf = {"python.executable": opts.python_executable,
            "python.client.executable": opts.python_executable,
            "pipeline.name": opts.job_name,
            "python.state.cache-size": str(opts.state_cache_size),
            "python.fn-execution.bundle.size": str(opts.bundle_size),
            "python.fn-execution.bundle.time": str(opts.bundle_time_ms),
            "python.execution-mode": opts.python_mode}
    if opts.jars:
        conf["pipeline.jars"] = ";".join(Path(j).resolve().as_uri() for j in opts.jars)
    if opts.checkpoint_dir:
        conf["execution.checkpointing.storage"] = "filesystem"
        conf["execution.checkpointing.dir"] = (
            opts.checkpoint_dir if "://" in opts.checkpoint_dir
            else Path(opts.checkpoint_dir).resolve().as_uri())
    return conf


def environment(opts: FlinkJobOptions):
    """A ``StreamExecutionEnvironment`` (+ table environment) configured for the job."""
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    _venv_on_path(opts.python_executable)
    conf = Configuration()
    for key, value in configuration(opts).items():
        conf.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    if opts.parallelism:
        env.set_parallelism(opts.parallelism)
    if opts.checkpoint_interval_ms > 0:
        env.enable_checkpointing(opts.checkpoint_interval_ms)
        if opts.unaligned_checkpoints:
            env.get_checkpoint_config().enable_unaligned_checkpoints()
    t_env = StreamTableEnvironment.create(env)
    return env, t_env


def build(env, t_env, opts: FlinkJobOptions, source=None):
    """Wire the job; returns the ``StatementSet`` of Kafka sinks (or ``None``).
    ``source``: ``env -> stream of raw messages`` instead of ``opts.source``'s (the
    benchmark's recorded workload)."""

    from pipelines.flink.functions import (
        DEAD_LETTERS,
        KEYED,
        PICKLED,
        SIDE,
        TWIN_DEAD_LETTERS,
        NormalizeFunction,
        TwinFunction,
    )
    from pipelines.flink.sinks import file_sink, kafka_sink
    from pipelines.flink.sources import kafka_source, simulator_source
    from pipelines.kafka.serde import make_serde

    serde = make_serde(opts.schema_registry_url, opts.registry_conf) \
        if opts.schema_registry_url else None
    plant = None
    if opts.model_files or opts.format_files:
        from transforms.plant import load_plant

        plant = load_plant(opts.model_files, opts.format_files)
        plant.install()
    if source is not None:
        messages = source(env)
    elif opts.source == "simulator":
        from transforms.simulator import FleetConfig

        messages = simulator_source(env, FleetConfig(**opts.fleet), opts.watermark_delay_ms,
                                    opts.batch)
    elif opts.source == "kafka":
        messages = kafka_source(t_env, opts.kafka, opts.topics, opts.group_id,
                                opts.stop_offsets, opts.watermark_delay_ms, opts.idleness_ms)
    else:
        raise ValueError(f"unknown source {opts.source!r} (simulator or kafka)")

    # Normalization runs at the source's parallelism, chained to it (a forward edge): one
    # asset's messages come from one source split (Kafka partition) and stay in order.
    default = env.get_parallelism()
    env.set_parallelism(messages._j_data_stream.getParallelism())
    try:
        normalized = (messages
                      .process(NormalizeFunction(serde=serde, plant=plant,
                                                 shards=opts.twin_shards()),
                               output_type=KEYED)
                      .name("normalize"))
        by_key = _keyed_by_first_field(normalized, PICKLED)
    finally:
        env.set_parallelism(default)

    twins = (by_key
             .process(TwinFunction(opts.twin_kwargs, plant=plant), output_type=PICKLED)
             .name("twin"))
    # dead letters: the messages normalization refused and the readings the twins'
    # event-time guard held back
    streams = {"predictions": twins,
               "dead_letters": normalized.get_side_output(DEAD_LETTERS).union(
                   twins.get_side_output(TWIN_DEAD_LETTERS))}
    for name, (tag, _) in OUTPUTS.items():
        if tag in SIDE:
            streams[name] = twins.get_side_output(SIDE[tag])

    if "files" in opts.sinks:
        for name, stream in streams.items():
            if opts.file_outputs is None or name in opts.file_outputs:
                file_sink(stream, opts.out_dir, name)
    statements = None
    if "kafka" in opts.sinks:
        from pipelines.kafka.serde import LocalSerde
        from pipelines.kafka.topics import OUTPUT_TOPICS

        secret = job_signer(opts)
        statements = t_env.create_statement_set()
        for name, (_, kafka_tag) in OUTPUTS.items():
            if kafka_tag is None:
                continue
            topic, schema = OUTPUT_TOPICS[kafka_tag]
            kafka_sink(t_env, statements, streams[name], opts.kafka, topic, schema,
                       serde or LocalSerde(), secret if kafka_tag == "action" else None)
    return statements


def _keyed_by_first_field(stream, value_type):
    """``stream`` of ``(key, value)`` rows keyed by the key, the value what the keyed
    function gets: what PyFlink's ``key_by`` builds, without the Python operator it puts
    in front to compute the key. Normalization computes it already, and every Python
    operator a reading crosses holds it until that operator's bundle ends: one fewer is
    a bundle's wait less on every prediction's way. (Keyed at the source's parallelism
    too: from a smaller one Flink would rebalance, spreading an asset's readings over
    subtasks out of order.)"""
    from pyflink.common import Types
    from pyflink.datastream.data_stream import KeyedStream
    from pyflink.java_gateway import get_gateway

    selector = get_gateway().jvm.KeyByKeySelector()  # (field 0 of a row: PyFlink's own)
    j_keyed = stream._j_data_stream.keyBy(selector, Types.ROW([Types.STRING()])
                                          .get_java_type_info())
    return KeyedStream(j_keyed, value_type, stream)


def run(opts: FlinkJobOptions, wait: bool = True, source=None):
    """Build and execute; returns the ``JobExecutionResult`` (or ``JobClient`` if not
    ``wait``). ``source``: see :func:`build`."""
    env, t_env = environment(opts)
    statements = build(env, t_env, opts, source)
    if statements is not None:
        statements.attach_as_datastream()
    if wait:
        return env.execute(opts.job_name)
    return env.execute_async(opts.job_name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="twinstream's PyFlink job")
    parser.add_argument("--options", required=True, help="FlinkJobOptions as a JSON file")
    args = parser.parse_args(argv)
    run(FlinkJobOptions.load(args.options))
    return 0
