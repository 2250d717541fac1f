"""Loading a measurement log with OONI's own data package (`oonidata`), for the loader tests
on loopback and in the lab: every line must load into the model OONI's tools pick for its
`test_name`, and every key of ours that the model knows must come out as it went in.

oonidata lives in its own virtualenv, .venv-ooni (it pins a cryptography that aioquic cannot
use), so the loading is done there by tests/ooni_loader.py, which prints each model as JSON."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
OONI_PYTHON = REPO_ROOT / ".venv-ooni" / "bin" / "python"
LOADER = Path(__file__).resolve().parent / "ooni_loader.py"
# Importing oonidata takes under a second; a log of a few hundred lines loads in a few more.
LOADER_TIMEOUT = 120
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


def ooni_models(text: str) -> list[dict[str, Any]]:
    """OONI's loader's answer for each line of `text` (whole lines), in order, as
    tests/ooni_loader.py prints it; fails the test clearly when .venv-ooni was not made."""
    if not OONI_PYTHON.exists():
        pytest.fail(
            f"{OONI_PYTHON} is missing: OONI's data package lives in its own virtualenv; "
            "make it with `scripts/install-test-deps` (or `make deps`)"
        )
    # The loader reads a copy of exactly these lines, so it and the caller see the same ones
    # while an agent keeps writing the log.
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".jsonl") as snapshot:
        snapshot.write(text)
        snapshot.flush()
        run = subprocess.run(
            [str(OONI_PYTHON), str(LOADER), snapshot.name],
            capture_output=True,
            text=True,
            timeout=LOADER_TIMEOUT,
        )
    assert run.returncode == 0, f"tests/ooni_loader.py failed: {run.stderr}"
    return [json.loads(line) for line in run.stdout.splitlines()]


def load_log(path: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every line of the log at `path` as (our record, OONI's model of it, as `to_dict()`
    gives it); raises on the first line OONI's loader refuses or turns into another model, or
    that loses a key."""
    # Whole lines only: an agent that is running may be writing the last one.
    text = path.read_text(encoding="utf-8")
    text = text[: text.rfind("\n") + 1]
    records = [json.loads(line) for line in text.splitlines()]
    answers = ooni_models(text)
    assert len(answers) == len(records), f"{len(records)} lines, {len(answers)} loaded"
    loaded = []
    for number, (record, answer) in enumerate(zip(records, answers, strict=True), 1):
        where = f"{path.name}:{number} ({record['test_keys']['target']})"
        assert "error" not in answer, f"{where}: oonidata refused it: {answer.get('error')}"
        assert answer["model"] == MODELS[record["test_name"]], where
        model = answer["measurement"]
        problems = mismatches(record, model)
        assert not problems, f"{where}: {problems}"
        for operation in OPERATIONS:
            got = model["test_keys"].get(operation) or []
            assert len(got) == len(record["test_keys"][operation]), where
        loaded.append((record, model))
    return loaded
