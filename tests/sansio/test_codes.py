"""Tests for tether.sansio.codes: close codes and their descriptions (RFC 6455 7.4)."""

from __future__ import annotations

import pytest

from tether.sansio.codes import CLOSE_CODE_EXPLANATIONS, explain, is_valid_close_code


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (1000, CLOSE_CODE_EXPLANATIONS[1000]),
        (3000, "registered"),
        (3999, "registered"),
        (4000, "private use"),
        (4999, "private use"),
        (2999, "unknown"),
        (5000, "unknown"),
    ],
)
def test_explain(code: int, text: str) -> None:
    assert explain(code) == text


@pytest.mark.parametrize(
    ("code", "valid"), [(1000, True), (1005, False), (2999, False), (3000, True), (5000, False)]
)
def test_valid_close_codes(code: int, valid: bool) -> None:
    assert is_valid_close_code(code) is valid
