"""Network namespaces, veth links, addresses and routes, and sockets opened inside a namespace.

Everything the lab creates lives inside namespaces whose names start with the lab prefix: veth
pairs are created directly inside their namespaces and no link, address or route is ever added
to the host's own namespace. So the lab cannot reach the host's network, and deleting the
namespaces removes every link with them.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import http.client
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

NETNS_DIR = Path("/run/netns")
LOCK_FILE = Path("/run/reachprobe-lab.lock")
CLONE_NEWNET = 0x40000000
REQUIRED_TOOLS = ("ip", "nft", "tc", "conntrack")

_libc = ctypes.CDLL(None, use_errno=True)


class CommandError(RuntimeError):
    """A lab command (`ip`, `nft`, `tc`) failed; the message carries its stderr."""


def missing_requirements() -> str | None:
    """Why the lab cannot run here (not root, a tool missing), or None when it can."""
    if os.geteuid() != 0:
        return "the censorship lab needs root (network namespaces, nftables, tc)"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"the censorship lab needs {', '.join(missing)} (see scripts/apt-packages.txt)"
    return None


def run(argv: Sequence[str], *, ns: str | None = None, input: str | None = None) -> str:
    """Run a short command (in namespace `ns` if given) and return its stdout.

    Raises CommandError with the command's stderr when it fails.
    """
    full = [*ns_prefix(ns), *argv]
    proc = subprocess.run(full, input=input, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise CommandError(f"{' '.join(full)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def ns_prefix(ns: str | None) -> list[str]:
    """The argv prefix that runs a command inside namespace `ns` (empty for the host)."""
    return ["ip", "netns", "exec", ns] if ns else []


def namespaces(prefix: str) -> list[str]:
    """Existing namespaces whose name starts with `prefix`."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def create(name: str) -> None:
    """Create namespace `name` with its loopback up."""
    run(["ip", "netns", "add", name])
    run(["ip", "link", "set", "dev", "lo", "up"], ns=name)


def pids(name: str) -> list[int]:
    """The processes living in namespace `name`."""
    try:
        out = run(["ip", "netns", "pids", name])
    except CommandError:
        return []
    return [int(p) for p in out.split()]


def destroy(name: str, *, grace: float = 2.0) -> None:
    """Kill every process left in namespace `name`, then delete it (absent is fine).

    Processes in a lab namespace are the lab's own (servers, agents, Prometheus), so ending
    them is safe; they get SIGTERM, then SIGKILL after `grace` seconds.
    """
    if not (NETNS_DIR / name).exists():
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = pids(name)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = [p for p in left if _alive(p)]
        if not left:
            break
    with contextlib.suppress(CommandError):
        run(["ip", "netns", "delete", name])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours still answers signal 0; reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    return True


def veth(ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
    """A veth pair between two namespaces, created inside them, both ends up."""
    command = f"ip link add name {name_a} netns {ns_a} type veth peer name {name_b} netns {ns_b}"
    run(command.split())
    run(["ip", "link", "set", "dev", name_a, "up"], ns=ns_a)
    run(["ip", "link", "set", "dev", name_b, "up"], ns=ns_b)


def add_address(ns: str, device: str, cidr: str) -> None:
    """Add address `cidr` (e.g. `198.18.0.53/32`) to `device` in `ns`.

    On `lo`, a prefix shorter than /32 makes every address in it local: one line hosts a whole
    "cloud" prefix, which a server bound to the wildcard address then answers on (IPv4 only).
    An IPv6 address skips duplicate address detection (`nodad`): usable at once, never
    "tentative" while a test connects.
    """
    nodad = ["nodad"] if ":" in cidr else []
    run(["ip", "addr", "add", cidr, "dev", device, *nodad], ns=ns)


def add_route(ns: str, prefix: str, via: str) -> None:
    """Route `prefix` via gateway `via` in `ns`."""
    run(["ip", "route", "add", prefix, "via", via], ns=ns)


def sysctl(ns: str, key: str, value: str) -> None:
    """Set a network sysctl inside `ns` (they are per namespace).

    Written through /proc/sys from a shell in the namespace, so that procps is not needed.
    """
    path = "/proc/sys/" + key.replace(".", "/")
    run(["sh", "-c", f"echo {value} > {path}"], ns=ns)


def _in_namespace(name: str, fn, *args):
    """Run `fn(*args)` on a helper thread that has joined namespace `name`; return its result.

    setns(CLONE_NEWNET) changes only the calling thread's namespace, and a socket keeps the
    namespace it was created in, so the sockets made here work from any thread afterwards.
    """
    box: dict[str, object] = {}

    def target() -> None:
        try:
            fd = os.open(NETNS_DIR / name, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({name}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn(*args)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]


def connect(ns: str, address: tuple[str, int], timeout: float = 2.0) -> socket.socket:
    """A TCP connection to `address` made from inside namespace `ns`."""
    return _in_namespace(ns, socket.create_connection, address, timeout)


def udp_socket(ns: str) -> socket.socket:
    """An unbound UDP socket living in namespace `ns`."""
    return _in_namespace(ns, socket.socket, socket.AF_INET, socket.SOCK_DGRAM)


def wait_tcp(ns: str, address: tuple[str, int], deadline: float) -> None:
    """Poll until something accepts TCP connections on `address` in `ns`, or raise.

    `deadline` is a time.monotonic() value.
    """
    last: OSError | None = None
    while time.monotonic() < deadline:
        try:
            connect(ns, address, timeout=0.5).close()
            return
        except OSError as exc:
            last = exc
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {address[0]}:{address[1]} in {ns}: {last}")


@dataclass
class _ProcessLock:
    """The flock this process holds, shared by its LabLock objects."""

    fd: int | None = None
    holders: int = 0


_PROCESS_LOCK = _ProcessLock()


class LabLock:
    """An exclusive lock (flock on LOCK_FILE), so that two lab runs never build at once.

    Within one process it is shared: the main lab (`rpl-*`) and the raw lab (`rpr-*`) use
    different namespaces and may be up together in one test session, while another process
    (another run, another worktree) waits for both to be done.

    The kernel drops a lock whose holder died, so whatever a crashed run left behind is stale
    by the time the next holder gets the lock and may be cleaned up. (Not a lock on /run/netns
    itself: `ip netns add` takes that one.)
    """

    def __init__(self) -> None:
        self._held = False

    def acquire(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the lock."""
        if self._held:
            return
        if _PROCESS_LOCK.holders == 0:
            fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        os.close(fd)
                        raise TimeoutError(f"another lab run holds {LOCK_FILE}") from None
                    time.sleep(0.5)
            _PROCESS_LOCK.fd = fd
        _PROCESS_LOCK.holders += 1
        self._held = True

    def release(self) -> None:
        """Release this holder; the last one in the process drops the flock."""
        if not self._held:
            return
        self._held = False
        _PROCESS_LOCK.holders -= 1
        if _PROCESS_LOCK.holders == 0 and _PROCESS_LOCK.fd is not None:
            os.close(_PROCESS_LOCK.fd)
            _PROCESS_LOCK.fd = None


class _NsHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket is made inside a namespace."""

    def __init__(self, ns: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._ns = ns

    def connect(self) -> None:
        self.sock = connect(self._ns, (self.host, self.port), self.timeout)


def http_get(
    ns: str, address: tuple[str, int], path: str, timeout: float = 5.0
) -> tuple[int, bytes]:
    """GET http://address/path from inside namespace `ns`; return (status, body)."""
    conn = _NsHTTPConnection(ns, address[0], address[1], timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
