"""Prove the dependency floors in pyproject.toml: install the lowest allowed versions in a fresh
virtualenv and run the unit tests that exercise each dependency with them.

    .venv/bin/python scripts/lowest_deps.py [--venv DIR] [PYTEST_ARGS ...]

`uv pip install --resolution lowest-direct` installs every direct dependency (the package's
and its `test` extra's) at its floor and the newest of everything they pull in, as a user who
pins old versions would get. The script then checks that each floor was installed exactly:
when a floor cannot be installed together with the others (pytest-asyncio 0.24 needs pytest
8.2, say), the resolver raises it silently, and the floor is a claim nothing tested.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version
from uv import find_uv_bin

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = REPO_ROOT / ".venv-lowest"
# One module per dependency at least: config (pydantic, PyYAML), the resolvers (dnspython,
# DoH over aiohttp, DoT), the whole CLI against the loopback lab (aiohttp client, trustme),
# the metrics endpoint (prometheus-client, aiohttp server), and the docs checks (which read
# prometheus-client's metric objects).
TESTS = [
    "tests/test_config.py",
    "tests/test_classify.py",
    "tests/test_resolvers.py",
    "tests/test_check_loopback.py",
    "tests/test_metrics.py",
    "tests/test_agent_run.py",
    "tests/test_docs.py",
]
# Bounds on the two slow steps; a cold uv cache downloads about 30 wheels.
INSTALL_TIMEOUT = 600
PYTEST_TIMEOUT = 600


def floors(pyproject: Path) -> dict[str, Version]:
    """The `>=` floor of each direct dependency (the package's and its `test` extra's)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    found: dict[str, Version] = {}
    for line in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        req = Requirement(line)
        lows = [Version(s.version) for s in req.specifier if s.operator == ">="]
        if not lows:
            raise SystemExit(f"lowest_deps: {line!r} has no >= floor to test")
        found[req.name.lower()] = max(lows)
    return found


def installed_versions(python: Path, names: list[str]) -> dict[str, Version]:
    """Versions of `names` as installed in the environment of `python`."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    )
    out = subprocess.run(
        [str(python), "-c", code, *names], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return {name: Version(v) for name, v in json.loads(out).items()}


def floor_mismatches(wanted: dict[str, Version], got: dict[str, Version]) -> list[str]:
    """One line per dependency whose floor was not what got installed."""
    return [
        f"{name}: floor {wanted[name]}, installed {got[name]} (raise the floor to what resolves)"
        for name in sorted(wanted)
        if got[name] != wanted[name]
    ]


def install_floors(venv: Path) -> Path:
    """A fresh virtualenv at `venv` with the floors installed; returns its interpreter."""
    uv = find_uv_bin()
    if venv.exists():
        shutil.rmtree(venv)
    # The interpreter running this script: the machine's Python, the floor of requires-python
    # on a machine that has only that one.
    subprocess.run(
        [uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, timeout=60
    )
    python = venv / "bin" / "python"
    install = [uv, "pip", "install", "--quiet", "--python", str(python)]
    subprocess.run(
        [*install, "--resolution", "lowest-direct", "-e", f"{REPO_ROOT}[test]"],
        check=True,
        timeout=INSTALL_TIMEOUT,
    )
    return python


def main(argv: list[str] | None = None) -> int:
    """Create the venv, install the floors, check them, run the tests; returns pytest's code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="recreated each run")
    args, pytest_args = parser.parse_known_args(argv)
    try:
        python = install_floors(args.venv.resolve())
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        # uv has printed why (an unresolvable floor, no index); say which step it was.
        print(f"lowest_deps: installing the floors failed: {exc}", file=sys.stderr)
        return 1
    wanted = floors(REPO_ROOT / "pyproject.toml")
    got = installed_versions(python, sorted(wanted))
    print("lowest-direct:", ", ".join(f"{n}=={v}" for n, v in sorted(got.items())))
    problems = floor_mismatches(wanted, got)
    if problems:
        print("lowest_deps: floors not installable as written:", *problems, sep="\n  ")
        return 1
    pytest = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not lab"]
    return subprocess.run(
        [*pytest, *TESTS, *pytest_args], cwd=REPO_ROOT, check=False, timeout=PYTEST_TIMEOUT
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
