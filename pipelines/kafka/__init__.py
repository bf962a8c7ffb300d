"""Kafka for twinstream: client settings, the embedded broker, topics, Avro serdes.

Engine-neutral (confluent-kafka only): the Beam Kafka IO in :mod:`pipelines.beam.kafka`,
the simulator's producer, ``twin tail`` and the Flink job all build on this package.
"""
