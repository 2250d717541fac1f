"""The agent's configuration: pydantic models over a YAML file, unknown keys rejected.

Where things are:
- loader.py: reading YAML, ConfigError and its messages, `load_config` / `parse_config`;
- types.py: the strict base model and the value types the sections share;
- model.py: `Config`, the whole file, one field per section;
- one module per section: agent_section.py (`agent`), resolvers.py (`resolvers`, `tls`),
  vantage.py, targets.py, test_lists.py, blockpages.py, prefixes.py, remote_write.py,
  measurement_log.py, raw.py;
- web.py: the exporter-toolkit web config (`agent.web_config`) and the listen policy.

The names below are what the rest of the agent imports from `agent.config`.
"""

from agent.config.agent_section import DEFAULT_LISTEN, DEFAULT_PORT, AgentSection
from agent.config.blockpages import BlockpageConfig
from agent.config.loader import DEFAULT_CONFIG_NAME, ConfigError, load_config, parse_config
from agent.config.measurement_log import MeasurementLogSection
from agent.config.model import Config
from agent.config.prefixes import PrefixConfig
from agent.config.raw import RawSection
from agent.config.remote_write import (
    BasicAuthSection,
    RemoteWriteConfig,
    RemoteWriteQueueSection,
    RemoteWriteTlsSection,
)
from agent.config.resolvers import ResolverConfig, ResolversSection, TlsSection
from agent.config.targets import ExchangeConfig, TargetConfig, VolumeOptions
from agent.config.types import split_host_port
from agent.config.vantage import VantageSection

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_LISTEN",
    "DEFAULT_PORT",
    "AgentSection",
    "BasicAuthSection",
    "BlockpageConfig",
    "Config",
    "ConfigError",
    "ExchangeConfig",
    "MeasurementLogSection",
    "PrefixConfig",
    "RawSection",
    "RemoteWriteConfig",
    "RemoteWriteQueueSection",
    "RemoteWriteTlsSection",
    "ResolverConfig",
    "ResolversSection",
    "TargetConfig",
    "TlsSection",
    "VantageSection",
    "VolumeOptions",
    "load_config",
    "parse_config",
    "split_host_port",
]
