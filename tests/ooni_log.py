"""Loading a measurement log with OONI's own data package (`oonidata`), for the loader tests
on loopback and in the lab: every line must load into the model OONI's tools pick for its
`test_name`, and every key of ours that the model knows must come out as it went in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from oonidata.dataclient import load_measurement

# The model OONI's tools pick for a record, by test_name (a URL target, any other target).
MODELS = {"web_connectivity": "WebConnectivity", "urlgetter": "UrlGetter"}
# The operations of every measurement, as df-002, df-005, df-006 and df-001 name them.
OPERATIONS = ("queries", "tcp_connect", "tls_handshakes", "requests")


def mismatches(ours: Any, loaded: Any, where: str = "") -> list[str]:
    """Where a value the model knows came out of the load other than it went in."""
    if isinstance(ours, dict) and isinstance(loaded, dict):
        return [
            problem
            for key, value in ours.items()
            if key in loaded
            for problem in mismatches(value, loaded[key], f"{where}.{key}")
        ]
    if isinstance(ours, list) and isinstance(loaded, list):
        if len(ours) != len(loaded):
            return [f"{where}: {len(ours)} items became {len(loaded)}"]
        return [
            p
            for i, (a, b) in enumerate(zip(ours, loaded, strict=True))
            for p in mismatches(a, b, f"{where}[{i}]")
        ]
    return [] if ours == loaded else [f"{where}: {ours!r} became {loaded!r}"]


def load_log(path: Path) -> list[tuple[dict[str, Any], Any]]:
    """Every line of the log at `path` as (our record, OONI's model of it); raises on the
    first line OONI's loader refuses or turns into another model, or that loses a key."""
    loaded = []
    # Whole lines only: an agent that is running may be writing the last one.
    text = path.read_text(encoding="utf-8")
    for number, line in enumerate(text[: text.rfind("\n") + 1].splitlines(), 1):
        record = json.loads(line)
        model = load_measurement(msmt=record)
        where = f"{path.name}:{number} ({record['test_keys']['target']})"
        assert type(model).__name__ == MODELS[record["test_name"]], where
        problems = mismatches(record, model.to_dict())
        assert not problems, f"{where}: {problems}"
        keys = model.test_keys.to_dict()
        for operation in OPERATIONS:
            assert len(keys[operation] or []) == len(record["test_keys"][operation]), where
        loaded.append((record, model))
    return loaded
