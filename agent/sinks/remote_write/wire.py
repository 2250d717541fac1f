"""The remote-write 1.0 wire format: snapshots -> a snappy-compressed protobuf `WriteRequest`,
and back (for receivers in tests).

The protobuf messages are built at import time from a descriptor (the three messages of
remote.proto and types.proto that 1.0 uses), so no generated code is shipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cramjam
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from agent.sinks.remote_write.snapshot import LabelSet, Snapshot

# The spec asks for a User-Agent; a generic one keeps "reachprobe" off the volunteer's wire,
# like every other request the agent makes.
USER_AGENT = "remote-write-client/1.0"
HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "User-Agent": USER_AGENT,
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}


def _write_request_class() -> type:
    """prometheus.WriteRequest (with TimeSeries, Label, Sample) built from a descriptor."""
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="reachprobe_remote_write.proto", package="prometheus", syntax="proto3"
    )
    messages: dict[str, list[tuple[str, int, int, str | None]]] = {
        "Label": [("name", 1, field.TYPE_STRING, None), ("value", 2, field.TYPE_STRING, None)],
        "Sample": [("value", 1, field.TYPE_DOUBLE, None), ("timestamp", 2, field.TYPE_INT64, None)],
        "TimeSeries": [
            ("labels", 1, field.TYPE_MESSAGE, ".prometheus.Label"),
            ("samples", 2, field.TYPE_MESSAGE, ".prometheus.Sample"),
        ],
        "WriteRequest": [("timeseries", 1, field.TYPE_MESSAGE, ".prometheus.TimeSeries")],
    }
    for name, fields in messages.items():
        message = proto.message_type.add(name=name)
        for field_name, number, kind, type_name in fields:
            repeated = kind == field.TYPE_MESSAGE
            entry = message.field.add(
                name=field_name,
                number=number,
                type=kind,  # type: ignore[arg-type]
                label=field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL,  # type: ignore[arg-type]
            )
            if type_name:
                entry.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))


WriteRequest = _write_request_class()


def write_request(snapshots: Sequence[Snapshot]) -> Any:
    """A WriteRequest message carrying `snapshots` in order (one TimeSeries per series)."""
    samples: dict[LabelSet, list[tuple[float, int]]] = {}
    for snapshot in snapshots:
        for labels, value in zip(snapshot.series, snapshot.values, strict=True):
            samples.setdefault(labels, []).append((value, snapshot.timestamp_ms))
    request = WriteRequest()
    for labels, points in samples.items():
        series = request.timeseries.add()
        for name, value in labels:
            series.labels.add(name=name, value=value)
        for value, timestamp in points:
            series.samples.add(value=value, timestamp=timestamp)
    return request


def encode_write_request(snapshots: Sequence[Snapshot]) -> bytes:
    """A snappy-compressed (block format) protobuf WriteRequest carrying `snapshots` in order."""
    return bytes(cramjam.snappy.compress_raw(write_request(snapshots).SerializeToString()))


def decode_write_request(body: bytes) -> dict[LabelSet, list[tuple[int, float]]]:
    """The inverse of `encode_write_request`: series -> [(timestamp_ms, value)] (for receivers)."""
    request = WriteRequest()
    request.ParseFromString(bytes(cramjam.snappy.decompress_raw(body)))
    out: dict[LabelSet, list[tuple[int, float]]] = {}
    for series in request.timeseries:
        labels = tuple((label.name, label.value) for label in series.labels)
        out.setdefault(labels, []).extend((s.timestamp, s.value) for s in series.samples)
    return out
