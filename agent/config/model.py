"""`Config`: the whole agent config file, one field per section.

Each section's model lives in the module named for it (agent/config/<section>.py); a new
section gets its own module and one field here.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationInfo, field_validator, model_validator

from agent.config.agent_section import AgentSection
from agent.config.blockpages import BlockpageConfig, FingerprintsSection
from agent.config.measurement_log import MeasurementLogSection
from agent.config.prefixes import PrefixConfig
from agent.config.raw import RawSection
from agent.config.remote_write import RemoteWriteConfig
from agent.config.resolvers import ResolversSection, TlsSection
from agent.config.targets import TargetConfig
from agent.config.test_lists import TestListSource, listed_targets
from agent.config.types import Strict
from agent.config.vantage import VantageSection


class Config(Strict):
    """The whole agent config."""

    agent: AgentSection = AgentSection()
    resolvers: ResolversSection = ResolversSection()
    tls: TlsSection = TlsSection()
    vantage: VantageSection = VantageSection()
    measurement_log: MeasurementLogSection | None = None
    targets: list[TargetConfig] = []
    # Targets from Citizen Lab test lists, added to `targets` when the config loads.
    targets_from: list[TestListSource] = []
    blockpages: list[BlockpageConfig] = []
    fingerprints: FingerprintsSection | None = None
    prefixes: list[PrefixConfig] = []
    remote_write: RemoteWriteConfig | None = None
    raw: RawSection = RawSection()

    @field_validator("targets", "prefixes")
    @classmethod
    def _unique(
        cls, value: list[TargetConfig] | list[PrefixConfig], info: ValidationInfo
    ) -> list[TargetConfig] | list[PrefixConfig]:
        seen: set[str] = set()
        for item in value:
            if item.name in seen:
                raise ValueError(
                    f"two {info.field_name} are named {item.name!r}; names must be unique"
                )
            seen.add(item.name)
        return value

    @model_validator(mode="after")
    def _expand_test_lists(self) -> Config:
        explicit = [(t.name, t.url) for t in self.targets]
        try:
            entries = listed_targets(self.targets_from, explicit)
        except ValueError as exc:
            raise ValueError(f"targets_from: {exc}") from None
        listed = [TargetConfig.model_validate(e) for e in entries]
        return self.model_copy(update={"targets": [*self.targets, *listed]}) if listed else self

    @model_validator(mode="before")
    @classmethod
    def _push_instance(cls, data: Any) -> Any:
        # A pushing agent's `instance` label is its vantage name unless set: never an address.
        push = data.get("remote_write") if isinstance(data, dict) else None
        if isinstance(push, dict) and "instance" not in push:
            agent = data.get("agent")
            vantage = agent.get("vantage") if isinstance(agent, dict) else None
            data = {**data, "remote_write": {**push, "instance": vantage or AgentSection().vantage}}
        return data
