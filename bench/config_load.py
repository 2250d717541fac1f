"""Benchmark: the time to load a config of 1,000 and 10,000 targets, stage by stage.

Per size, the median of five runs of each stage of `load_config` with the garbage collector on
(as a plain YAML load runs): composing the YAML node tree (libyaml's parser where PyYAML has
it), the duplicate-key walk over that tree, constructing the Python data, and the pydantic
validation; then the whole `load_config`, which pauses the collector. Only files in a
temporary folder; nothing is probed.

    python bench/config_load.py                 # 1,000 and 10,000 targets: ~1 min
    python bench/config_load.py --sizes 100000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.config import load_config, parse_config
from agent.config.loader import _YAML_LOADER, _duplicate_keys

RUNS = 5
STAGES = ("compose", "duplicates", "construct", "validate")


def write(path: Path, count: int) -> Path:
    """A config of `count` URL targets with a group and expectations (five keys each)."""
    targets = [
        {
            "name": f"t{i:06d}",
            "url": f"https://site{i}.example/",
            "group": f"g{i % 50}",
            "expect_status": [200],
            "expect_body": "ok",
        }
        for i in range(count)
    ]
    path.write_text(yaml.safe_dump({"agent": {"vantage": "bench"}, "targets": targets}))
    return path


def stages(path: Path) -> dict[str, float]:
    """Seconds of each stage of one load of `path`."""
    text = path.read_text()
    marks = [time.perf_counter()]
    loader = _YAML_LOADER(text)
    node = loader.get_single_node()
    marks.append(time.perf_counter())
    _duplicate_keys(node)
    marks.append(time.perf_counter())
    data = loader.construct_document(node)
    loader.dispose()
    marks.append(time.perf_counter())
    parse_config(data, str(path), path.parent)
    marks.append(time.perf_counter())
    return {name: marks[i + 1] - marks[i] for i, name in enumerate(STAGES)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    print(f"loader: {_YAML_LOADER.__name__}; seconds, median of {RUNS} runs")
    print("stages with the garbage collector on; load_config pauses it")
    print(f"{'targets':>8}" + "".join(f"{name:>12}" for name in (*STAGES, "load_config")))
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            path = write(Path(tmp) / f"{size}.yaml", size)
            runs = [stages(path) for _ in range(RUNS)]
            medians = [statistics.median(run[name] for run in runs) for name in STAGES]
            wholes = []
            for _ in range(RUNS):
                start = time.perf_counter()
                load_config(path)
                wholes.append(time.perf_counter() - start)
            cells = [*medians, statistics.median(wholes)]
            print(f"{size:>8}" + "".join(f"{cell:>12.3f}" for cell in cells))


if __name__ == "__main__":
    main()
