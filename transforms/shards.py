"""How many state keys the twins are spread over (a constant the CLI shows without
importing the twin)."""

# Shards of a fleet (an engine's state keys, transforms.twin.TwinShard) in bounded runs:
# enough for a runner's parallelism, few enough that a shard's call holds many assets'
# windows (~16 of 1,000). Streams key by asset (pipelines.beam.twin says why).
DEFAULT_SHARDS = 64
