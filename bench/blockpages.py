"""Benchmark: CPU per HTTP response of the blockpage matcher, with the shipped fingerprints and
with OONI's whole database, beside one regex search per fingerprint (what the matcher did
before it indexed patterns by type).

    python bench/blockpages.py --ooni path/to/fingerprints_http.csv
    python bench/blockpages.py             # a synthetic database of OONI's size and shape

Responses: ordinary pages of 2 KiB, 64 KiB and 1 MiB (the agent's default body cap), none of
which matches, so every fingerprint is tried; and a 302 to a blockpage host. Prints
microseconds per response (the median of `--rounds` timings of `--repeat` matches), CPU time
of this process only. Nothing touches the network.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.fingerprint_db import read_ooni_http
from agent.planner import fingerprints
from probes.blockpages import BlockpageMatcher, Fingerprint

# OONI's database by location and pattern type (fingerprints_http.csv, 1,729 rows).
OONI_SHAPE = {
    ("body", "contains"): 1296,
    ("header:location", "prefix"): 271,
    ("header:location", "contains"): 118,
    ("body", "regexp"): 14,
    ("header:location", "full"): 13,
    ("header:server", "full"): 7,
    ("header:via", "full"): 4,
    ("header:server", "prefix"): 2,
    ("header:via", "prefix"): 2,
    ("header:x-app-url", "full"): 1,
    ("body", "full"): 1,
}


def synthetic_database(seed: int = 23) -> list[Fingerprint]:
    """Fingerprints of OONI's shape whose patterns look like theirs (titles, hosts, phrases)."""
    rng = random.Random(seed)
    words = ["blocked", "access", "denied", "site", "ministry", "order", "filter", "page"]
    out = []
    for (location, kind), count in OONI_SHAPE.items():
        for i in range(count):
            phrase = " ".join(rng.choice(words) for _ in range(4)) + f" {i}"
            if location == "header:location":
                pattern = f"http://block-{i}.isp{rng.randint(0, 999)}.example/"
            elif kind == "regexp":
                pattern = f"<title>{phrase}.*</title>"
            else:
                pattern = f"<title>{phrase}</title>"
            out.append(Fingerprint(f"synthetic.{location}.{kind}.{i}", pattern, location, kind))
    return out


def ordinary_body(size: int) -> str:
    """An HTML page of about `size` characters that no fingerprint matches."""
    paragraph = "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.</p>\n"
    return "<html><head><title>News</title></head><body>\n" + paragraph * (size // len(paragraph))


def per_regex(database: list[Fingerprint]) -> list[tuple[str, re.Pattern[str]]]:
    """One compiled search per fingerprint (case-insensitive, as before)."""
    return [
        (
            fp.location,
            re.compile(fp.pattern if fp.pattern_type == "regexp" else re.escape(fp.pattern), re.I),
        )
        for fp in database
    ]


def loop_match(
    compiled: list[tuple[str, re.Pattern[str]]], headers: dict[str, str], body: str
) -> bool:
    for location, pattern in compiled:
        text = body if location == "body" else headers.get(location.removeprefix("header:"))
        if text is not None and pattern.search(text):
            return True
    return False


def time_us(fn, repeat: int, rounds: int) -> float:  # type: ignore[no-untyped-def]
    """Median CPU microseconds per call."""
    samples = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(repeat):
            fn()
        samples.append((time.process_time() - start) / repeat * 1e6)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/blockpages.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--ooni", type=Path, help="OONI's fingerprints_http.csv (else synthetic)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args(argv)
    database = read_ooni_http(args.ooni) if args.ooni else synthetic_database()
    shipped = list(fingerprints())
    full = database + shipped
    matchers = {
        f"matcher, shipped ({len(shipped)})": BlockpageMatcher(shipped),
        f"matcher, database + shipped ({len(full)})": BlockpageMatcher(full),
    }
    loops = {
        f"one regex per fingerprint, shipped ({len(shipped)})": per_regex(shipped),
        f"one regex per fingerprint, database + shipped ({len(full)})": per_regex(full),
    }
    responses = {
        "2 KiB page": ("HTTP/1.1 200 OK", {"server": "nginx"}, ordinary_body(2048)),
        "64 KiB page": ("HTTP/1.1 200 OK", {"server": "nginx"}, ordinary_body(65536)),
        "1 MiB page": ("HTTP/1.1 200 OK", {"server": "nginx"}, ordinary_body(1 << 20)),
        "302 redirect": ("HTTP/1.1 302 Found", {"location": "http://example.org/x"}, ""),
    }
    source = args.ooni or "synthetic, OONI's shape"
    print(f"database: {source}, {len(database)} fingerprints; CPU us per response (median)")
    print(f"{'':52}" + "".join(f"{name:>14}" for name in responses))
    for label, matcher in matchers.items():
        cells = []
        for status, headers, body in responses.values():
            repeat = max(1, args.repeat // (1 + len(body) // 65536))
            call = lambda m=matcher, s=status, h=headers, b=body: m.match(s, h, b)  # noqa: E731
            cells.append(time_us(call, repeat, args.rounds))
        print(f"{label:52}" + "".join(f"{c:14.1f}" for c in cells))
    for label, compiled in loops.items():
        cells = []
        for _status, headers, body in responses.values():
            repeat = max(1, args.repeat // (1 + len(body) // 2048) // 4)
            call = lambda c=compiled, h=headers, b=body: loop_match(c, h, b)  # noqa: E731
            cells.append(time_us(call, repeat, args.rounds))
        print(f"{label:52}" + "".join(f"{c:14.1f}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
