"""Every result code and verdict has a plain-language explanation (agent/explain.py)."""

from __future__ import annotations

import pytest

from agent.explain import EXPLANATIONS, VERDICT_WORDS, explain, verdict_words
from measure.verdict import Verdict
from probes.taxonomy import Code


def test_every_code_has_an_explanation() -> None:
    assert set(EXPLANATIONS) == set(Code)


@pytest.mark.parametrize("code", list(Code))
def test_an_explanation_is_one_line_naming_the_host(code: Code) -> None:
    text = explain(code, "web.example.test")
    assert text.strip()
    assert "\n" not in text
    assert "{" not in text
    if code.step is not None:
        assert "web.example.test" in text


def test_every_verdict_has_words_and_blocked_ones_say_so() -> None:
    assert set(VERDICT_WORDS) == set(Verdict)
    for verdict in Verdict:
        blocking = verdict.value.endswith("_blocking")
        assert verdict_words(verdict).startswith("blocked") == blocking


def test_sni_reset_is_explained_as_sni_filtering() -> None:
    text = explain(Code.TLS_RESET, "web.telegram.org")
    assert "web.telegram.org" in text
    assert "SNI filtering" in text
