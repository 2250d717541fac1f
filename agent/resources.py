"""Finds the files shipped with the agent (default config, blockpage fingerprints)."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
# In a wheel the top-level config/ folder is packaged as agent/_shipped; in a source
# checkout (or an editable install) it is still ../config.
_CANDIDATES = (_HERE / "_shipped", _HERE.parent / "config")


def optional_shipped_file(name: str) -> Path | None:
    """Path of a file shipped in config/, or None where this install has none."""
    return next((f / name for f in _CANDIDATES if (f / name).is_file()), None)


def shipped_file(name: str) -> Path:
    """Path of a file shipped in config/, wherever the agent was installed from."""
    for folder in _CANDIDATES:
        path = folder / name
        if path.is_file():
            return path
    where = ", ".join(map(str, _CANDIDATES))
    raise FileNotFoundError(f"shipped file {name!r} not found in {where}")
