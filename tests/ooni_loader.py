"""Load a measurement log with OONI's data package and print what its models make of it.

    .venv-ooni/bin/python tests/ooni_loader.py LOGFILE

Runs in .venv-ooni (scripts/install-test-deps), not in the test venv: oonidata 0.3 pins a
cryptography that the agent's aioquic cannot live with. It imports nothing of reachprobe's.
For every whole line of LOGFILE (a torn last line, one an agent is still writing, is left out)
it prints one JSON line: `{"line": N, "model": CLASS, "measurement": model.to_dict()}`, or
`{"line": N, "error": TEXT}` when the line is not JSON or oonidata's loader refuses it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from oonidata.dataclient import load_measurement


def loaded(number: int, line: str) -> dict[str, Any]:
    """What OONI's loader makes of one line: its model's class and contents, or why not."""
    try:
        model = load_measurement(msmt=json.loads(line))
        return {"line": number, "model": type(model).__name__, "measurement": model.to_dict()}
    except Exception as error:  # any refusal is reported per line, the other lines still load
        return {"line": number, "error": f"{type(error).__name__}: {error}"}


def main(argv: list[str]) -> int:
    """Print one JSON line per whole line of the log named in `argv`."""
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    text = Path(argv[1]).read_text(encoding="utf-8")
    for number, line in enumerate(text[: text.rfind("\n") + 1].splitlines(), 1):
        print(json.dumps(loaded(number, line)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
