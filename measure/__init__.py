"""The measurement layer: immutable plans in, typed reports out.

config -> plan (agent/planner.py) -> steps (probes/) -> follow-ups -> report
-> sinks (agent/sinks/).
This package never imports the agent (config models, sinks, CLI); see docs/architecture.md.
"""
