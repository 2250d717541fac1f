"""Summarise the last `mutmut run` (the `make mutation` target, docs/testing.md): mutants,
killed, survivors and the score per module, then every survivor that docs/testing.md does not
explain as equivalent. Exits 1 if there is one: a survivor is either killed by a new test or
judged equivalent and listed there, never left unexplained.

Reads mutmut's own records (mutants/**/*.py.meta), so it runs after `mutmut run` in the same
tree; `mutmut show NAME` prints a survivor's change.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from fnmatch import fnmatchcase
from pathlib import Path

from mutmut.stats import status_by_exit_code

REPO_ROOT = Path(__file__).resolve().parents[1]
MUTANTS = REPO_ROOT / "mutants"
DOC = REPO_ROOT / "docs" / "testing.md"
# A timeout or a type-check failure is the mutant caught, as mutmut counts it.
CAUGHT = {"killed", "timeout", "caught by type check"}
# In docs/testing.md, an explained survivor is a table row whose first cell is its name (or
# a glob over names, for a group with one explanation) in backquotes.
EXPLAINED = re.compile(r"^\|\s*`([^`]+)`\s*\|", re.MULTILINE)
HEADER = f"{'module':32} {'mutants':>7} {'caught':>7} {'survived':>8} {'no tests':>8} {'score':>6}"


def results() -> dict[str, str]:
    """Every mutant's status, by name."""
    statuses: dict[str, str] = {}
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        statuses.update({name: status_by_exit_code[code] for name, code in codes.items()})
    return statuses


def module_of(name: str) -> str:
    """`probes.dns.x_evaluate__mutmut_3` -> `probes.dns`."""
    return name.split(".x", 1)[0]


def main() -> int:
    """Print the table and the unexplained survivors; 1 if there are any."""
    statuses = results()
    if not statuses:
        print("no mutmut results: run `make mutation` first", file=sys.stderr)
        return 2
    by_module: dict[str, Counter[str]] = {}
    for name, status in statuses.items():
        by_module.setdefault(module_of(name), Counter())[status] += 1
    print(HEADER)
    total: Counter[str] = Counter()
    for module, counts in sorted(by_module.items()):
        total.update(counts)
        print(row(module, counts))
    print(row("all", total))

    patterns = EXPLAINED.findall(DOC.read_text()) if DOC.exists() else []
    survivors = sorted(n for n, s in statuses.items() if s not in CAUGHT | {"not checked"})
    open_ones = [n for n in survivors if not any(fnmatchcase(n, p) for p in patterns)]
    for name in open_ones:
        print(f"unexplained {statuses[name]}: {name}  (mutmut show '{name}')")
    for pattern in patterns:
        if not any(fnmatchcase(n, pattern) for n in survivors):
            print(f"docs/testing.md explains {pattern}, which no survivor matches any more")
    return 1 if open_ones else 0


def row(label: str, counts: Counter[str]) -> str:
    """One line of the table: the score is caught over the mutants that were run."""
    run = sum(counts.values()) - counts["not checked"]
    caught = sum(counts[s] for s in CAUGHT)
    survived = counts["survived"] + counts["suspicious"]
    score = f"{100 * caught / run:.0f}%" if run else "-"
    return (
        f"{label:32} {sum(counts.values()):>7} {caught:>7} {survived:>8} "
        f"{counts['no tests']:>8} {score:>6}"
    )


if __name__ == "__main__":
    sys.exit(main())
