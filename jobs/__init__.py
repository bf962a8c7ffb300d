"""Entry points: the ``twin`` CLI and runnable jobs."""
