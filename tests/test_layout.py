"""Architecture rules: probes/ knows nothing of the agent, Prometheus or the scheduler."""

from __future__ import annotations

import ast
from pathlib import Path

PROBES = Path(__file__).resolve().parent.parent / "probes"
FORBIDDEN = ("agent", "prometheus_client")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_probes_never_import_the_agent_or_prometheus() -> None:
    files = sorted(PROBES.glob("*.py"))
    assert files
    for path in files:
        for module in imported_modules(path):
            assert module.split(".")[0] not in FORBIDDEN, f"{path.name} imports {module}"
