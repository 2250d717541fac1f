"""Reading the CSV files the agent takes from the field (OONI's fingerprints, Citizen Lab's
test lists) with the line each row starts on, so that a bad row is named by file and line."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

Row = dict[str, str | None]


def csv_rows(path: Path, columns: Sequence[str], hint: str = "") -> list[tuple[int, Row]]:
    """Every row of `path` with its first line's number. ValueError (naming the file) when it
    cannot be read or its header lacks one of `columns` (`hint` says what it should be)."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or ())]
            if missing:
                raise ValueError(f"{path}:1: no column {', '.join(missing)}{hint}")
            rows: list[tuple[int, Row]] = []
            line = reader.line_num + 1
            for row in reader:
                rows.append((line, row))
                line = reader.line_num + 1
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: {exc}") from None


def wrong_width(row: Row) -> bool:
    """Whether a row has more or fewer fields than the header."""
    return None in row or any(v is None for v in row.values())
