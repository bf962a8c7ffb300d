"""Apache Flink (PyFlink) bindings of the twin: the job, its sources and sinks, the
Kafka connector jars and a standalone cluster for local use."""
