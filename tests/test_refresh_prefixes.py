"""scripts/refresh-prefixes on small provider files, and the prefix lists shipped in config/."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "refresh-prefixes"
FIXTURES = ROOT / "tests" / "fixtures" / "prefixes"
SHIPPED = ROOT / "config" / "prefixes"


def refresh(*args: str | Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(SCRIPT), *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def entries(path: Path) -> list[dict[str, object]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    # Every generated file is a valid `prefixes:` section of the agent's config.
    parse_config({"prefixes": data["prefixes"]}, str(path))
    return data["prefixes"]


def test_all_three_providers(tmp_path: Path) -> None:
    proc = refresh(
        "--telegram", FIXTURES / "cidr.txt",
        "--aws", FIXTURES / "ip-ranges.json",
        "--google", FIXTURES / "cloud.json",
        "--out", tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aws.yaml", "gcp.yaml", "telegram.yaml"]

    telegram = entries(tmp_path / "telegram.yaml")
    assert [e["cidr"] for e in telegram] == [
        "91.108.56.0/22",
        "149.154.160.0/20",
        "2001:67c:4e8::/48",
    ]
    assert telegram[0] == {"name": "telegram-91.108.56.0-22", "cidr": "91.108.56.0/22",
                           "port": 443, "sample": 16}  # fmt: skip
    assert telegram[2]["name"] == "telegram-2001:67c:4e8::-48"

    # EC2 only (not the AMAZON or CLOUDFRONT rows), default regions only, largest first,
    # a prefix listed twice kept once.
    aws = entries(tmp_path / "aws.yaml")
    assert [e["cidr"] for e in aws] == [
        "3.64.0.0/12", "18.196.0.0/15", "52.58.0.0/15", "54.72.0.0/15",
        "2a05:d014::/35", "2a05:d050:8000::/40",
    ]  # fmt: skip
    assert aws[0]["name"] == "aws-eu-central-1-3.64.0.0-12"
    assert "createDate 2023-11-14-22-13-20" in (tmp_path / "aws.yaml").read_text()

    gcp = entries(tmp_path / "gcp.yaml")
    assert [e["cidr"] for e in gcp] == [
        "34.76.0.0/14", "34.159.0.0/16", "35.198.64.0/18", "2600:1900:4080::/44",
    ]  # fmt: skip


def test_selection_options(tmp_path: Path) -> None:
    proc = refresh(
        "--aws", FIXTURES / "ip-ranges.json", "--aws-regions", "ap-southeast-1",
        "--max-v4", "1", "--max-v6", "0", "--port", "80", "--sample", "385", "--out", tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["aws.yaml"]  # only what was given
    assert entries(tmp_path / "aws.yaml") == [
        {"name": "aws-ap-southeast-1-3.0.0.0-15", "cidr": "3.0.0.0/15", "port": 80, "sample": 385}
    ]


@pytest.mark.parametrize(
    ("flag", "content", "needle"),
    [
        ("--aws", "{not json", "not a JSON file"),
        ("--aws", '{"ipv6_prefixes": []}', "no 'prefixes' list"),
        ("--google", '{"prefixes": {"a": 1}}', "no 'prefixes' list"),
        ("--google", '{"prefixes": [3]}', "prefixes[0] is not an object"),
        ("--google", '{"prefixes": [{"ipv4Prefix": "10.0.0.1/8", "scope": "europe-west3"}]}',
         "host bits"),
        ("--aws", '{"prefixes": []}', "no prefix matches"),
        ("--telegram", "91.108.56.0/22\nnot-a-prefix\n", "line 2"),
        ("--telegram", "# only a comment\n", "no prefixes"),
    ],
)  # fmt: skip
def test_bad_input_names_the_file_and_writes_nothing(
    tmp_path: Path, flag: str, content: str, needle: str
) -> None:
    source = tmp_path / "input"
    source.write_text(content)
    out = tmp_path / "out"
    proc = refresh("--telegram", FIXTURES / "cidr.txt", flag, source, "--out", out)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"refresh-prefixes: {source}: "), proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_missing_file_and_no_provider(tmp_path: Path) -> None:
    proc = refresh("--telegram", tmp_path / "absent.txt", "--out", tmp_path)
    assert proc.returncode == 2
    assert "cannot read" in proc.stderr
    proc = refresh("--out", tmp_path)
    assert proc.returncode == 2
    assert "at least one of" in proc.stderr


def test_shipped_lists_are_valid_and_tell_the_story() -> None:
    files = sorted(p.name for p in SHIPPED.glob("*.yaml"))
    assert files == ["aws.yaml", "gcp.yaml", "telegram.yaml"]
    telegram = {ipaddress.ip_network(e["cidr"]) for e in entries(SHIPPED / "telegram.yaml")}
    for cidr in ("91.108.4.0/22", "91.108.8.0/22", "91.108.12.0/22", "91.108.16.0/22",
                 "91.108.56.0/22", "149.154.160.0/20", "2001:67c:4e8::/48"):  # fmt: skip
        assert ipaddress.ip_network(cidr) in telegram
    for name in ("aws.yaml", "gcp.yaml"):
        shipped = entries(SHIPPED / name)
        assert 1 <= len(shipped) <= 16
        assert {ipaddress.ip_network(e["cidr"]).version for e in shipped} == {4, 6}
    names = [e["name"] for f in files for e in entries(SHIPPED / f)]
    assert len(names) == len(set(names))  # one config can take all three lists
