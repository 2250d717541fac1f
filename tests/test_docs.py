"""The documentation keeps up with the contracts it describes."""

from __future__ import annotations

from pathlib import Path

import yaml

from agent.metrics import Metrics
from probes.taxonomy import ALL_CODES, OONI_FAILURE

DOCS = Path(__file__).resolve().parent.parent


def test_taxonomy_doc_lists_every_code_with_its_ooni_string() -> None:
    text = (DOCS / "docs" / "taxonomy.md").read_text(encoding="utf-8")
    rows = {
        cells[1].strip("`"): cells[4].strip("`")
        for line in text.splitlines()
        if line.startswith("| `")
        for cells in [[c.strip() for c in line.split("|")]]
        if len(cells) > 5
    }
    assert set(rows) == set(ALL_CODES)
    for code, ooni in OONI_FAILURE.items():
        assert rows[code] == ("null" if ooni is None else ooni), code


def test_readme_documents_every_exported_metric() -> None:
    readme = (DOCS / "README.md").read_text(encoding="utf-8")
    for family in Metrics().registry.collect():
        # The client names a counter's family without the `_total` its samples carry.
        shown = f"{family.name}_total" if family.type == "counter" else family.name
        assert f"`{shown}`" in readme, shown


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
