"""Benchmark: drawing `check`'s terminal table for 10,000 targets (no network: the reports are
made up). Prints the time until the first piece of the table is on screen and until the whole
of it is, at 80 columns: the table is drawn `ROWS_PER_TABLE` targets at a time so that a long
check shows rows as they come rather than seconds of a blank screen.

    python bench/console_table.py [--targets 10000]
"""

from __future__ import annotations

import argparse
import io
import time

from rich.console import Console

from agent.sinks.console import rich_tables
from measure.plan import TargetPlan
from measure.report import TargetReport
from measure.verdict import Verdict
from probes.results import StepResult
from probes.taxonomy import Code, Step


def reports(count: int) -> list[TargetReport]:
    """Every other target reset at TLS, the rest reachable."""
    out = []
    for i in range(count):
        target = TargetPlan(f"target-{i}", "", "https", f"site{i}.test", 443)
        if i % 2:
            tls = StepResult(Step.TLS, Code.TLS_RESET, None, 0.01, "Connection reset by peer")
            out.append(TargetReport(target, Verdict.TLS_BLOCKING, chains=((tls,),)))
        else:
            out.append(TargetReport(target, Verdict.REACHABLE))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--targets", type=int, default=10_000)
    args = parser.parse_args()
    made = reports(args.targets)
    console = Console(file=io.StringIO(), width=80, force_terminal=True)
    start = time.perf_counter()
    first = None
    for piece in rich_tables(made, console.width):
        console.print(piece)
        first = first or time.perf_counter() - start
    total = time.perf_counter() - start
    print(
        f"{args.targets} targets at 80 columns: first rows after {first:.3f} s, "
        f"the whole table after {total:.1f} s"
    )


if __name__ == "__main__":
    main()
