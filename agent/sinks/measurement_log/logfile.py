"""The measurement log's file: whole lines appended, rotated by size, repaired at open, and
write failures counted and said once instead of raised per record.

Blocking (plain `os` calls on one descriptor): the sink runs it off the event loop, one batch
at a time. What it guarantees is in docs/reliability.md:

- every line of the file is one whole record. A record the disk had no room for is cut off
  again (`ftruncate` to where it started), and a file that does not end in a newline at open
  (a crash or power cut mid-write) has its last, torn fragment moved to `<path>.torn`;
- a failing write (a full disk, EIO, a removed directory) costs that record only: it is
  counted by reason, the first failure is logged once and the recovery once, and the next
  batch tries again, so writing resumes when space returns;
- the file is reopened when its path no longer names it (moved away by logrotate, or its
  directory removed: then the writes fail as `no_directory` instead of vanishing into an
  unlinked file).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger("reachprobe")

# A write failure's `reason` label by errno; anything else is "other".
REASONS: dict[int, str] = {
    errno.ENOSPC: "no_space",
    errno.EDQUOT: "no_space",
    errno.EFBIG: "no_space",
    errno.EIO: "io_error",
    errno.ENOENT: "no_directory",
    errno.ENOTDIR: "no_directory",
    errno.EROFS: "read_only",
    errno.EACCES: "permission",
    errno.EPERM: "permission",
}
OTHER = "other"
FAILURE_REASONS: tuple[str, ...] = (*dict.fromkeys(REASONS.values()), OTHER)
TORN_SUFFIX = ".torn"
# How far back from the end the repair looks for the last newline, per read.
_CHUNK = 65536


def reason_of(error: OSError) -> str:
    """The `reason` label of a failed write."""
    return REASONS.get(error.errno or 0, OTHER)


class LogFile:
    """Appends lines to `path`, rotating it to `path.1` ... `path.<backups>` before it would
    grow past `max_bytes` (with `backups` 0 it starts anew). `failed(reason)` is called once
    per record not written."""

    def __init__(
        self, path: Path, max_bytes: int, backups: int, failed: Callable[[str], None]
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.failed = failed
        self._fd: int | None = None
        # While writes fail: the first failure's reason and how many records were lost.
        self._failing: str | None = None
        self._lost = 0

    def append(self, lines: Sequence[str]) -> None:
        """Write each line as one record; a line that cannot be written is counted, the
        others still go."""
        for line in lines:
            try:
                self._write((line + "\n").encode("utf-8"))
            except OSError as error:
                self._failure(error)
            else:
                self._recovered()

    def close(self) -> None:
        """Close the file (the next append reopens it)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _failure(self, error: OSError) -> None:
        reason = reason_of(error)
        self.failed(reason)
        self._lost += 1
        if self._failing is None:
            self._failing = reason
            log.warning(
                "measurement log: cannot write %s (%s: %s); records are counted in "
                "reachprobe_measurement_log_write_failures_total until writing works again",
                self.path, reason, os.strerror(error.errno) if error.errno else error,
            )  # fmt: skip
        # A descriptor that failed may be on a removed directory: reopen next time.
        self.close()

    def _recovered(self) -> None:
        if self._failing is not None:
            log.warning(
                "measurement log: writing %s again; %d records were not written (%s)",
                self.path, self._lost, self._failing,
            )  # fmt: skip
            self._failing, self._lost = None, 0

    def _write(self, data: bytes) -> None:
        fd = self._current()
        size = os.fstat(fd).st_size
        if size > 0 and size + len(data) > self.max_bytes:
            self._rotate()
            fd = self._current()
            size = 0
        try:
            _write_all(fd, data)
        except OSError:
            # Cut a partial record off again, so that the file stays whole lines; should
            # that fail too, the repair at the next open moves it aside.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise

    def _current(self) -> int:
        """The open descriptor, reopened when the path no longer names its file."""
        if self._fd is not None:
            try:
                same = os.path.samestat(os.fstat(self._fd), os.stat(self.path))
            except OSError:
                same = False
            if same:
                return self._fd
            self.close()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            repair(fd, self.path)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def _rotate(self) -> None:
        self.close()
        if self.backups == 0:
            os.unlink(self.path)
            return
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))


def repair(fd: int, path: Path) -> int:
    """If the file open on `fd` does not end in a newline, move its last, torn line to
    `<path>.torn` (appended there, with a newline) and cut it off. Returns the bytes moved."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return 0
    start = _last_line_start(fd, size)
    fragment = os.pread(fd, size - start, start)
    torn = path.with_name(path.name + TORN_SUFFIX)
    aside = os.open(torn, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        _write_all(aside, fragment + b"\n")
    finally:
        os.close(aside)
    os.ftruncate(fd, start)
    log.warning(
        "measurement log: %s ended in a torn record (%d bytes, a crash or a full disk "
        "mid-write); moved it to %s",
        path, len(fragment), torn,
    )  # fmt: skip
    return len(fragment)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data` (a disk that fills up mid-record gives a short write first)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _last_line_start(fd: int, size: int) -> int:
    """The offset just after the last newline of the file (0 when it has none)."""
    end = size
    while end > 0:
        begin = max(0, end - _CHUNK)
        found = os.pread(fd, end - begin, begin).rfind(b"\n")
        if found >= 0:
            return begin + found + 1
        end = begin
    return 0
