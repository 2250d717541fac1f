"""The measurement log: one OONI-format JSON line per target per cycle (docs/measurement-log.md).

- `record`: one target's cycle as an OONI measurement (web_connectivity or urlgetter);
- `logfile`: the file, whole lines only, rotated, repaired at open, failures counted;
- `counters`: `reachprobe_measurement_log_write_failures_total`;
- `sink`: `MeasurementLogSink`, which ties them to the scheduler's cycles.
"""

from agent.sinks.measurement_log.record import record
from agent.sinks.measurement_log.sink import MeasurementLogSink

__all__ = ["MeasurementLogSink", "record"]
