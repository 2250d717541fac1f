"""A snapshot: every sample of a prometheus_client registry under one timestamp, with the
`job` and `instance` labels the rules join on (the configured ones, never an address).

A snapshot whose series set did not change shares its label tuples with the previous one, so a
buffered sample costs its 8-byte value plus a few bytes of bookkeeping (docs/operators.md has
the measured figure).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

LabelSet = tuple[tuple[str, str], ...]
_HAS_CREATED = {"counter", "histogram", "summary"}


@dataclass(frozen=True)
class Snapshot:
    """Every sample of a registry at one instant: `values[i]` belongs to `series[i]`."""

    timestamp_ms: int
    series: tuple[LabelSet, ...]
    values: array

    def __len__(self) -> int:
        return len(self.values)


def snapshot_registry(
    registry: CollectorRegistry,
    identity: dict[str, str],
    timestamp: float,
    previous: Snapshot | None = None,
) -> Snapshot:
    """All samples of `registry` at `timestamp` (seconds), labelled with `identity`.

    `identity` (job and instance) overrides labels of the same name. When the series set equals
    `previous`'s, its label tuples are reused, so a buffered snapshot costs little more than
    its values.
    """
    series: list[LabelSet] = []
    values = array("d")
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.endswith("_created") and family.type in _HAS_CREATED:
                continue  # as on /metrics, where the agent disables them: a series each, no use
            labels = {**sample.labels, **identity, "__name__": sample.name}
            series.append(tuple(sorted(labels.items())))
            values.append(sample.value)
    keys = tuple(series)
    if previous is not None and previous.series == keys:
        keys = previous.series
    return Snapshot(int(timestamp * 1000), keys, values)
