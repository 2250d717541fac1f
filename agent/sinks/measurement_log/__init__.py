"""The measurement log: one OONI-format JSON line per target per cycle (docs/measurement-log.md).

`record` builds a line (record.py), the sink writes them (sink.py).
"""

from agent.sinks.measurement_log.sink import MeasurementLogSink, record

__all__ = ["MeasurementLogSink", "record"]
