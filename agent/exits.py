"""How every command ends when it is told to stop, or when its reader goes away.

SIGINT (Ctrl-C) or SIGTERM while a command works cancels it: the cancellation runs the usual
clean-up (sockets closed, the demo's temporary files removed), then one line on stderr names
the signal and the command exits with 128 + the signal's number, as a shell reports a process
the signal killed (130, 143). The serving commands (`run`, `demo` without `--once`) stop on
those signals the way they are meant to end, and exit 0. A closed stdout (`check | head`) ends
the command quietly: nobody is left to read the rest.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# What a shell reports for a writer whose pipe closed (128 + SIGPIPE).
EXIT_PIPE = 128 + signal.SIGPIPE


def signal_exit(sig: signal.Signals) -> int:
    """The exit code for a command that `sig` stopped before it finished: 128 + its number."""
    return 128 + int(sig)


def say_stopped(command: str, sig: signal.Signals) -> None:
    """The one line a stopped command leaves on stderr."""
    print(f"reachprobe {command}: stopped by {sig.name}", file=sys.stderr, flush=True)


async def stoppable(main: Coroutine[Any, Any, int], command: str) -> int:
    """Run `main`; the first SIGINT or SIGTERM cancels it and yields `signal_exit(sig)`.

    A command that handles the signals itself (`run`) installs its own handlers, which
    replace these while it runs. Signals that come while the cancellation cleans up are
    ignored: the clean-up is bounded, and a second Ctrl-C must not leave files behind.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    caught: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if not caught and task is not None:
            caught.append(sig)
            task.cancel()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await main
    except asyncio.CancelledError:
        if not caught or task is None:
            raise
        task.uncancel()
        say_stopped(command, caught[0])
        return signal_exit(caught[0])
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


def quiet_stdout() -> None:
    """After a BrokenPipeError on stdout: point stdout at /dev/null, so that the interpreter's
    last flush at exit finds nothing to complain about."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
