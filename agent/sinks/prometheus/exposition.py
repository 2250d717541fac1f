"""The /metrics body: prometheus_client's own encoders, with a fast path for families made of
rows (`RowFamily`, the per-target series of agent/sinks/prometheus/target_series.py).

At 10,000 targets those families hold over 100,000 samples; going through one `Sample` and
prometheus_client's generic line formatting each costs most of a second of CPU per scrape.
A `RowFamily` renders its lines from a precomputed template instead, and the same rows give
its `samples` to every other reader (remote-write snapshots, `get_sample_value`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

Row = tuple[tuple[str, ...], float]
OPENMETRICS = "application/openmetrics-text"
EOF = b"# EOF\n"


class Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class RowFamily(Metric):
    """A gauge or counter family whose samples are its rows: label values in `labelnames`
    order, and the value. Made on demand, so a family costs no `Sample` objects until read."""

    def __init__(
        self,
        name: str,
        documentation: str,
        typ: str,
        labelnames: tuple[str, ...],
        rows: Callable[[], Iterable[Row]],
        render: Callable[[], list[str]] | None = None,
    ) -> None:
        """`render`, when given, writes the same lines as `lines` would, faster (a state set's
        lines a target at a time, say); tests/test_metric_series.py holds it to that."""
        # Not Metric.__init__: it would store a list in `samples`, which the rows replace.
        self.name, self.documentation, self.type, self.unit = name, documentation, typ, ""
        self.labelnames = labelnames
        self.rows = rows
        self.render = render
        self.sample_name = f"{name}_total" if typ == "counter" else name

    @property
    def samples(self) -> list[Sample]:  # type: ignore[override]
        """The rows as prometheus_client samples."""
        names, sample_name = self.labelnames, self.sample_name
        return [Sample(sample_name, dict(zip(names, v, strict=True)), x) for v, x in self.rows()]

    def header(self) -> Metric:
        """The family without samples: what the encoders turn into its HELP and TYPE lines."""
        return Metric(self.name, self.documentation, self.type)

    def lines(self) -> list[str]:
        """The sample lines, as prometheus_client's text and OpenMetrics encoders write them
        (label names sorted, values escaped, Go float formatting)."""
        if self.render is not None:
            return self.render()
        order = sorted(range(len(self.labelnames)), key=self.labelnames.__getitem__)
        labels = ",".join(f'{self.labelnames[i]}="{{{i}}}"' for i in order)
        line = f"{self.sample_name}{{{{{labels}}}}} {{{len(order)}}}\n".format
        # Each distinct label value and number is escaped or formatted once per rendering.
        text, number = _Memo(escape), _Memo(floatToGoString)
        return [line(*map(text.__getitem__, values), number[x]) for values, x in self.rows()]


class _Memo(dict):  # type: ignore[type-arg]
    """`memo[key]` is `make(key)`, made once."""

    def __init__(self, make: Callable[[Any], str]) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, key: Any) -> str:
        value = self[key] = self.make(key)
        return value


def escape(value: str) -> str:
    """A label value as the encoders write it (backslash, newline and quote escaped)."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _One:
    """One family, in the shape an encoder reads (a collector)."""

    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> Iterable[Metric]:
        return (self.family,)


def encode(registry: Collector, accept: str) -> tuple[bytes, str]:
    """The exposition `accept` asks for (Prometheus text or OpenMetrics, as prometheus_client
    chooses), and its content type."""
    encoder, content_type = choose_encoder(accept)
    parts: list[bytes] = []
    for family in registry.collect():
        if isinstance(family, RowFamily):
            parts.append(encoder(_One(family.header())).removesuffix(EOF))
            parts.append("".join(family.lines()).encode())
        else:
            parts.append(encoder(_One(family)).removesuffix(EOF))
    if content_type.startswith(OPENMETRICS):
        parts.append(EOF)
    return b"".join(parts), content_type
