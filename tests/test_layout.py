"""Architecture rules (docs/architecture.md): each layer imports only the layers below it.

probes (steps) <- measure (plan, follow-ups, verdict, report) <- agent (config, planner,
scheduler, CLI, server) and agent/sinks (outputs), and no sink imports another.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SINKS = ROOT / "agent" / "sinks"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def files(package: str) -> list[Path]:
    found = sorted((ROOT / package).rglob("*.py"))
    assert found, package
    return found


def violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in files(package)
        for module in imported_modules(path)
        if module.split(".")[0] in forbidden
    ]


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        # Steps know nothing of plans, reports, the agent or Prometheus.
        ("probes", ("measure", "agent", "prometheus_client", "pydantic")),
        # The measurement layer never sees config models, sinks, the CLI or Prometheus.
        ("measure", ("agent", "prometheus_client", "pydantic")),
    ],
)
def test_layers_import_only_downwards(package: str, forbidden: tuple[str, ...]) -> None:
    assert violations(package, forbidden) == []


def sink_of(path: Path) -> str:
    """The sink a file belongs to: its module stem, or its package under agent/sinks/."""
    relative = path.relative_to(SINKS)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def test_sinks_never_import_each_other() -> None:
    sinks = {sink_of(p) for p in SINKS.rglob("*.py")} - {"__init__"}
    assert {"prometheus", "remote_write"} <= sinks
    for path in SINKS.rglob("*.py"):
        others = {f"agent.sinks.{s}" for s in sinks - {sink_of(path)}}
        imported = {
            ".".join(m.split(".")[:3]) for m in imported_modules(path) if m.startswith("agent.")
        }
        assert not imported & others, path.relative_to(ROOT)


# What each sink package holds; a module of a sink found elsewhere in the product fails.
SINK_PACKAGES = {
    "prometheus": {"sink", "target_series", "exposition", "raw"},
    "remote_write": {"sink", "snapshot", "wire", "buffer", "sender", "metrics"},
    "measurement_log": {"sink", "record", "logfile", "counters"},
}


@pytest.mark.parametrize("package", sorted(SINK_PACKAGES))
def test_sinks_live_in_their_packages(package: str) -> None:
    home = SINKS / package
    assert (home / "__init__.py").is_file()
    modules = SINK_PACKAGES[package]
    assert {p.stem for p in home.glob("*.py")} - {"__init__"} >= modules
    # The config package has a module per config section, `raw` and `remote_write` among
    # them: a section's model is not its sink.
    config = ROOT / "agent" / "config"
    strays = [
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "agent").rglob("*.py")
        if home not in p.parents
        and config not in p.parents
        and (p.stem in modules - {"sink"} or p.stem == package)
    ]
    assert strays == []


def test_only_the_boundary_maps_exceptions_to_codes() -> None:
    """`classify` (the exception table) is called from probes/errors.py's boundary and from
    DNS evaluation of errors already caught per server, nowhere else."""
    callers = {
        path.relative_to(ROOT).as_posix()
        for package in ("probes", "measure", "agent")
        for path in files(package)
        if "classify(" in path.read_text(encoding="utf-8")
    }
    assert callers == {"probes/errors.py", "probes/dns.py"}


def defined_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return {node.name for node in tree.body if isinstance(node, kinds)}


def test_prefix_sampling_lives_in_the_measurement_layer() -> None:
    """Sampling, statistics, the sweep, its plan and its result are measurement policy
    (measure/prefixes.py, measure/plan.py, measure/report.py); the step layer keeps only the
    connect each sampled address gets."""
    sampling = defined_names(ROOT / "measure" / "prefixes.py") - {"main"}
    concept = sampling | {"Prefix", "PrefixLike", "PrefixResult", "AddressOutcome"}
    assert {"sample", "wilson", "sweep", "probe_prefixes"} <= sampling
    assert not list((ROOT / "probes").rglob("prefix*.py"))
    leaked = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in files("probes")
        for name in defined_names(path) & concept
    }
    assert leaked == set()
