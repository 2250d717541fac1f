"""Where a finished cycle's results go besides the agent's own /metrics."""
