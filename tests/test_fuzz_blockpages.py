"""Fuzzing the HTTP fingerprinting: any response (status line, headers, body) gets a
fingerprint or None, never an exception; the config's own fingerprints, fuzzed too, either
load or are refused by the config loader."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import BlockpageConfig, ConfigError, parse_config
from agent.planner import fingerprints
from probes.blockpages import BlockpageMatcher, Fingerprint

SHIPPED = BlockpageMatcher(fingerprints())
header_names = st.one_of(st.sampled_from(["location", "server", "content-type"]), st.text())
responses = st.tuples(
    st.text(max_size=80),
    st.dictionaries(header_names, st.text(max_size=80), max_size=8),
    st.one_of(
        st.text(max_size=2000),
        st.sampled_from([fp.pattern for fp in SHIPPED.fingerprints]),
    ),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(responses)
def test_any_response_gets_a_fingerprint_or_none(response: tuple[str, dict[str, str], str]) -> None:
    found = SHIPPED.match(*response)
    assert found is None or isinstance(found, Fingerprint)


entries = st.fixed_dictionaries(
    {"name": st.text(max_size=20), "pattern": st.text(max_size=30)},
    optional={"location": st.one_of(st.sampled_from(["any", "body", "header:x"]), st.text())},
)


@settings(max_examples=300, deadline=None)
@given(st.lists(entries, max_size=4), responses)
def test_configured_fingerprints_load_or_are_refused(
    blockpages: list[dict[str, str]], response: tuple[str, dict[str, str], str]
) -> None:
    try:
        config = parse_config({"blockpages": blockpages}, "fuzz.yaml")
    except ConfigError:
        return  # refused with a message: fine
    extra: list[BlockpageConfig] = config.blockpages
    found = BlockpageMatcher(fingerprints(extra)).match(*response)
    assert found is None or isinstance(found, Fingerprint)
