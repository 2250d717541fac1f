"""The Prometheus sink (docs/architecture.md): the agent's registry and the `reachprobe_`
series.

- `sink`: `PrometheusSink`, which turns cycle reports into series;
- `target_series`: the per-target series, a few numbers per target rendered at collect time;
- `exposition`: the /metrics body, with the fast path for those row families;
- `raw`: the raw follow-ups' series.
"""

from agent.sinks.prometheus.sink import PrometheusSink

__all__ = ["PrometheusSink"]
