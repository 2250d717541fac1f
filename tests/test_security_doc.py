"""docs/security.md keeps up with the config: every configurable network bound it lists is a
real config key, shown in the README's config reference."""

from __future__ import annotations

import re
from pathlib import Path

from agent.config import Config

ROOT = Path(__file__).resolve().parent.parent


def test_every_configurable_bound_is_a_config_key_in_the_readme() -> None:
    security = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = security.split("## Every read from the network is bounded", 1)[1]
    keys = set(re.findall(r"`(agent|resolvers)\.([a-z_]+)`", table))
    assert {("agent", "timeout"), ("agent", "max_body_bytes"), ("agent", "max_addresses")} <= keys
    for section, key in sorted(keys):
        assert key in Config.model_fields[section].annotation.model_fields, f"{section}.{key}"
        assert re.search(rf"^\s+{key}:", readme, re.MULTILINE), f"{key} not in the README"
