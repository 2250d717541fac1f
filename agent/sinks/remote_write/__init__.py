"""The remote-write sink (docs/architecture.md): Prometheus remote-write 1.0 for agents that
nobody can scrape (behind a home NAT).

- `snapshot`: every sample of a registry under one timestamp, with `job` and `instance`;
- `wire`: snapshots -> a snappy-compressed protobuf `WriteRequest` (spec 1.0), and back;
- `buffer`: the bounded queue of snapshots, dropping the oldest when full;
- `sender`: sends the queue in order, with auth, timeouts and backoff;
- `metrics`: the client's own `reachprobe_remote_write_` series;
- `sink`: `RemoteWriteSink`, which ties them to the scheduler's cycles.
"""

from agent.sinks.remote_write.sink import RemoteWriteSink

__all__ = ["RemoteWriteSink"]
