"""The one config loader: YAML text in, a validated model or a ConfigError out.

Every error names the file, the key path and the reason, e.g.
`site.yaml: targets[2].url: not an http(s) URL`. The agent config and the web config
(agent/config/web.py) are read through the same functions, so they fail the same way.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from agent.config.model import Config
from agent.resources import shipped_file

DEFAULT_CONFIG_NAME = "default.yaml"
# libyaml's loader where PyYAML was built with it: parsing 10,000 targets takes 0.27 s instead
# of 1.2 s. The same safe subset of YAML either way.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_LIBRARY_SUBJECT = re.compile(r"^(?:Input|String|List|Dictionary|Value|Tuple|Set) should ")

M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """A config that cannot be used; `str()` is ready to print, one problem per line."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {p}: {why}" if p else f"{source}: {why}" for p, why in problems]
        super().__init__("\n".join(lines))


def _path(loc: tuple[int | str, ...], data: Any, missing: bool) -> str:
    """The key path of an error location, in the file's own keys.

    pydantic's locations also hold the names of union members and validators
    (`literal['mtproto']`, `int`, `IPv4Network`, `function-after[...]`): a part is kept only
    where the written data has that key or index (or, for a missing key, as the last part).
    """
    out, here = "", data
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(here, list) and isinstance(part, int) and 0 <= part < len(here):
            out, here = f"{out}[{part}]", here[part]
        elif isinstance(here, dict) and (part in here or (missing and last)):
            out, here = (f"{out}.{part}" if out else str(part)), here.get(part)
    return out


def _combined(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """One line per key: the alternatives of a union that all failed ("must be true, not a
    list" and "must be a whole number, not a list") said as one ("must be true or a whole
    number, not a list")."""
    by_key: dict[str, list[str]] = {}
    for key, why in dict.fromkeys(problems):
        by_key.setdefault(key, []).append(why)
    out = []
    for key, reasons in by_key.items():
        alike = [m for why in reasons if (m := re.fullmatch(r"must be (.+), not (.+)", why))]
        if len(reasons) > 1 and len(alike) == len(reasons) and len({m[2] for m in alike}) == 1:
            out.append((key, f"must be {' or '.join(m[1] for m in alike)}, not {alike[0][2]}"))
        else:
            out.extend((key, why) for why in reasons)
    return out


def _kind(value: object) -> str:
    """What a YAML value is, in the words of someone who wrote it."""
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"true/false ({value!r})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"text ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


# pydantic error types whose own messages name Python or pydantic types
# ("Input should be a valid dictionary or instance of TargetConfig"): said here instead.
_EXPECTED = {
    "model_type": "a mapping of keys (key: value)",
    "model_attributes_type": "a mapping of keys (key: value)",
    "dict_type": "a mapping of keys (key: value)",
    "list_type": "a list",
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "path_type": "a file name",
}


def _reason(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in _EXPECTED:
        return f"must be {_EXPECTED[kind]}, not {_kind(err.get('input'))}"
    if kind == "literal_error":
        # YAML writes Python's True and False as true and false.
        expected = re.sub(
            r"(?<!')\b(True|False)\b(?!')", lambda m: m[1].lower(), err["ctx"]["expected"]
        )
        return f"must be {expected}, not {_kind(err.get('input'))}"
    if kind == "string_pattern_mismatch":
        # Every pattern in the models has its own validator and message; this is a fallback
        # that never shows the regular expression.
        return f"{err.get('input')!r} is not in the expected form"
    message = str(err["msg"]).removeprefix("Value error, ")
    # "Input should be greater than 0" -> "must be greater than 0", "String should have at
    # least 1 character" -> "must have at least 1 character".
    return _LIBRARY_SUBJECT.sub("must ", message, count=1)


def validate(
    model: type[M], data: Any, source: str, top_level: str, context: dict[str, Any] | None = None
) -> M:
    """`data` as a `model`; raises ConfigError with one (key path, reason) per problem.

    `top_level` says what the file's top level must be when it is not a mapping.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [("", f"the top level must be {top_level}")])
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        problems = [
            (_path(err["loc"], data, err["type"] == "missing"), _reason(err))
            for err in exc.errors()
        ]
        raise ConfigError(source, _combined(problems)) from None


def _duplicate_keys(root: yaml.Node) -> list[tuple[str, str]]:
    """(key path, reason) of every key written twice in one mapping, at any depth, in file order.

    YAML loaders keep the last of two equal keys without a word, so two `agent:` blocks would
    silently drop the first. Merge keys (`<<: *anchor`) are YAML's own way to override keys
    and are not duplicates.
    """
    found: list[tuple[int, str, str]] = []
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    visited: set[int] = set()
    while stack:
        node, path = stack.pop()
        if id(node) in visited:  # an alias: its node is walked once
            continue
        visited.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                    stack.append((value, path))
                    continue
                child = f"{path}.{key.value}" if path else key.value
                line = key.start_mark.line + 1
                seen = first.get((key.tag, key.value))
                if seen is None:
                    first[key.tag, key.value] = line
                else:
                    where = "earlier on the same line" if seen == line else f"first on line {seen}"
                    why = (
                        f"duplicate key on line {line} ({where}): write each key once; "
                        "YAML would keep only the last"
                    )
                    found.append((line, child, why))
                stack.append((value, child))
    return [(path, why) for _, path, why in sorted(found)]


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a while, on again after (if it was on).

    Loading 10,000 targets makes some 10^6 objects (YAML nodes, dicts, models) in one go; the
    collector's passes over them made that 2-3 times slower (bench/config_load.py).
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def read_yaml(file: Path, empty: str) -> Any:
    """The YAML data in `file`; raises ConfigError naming the file (and the line for bad YAML).

    An empty file (or one of only comments) is an error whose reason ends with `empty`: it is
    a wrong path or a truncated copy far more often than meant.
    """
    source = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError:
        raise ConfigError(source, [("", "not UTF-8 text")]) from None
    loader = _YAML_LOADER(text)
    try:
        node = loader.get_single_node()
        duplicates = _duplicate_keys(node) if node is not None else []
        if duplicates:
            raise ConfigError(source, duplicates)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [("", f"invalid YAML: {where}{problem}")]) from None
    finally:
        loader.dispose()
    if data is None:
        raise ConfigError(source, [("", f"the file is empty: {empty}")])
    return data


def parse_config(data: Any, source: str, base_dir: Path | None = None) -> Config:
    """Validate already-loaded YAML data; raises ConfigError."""
    return validate(Config, data, source, "a mapping of sections", {"base_dir": base_dir})


def load_config(path: str | Path | None = None) -> Config:
    """Load and validate a config file, or the built-in default when `path` is None."""
    file = Path(path) if path is not None else shipped_file(DEFAULT_CONFIG_NAME)
    empty = "a config needs at least targets (`reachprobe config default` prints an example)"
    with _collector_paused():
        return parse_config(read_yaml(file, empty), str(file), file.parent)
