"""The documentation keeps up with the contracts it describes, each derived from the code.

The helpers at the top are the only places that know where the code keeps each contract (the
metrics, the CLI, the taxonomy, the verdicts); the measurement refactor may move them, and then
only a helper changes.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.metrics import MetricWrapperBase

from simlab.loopback import LoopbackLab
from tests.test_check_loopback import CASES_BY_NAME, WriteConfig, check_json, resolve_target

DOCS = Path(__file__).resolve().parent.parent

Labels = frozenset[str]


def exported_metrics() -> dict[str, tuple[str, Labels]]:
    """Each family a fresh agent registry exports, by the name its samples carry (a counter's
    with `_total`): its type and label names."""
    from agent.sinks.measurement_log.counters import MeasurementLogMetrics
    from agent.sinks.prometheus import PrometheusSink
    from agent.sinks.prometheus.exposition import RowFamily
    from agent.sinks.remote_write.metrics import RemoteWriteMetrics

    registry = PrometheusSink().registry
    RemoteWriteMetrics.for_registry(registry)  # what push mode adds to the same registry
    MeasurementLogMetrics.for_registry(registry)  # what the measurement log adds
    families = {family.name: family.type for family in registry.collect()}
    # A labelled metric shows its label names only in its samples, and a fresh one has none;
    # prometheus_client keeps them on the metric object, with no public accessor. The
    # per-target families (agent/sinks/prometheus/target_series.py) carry theirs on the family.
    label_names = {
        collector._name: frozenset(collector._labelnames)
        for collector in registry._collector_to_names
        if isinstance(collector, MetricWrapperBase)
    } | {
        family.name: frozenset(family.labelnames)
        for family in registry.collect()
        if isinstance(family, RowFamily)
    }
    assert set(label_names) == set(families), "a family of unknown label names"
    return {
        (f"{name}_total" if kind == "counter" else name): (kind, label_names[name])
        for name, kind in families.items()
    }


def cli_parser() -> argparse.ArgumentParser:
    """The `reachprobe` argument parser."""
    from agent.cli import _parser

    return _parser()


def exit_codes() -> dict[str, int]:
    """The CLI's `EXIT_*` constants by name."""
    import agent.cli

    return {name: value for name, value in vars(agent.cli).items() if name.startswith("EXIT_")}


def code_steps() -> dict[str, str]:
    """Each result code's step (`all` for the codes every step can end in)."""
    from probes.taxonomy import CODES, OK, SKIPPED

    return {OK.value: "all", SKIPPED.value: "all"} | {
        code.value: step.value for step, codes in CODES.items() for code in codes
    }


def ooni_failures() -> dict[str, str | None]:
    """Each result code's OONI failure string (None: success)."""
    from probes.taxonomy import OONI_FAILURE

    return {code.value: ooni for code, ooni in OONI_FAILURE.items()}


def verdicts() -> set[str]:
    """Every verdict a target can get."""
    from measure.verdict import VERDICTS

    return {v.value for v in VERDICTS}


def read(name: str) -> str:
    """A documentation file of the repository."""
    return (DOCS / name).read_text(encoding="utf-8")


def table_rows(text: str, first_cell: str = "`") -> list[list[str]]:
    """The cells of each Markdown table row whose first cell starts with `first_cell`, with
    backticks stripped and escaped pipes (`\\|`) kept inside their cell."""
    rows = []
    for line in text.splitlines():
        if not line.startswith(f"| {first_cell}"):
            continue
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        rows.append([c.strip().strip("`").replace("\\|", "|") for c in cells])
    return rows


def section(text: str, heading: str) -> str:
    """The body of a Markdown section, up to the next heading of any level."""
    start = text.index(f"{heading}\n")
    following = re.search(r"^#+ ", text[start + len(heading) :], re.MULTILINE)
    end = start + len(heading) + following.start() if following else len(text)
    return text[start:end]


# Taxonomy and verdicts (docs/taxonomy.md).


def taxonomy_rows() -> dict[str, list[str]]:
    """docs/taxonomy.md's code table: code -> [code, step, meaning, OONI failure]."""
    return {
        cells[0]: cells
        for cells in table_rows(section(read("docs/taxonomy.md"), "# Failure taxonomy"))
    }


def test_taxonomy_doc_lists_every_code_with_its_ooni_string() -> None:
    rows = taxonomy_rows()
    failures = ooni_failures()
    assert set(rows) == set(failures)
    for code, ooni in failures.items():
        assert rows[code][3] == ("null" if ooni is None else ooni), code


def test_taxonomy_doc_step_column_is_each_codes_step() -> None:
    documented = {code: cells[1] for code, cells in taxonomy_rows().items()}
    assert documented == code_steps()


def test_taxonomy_doc_lists_every_verdict() -> None:
    rows = table_rows(section(read("docs/taxonomy.md"), "## Verdicts"))
    assert {cells[0] for cells in rows} == verdicts()


# The README's metrics reference.


def test_readme_metrics_table_matches_the_registry() -> None:
    """Names, types and label sets, both ways: nothing undocumented, nothing documented that
    the agent does not export."""
    rows = table_rows(section(read("README.md"), "## Metrics reference"), "`reachprobe_")
    documented = {
        name: (kind, frozenset(label.strip() for label in labels.split(",") if label.strip()))
        for name, kind, labels, _meaning in rows
    }
    assert documented == exported_metrics()


# The README's commands and exit codes.


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """The CLI's subcommand parsers by name."""
    parser = cli_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def readme_commands() -> dict[str, str]:
    """The README's command table: command name -> its usage line."""
    rows = table_rows(section(read("README.md"), "## Commands"), "`reachprobe ")
    return {usage.split()[1]: usage for usage, _what in rows}


def test_readme_lists_every_command() -> None:
    assert set(readme_commands()) == set(subcommands())


def test_readme_usage_lines_show_each_commands_options() -> None:
    """Each usage line names exactly the command's long options, and `A|B` alternatives are
    the option's choices."""
    parsers = subcommands()
    for name, usage in readme_commands().items():
        actions = {
            option: action
            for action in parsers[name]._actions
            for option in action.option_strings
            if option.startswith("--") and option != "--help"
        }
        assert set(re.findall(r"--[a-z][a-z-]*", usage)) == set(actions), usage
        for option, choices in re.findall(r"(--[a-z-]+) ([\w-]+(?:\|[\w-]+)+)", usage):
            assert choices.split("|") == list(actions[option].choices), usage


# What each EXIT_* constant means, as a word the docs must use for it.
EXIT_MEANINGS = {"EXIT_OK": "success", "EXIT_UNREACHABLE": "not reachable", "EXIT_USAGE": "usage"}


def documented_exit_codes(text: str) -> dict[int, str]:
    """`Exit codes: 0 success, 1 ..., 2 ....` parsed into code -> meaning."""
    match = re.search(r"Exit codes:\s*(.*?)\.(?:\s|$)", text, re.DOTALL)
    assert match, "no 'Exit codes:' sentence"
    items = re.split(r",\s*(?=\d+ )", " ".join(match[1].split()))
    return {int(code): meaning for code, meaning in (item.split(" ", 1) for item in items)}


def test_exit_codes_in_readme_and_help_match_the_constants() -> None:
    constants = exit_codes()
    assert set(constants) == set(EXIT_MEANINGS), "document the new exit code, then name it here"
    for where, text in [("README", read("README.md")), ("--help", cli_parser().epilog or "")]:
        documented = documented_exit_codes(text)
        assert set(documented) == set(constants.values()), (where, documented, constants)
        for name, value in constants.items():
            assert EXIT_MEANINGS[name] in documented[value], (where, name, documented[value])


# The README's JSON shape, against a real `check --format json` on the loopback lab.


def readme_json_example() -> dict[str, Any]:
    """The README's `check --format json` example, with its `{...}` placeholders emptied."""
    block = re.search(r"```json\n(.*?)```", section(read("README.md"), "## Commands"), re.DOTALL)
    assert block, "no JSON example under Commands"
    return json.loads(block[1].replace("{...}", "{}"))


def key_shape(doc: dict[str, Any]) -> dict[str, set[str]]:
    """The keys of the document, of its agent, and of every target and step (unions)."""
    targets = doc["targets"]
    return {
        "document": set(doc),
        "agent": set(doc["agent"]),
        "target": {key for target in targets for key in target},
        "step": {key for target in targets for step in target["steps"] for key in step},
    }


def test_readme_json_shape_matches_a_real_check(
    lab: LoopbackLab, write_config: WriteConfig
) -> None:
    # A target that runs every step (with data) and one that fails at the first.
    names = ("ok-https", "dns-nxdomain")
    config = write_config([resolve_target(lab, CASES_BY_NAME[name]) for name in names])
    _code, output = check_json(config)
    assert key_shape(output) == key_shape(readme_json_example())


def test_prefix_doc_lists_every_prefix_rule() -> None:
    rules = yaml.safe_load(
        (DOCS / "deploy" / "prometheus" / "reachprobe.prefix.rules.yml").read_text(encoding="utf-8")
    )
    doc = (DOCS / "docs" / "prefixes.md").read_text(encoding="utf-8")
    records = [r["record"] for group in rules["groups"] for r in group["rules"]]
    assert records
    for record in records:
        # The interval's bounds share one row, written `..._ci_low` / `_ci_high`.
        shown = "`_ci_high`" if record.endswith("_ci_high") else f"`{record}`"
        assert shown in doc, record
