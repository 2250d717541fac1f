"""`measurement_log`: the opt-in JSON-lines log of every measurement (docs/measurement-log.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator

from agent.config.types import Strict, relative_to_config


class MeasurementLogSection(Strict):
    """The opt-in measurement log (docs/measurement-log.md): one JSON line per target per
    cycle in `path`, rotated when it would grow past `max_bytes`, keeping `backups` old files."""

    path: Path
    max_bytes: Annotated[int, Field(ge=4096)] = 10 << 20
    backups: Annotated[int, Field(ge=0, le=100)] = 5

    @field_validator("path")
    @classmethod
    def _directory(cls, value: Path, info: ValidationInfo) -> Path:
        path = relative_to_config(value, info)
        if not path.parent.is_dir():
            raise ValueError(f"directory {str(path.parent)!r} does not exist")
        if path.is_dir():
            raise ValueError(f"{str(path)!r} is a directory; give a file name")
        return path
