"""Durations as operators write them: `500ms`, `10s`, `5m`, `1h30m`, or plain seconds."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: object) -> float:
    """Seconds from a duration string or number; raises ValueError with a useful message."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 500ms, 10s, 5m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif text and re.fullmatch(rf"(?:{_PART.pattern})+", text):
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
        else:
            raise ValueError(f"{value!r} is not a duration (use e.g. 500ms, 10s, 5m, 1h30m)")
    else:
        raise ValueError("a duration is a number of seconds or a string like 500ms, 10s, 5m")
    if not math.isfinite(seconds):
        # YAML's .nan and .inf, or a number too long for a float: a timer cannot use them.
        raise ValueError(f"{value!r} is not a finite duration")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds
