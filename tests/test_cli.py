"""The `reachprobe` command line: help, versions, the built-in config, and usage errors that are
said, not ignored. Through main() where nothing runs, as a subprocess where the agent runs."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent import __version__, eventloop
from agent.cli import MAX_LISTED_TARGETS, _parser, main
from agent.config import load_config
from agent.resources import shipped_file

REPO = Path(__file__).resolve().parent.parent
DEADLINE = 20.0
COMMANDS = ("run", "check", "validate", "demo", "config")


def config_file(tmp_path: Path, names: list[str], **agent: Any) -> Path:
    """A config of `tcp:` targets at a closed loopback port (nothing else is contacted)."""
    data = {
        "agent": {"listen": None, "timeout": "200ms", **agent},
        "resolvers": {"test": {"type": "udp", "servers": ["127.0.0.1:9"]}},
        "targets": [{"name": name, "tcp": "127.0.0.1:9"} for name in names],
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("command", COMMANDS)
def test_version_works_after_every_command(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"reachprobe {__version__}"


def test_every_option_of_every_command_has_help() -> None:
    parser = _parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == set(COMMANDS)
    for name, command in commands.choices.items():
        for action in command._actions:
            assert len((action.help or "").split()) >= 3, (name, action.dest)


def test_config_default_prints_the_built_in_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "default"]) == 0
    printed = capsys.readouterr().out
    assert printed == shipped_file("default.yaml").read_text(encoding="utf-8")
    copy = tmp_path / "reachprobe.yaml"
    copy.write_text(printed)
    assert load_config(copy) == load_config()


def test_demo_format_without_once_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--format", "json"]) == 2
    assert "--format needs --once" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["bogus", "uv-loop", "trio"])
def test_an_unknown_event_loop_is_an_error(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(eventloop.ENV, value)
    with pytest.raises(ValueError, match="is not an event loop: use asyncio or uvloop"):
        eventloop.loop_factory()
    assert main(["validate", "--config", str(config_file(tmp_path, ["a"]))]) == 2
    assert f"{eventloop.ENV}='{value}' is not an event loop" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["", "asyncio", "AsyncIO ", "uvloop"])
def test_the_known_event_loops_are_accepted(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(eventloop.ENV, value)
    eventloop.loop_factory()


@pytest.mark.parametrize(("count", "said"), [(1, "ok (1 target)"), (2, "ok (2 targets)")])
def test_validate_counts_in_words(
    count: int, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path, [f"t{i}" for i in range(count)])
    assert main(["validate", "--config", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: {said}"


def test_validate_warns_about_the_placeholder_vantage_but_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "--config", str(config_file(tmp_path, ["a"]))]) == 0
    assert "agent.vantage is still the placeholder 'unnamed'" in capsys.readouterr().err
    named = config_file(tmp_path, ["a"], vantage="lab-1")
    assert main(["validate", "--config", str(named)]) == 0
    assert capsys.readouterr().err == ""


def test_an_unknown_target_lists_the_valid_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path, ["telegram-web", "twitch"])
    assert main(["check", "--config", str(path), "--target", "twitsh"]) == 2
    assert capsys.readouterr().err.strip() == (
        "reachprobe: no target named twitsh; the targets are: telegram-web, twitch"
    )


def test_among_many_targets_an_unknown_one_gets_the_closest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = [f"site-{i}" for i in range(MAX_LISTED_TARGETS)] + ["telegram-web"]
    path = config_file(tmp_path, names)
    assert main(["check", "--config", str(path), "--target", "telegram-wbe"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reachprobe: no target named telegram-wbe; did you mean telegram-web?")
    assert f"({len(names)} targets" in err
    assert "site-3" not in err


def _wait_for(log: Path, text: str, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + DEADLINE
    while text not in log.read_text() and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.1)


def _run_until(path: Path, text: str, *, reload_after: str | None = None) -> str:
    """`reachprobe run` on `path` until its log shows `text` (after a SIGHUP once it shows
    `reload_after`); then SIGTERM; the whole log."""
    log = path.with_suffix(".log")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(path)],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        if reload_after is not None:
            _wait_for(log, reload_after, proc)
            proc.send_signal(signal.SIGHUP)
        _wait_for(log, text, proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return log.read_text()


def test_run_logs_its_config_and_warns_about_the_placeholder_name(tmp_path: Path) -> None:
    path = config_file(tmp_path, ["a"])
    log = _run_until(path, "placeholder")
    assert f"config: {path} (1 target)" in log
    assert "agent.vantage is still the placeholder 'unnamed'" in log
    assert "the 1 configured target every" in log


def test_a_named_vantage_gets_no_placeholder_warning(tmp_path: Path) -> None:
    path = config_file(tmp_path, ["a", "b"], vantage="lab-1")
    log = _run_until(path, "configured targets every")
    assert f"config: {path} (2 targets)" in log
    assert "placeholder" not in log


def test_a_reload_names_the_file_and_counts_in_words(tmp_path: Path) -> None:
    path = config_file(tmp_path, ["a"], vantage="lab-1")
    log = _run_until(path, "config reloaded", reload_after="configured target every")
    assert f"config reloaded from {path}: 1 target\n" in log
