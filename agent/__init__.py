"""The reachprobe agent: config, scheduler, metrics, HTTP server and CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("reachprobe")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+src"
