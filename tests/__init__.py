"""reachprobe's test suite (a package so that `python -m tests.servers` works from the tree)."""
