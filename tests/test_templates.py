"""Template parsing and matching: the text a template could have rendered."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynasync.templates import Template


def _regex(t: Template) -> re.Pattern[str]:
    """The obvious (backtracking) reference for matches()."""
    return re.compile("".join(re.escape(lit) + ("(.*)" if f else "") for lit, f in t.parts), re.S)


@pytest.mark.parametrize(
    ("template", "text", "expected"),
    [
        ("USER#{id}", "USER#7", True),
        ("USER#{id}", "USER#", True),  # an empty value renders too
        ("USER#{id}", "ORDER#7", False),
        ("{x}#{y}", "a#b#c", True),
        ("{x}#{y}#A", "#", False),
        ("{x}#{y}#A", "##A", True),
        ("A{x}A", "A", False),  # the two literals may not overlap
        ("A{x}A", "AA", True),
        ("plain", "plain", True),
        ("plain", "plainx", False),
    ],
)
def test_matches_examples(template: str, text: str, expected: bool) -> None:
    assert Template.parse("PK", template).matches(text) is expected


def test_matches_is_linear_on_a_near_miss() -> None:
    # A regex with five .* groups backtracks for hours on this text (the old
    # matcher hung here); a scan finds each literal once.
    t = Template.parse("PK", "{a}#{b}#{c}#{d}#{e}#A")
    assert t.matches("#" * 20000 + "B") is False
    assert t.matches("#" * 20000 + "A") is True


@settings(max_examples=300, deadline=None)
@given(
    literals=st.lists(st.text("#ab", max_size=3), min_size=1, max_size=4),
    trailing=st.text("#ab", max_size=3),
    text=st.text("#ab", max_size=12),
)
def test_matches_agrees_with_a_regex(literals: list[str], trailing: str, text: str) -> None:
    t = Template.parse("PK", "".join(f"{lit}{{f{i}}}" for i, lit in enumerate(literals)) + trailing)
    assert t.matches(text) is bool(_regex(t).fullmatch(text))


@pytest.mark.parametrize("template", ["{}", "{a:>3}", "{a!r}", "{a}{a}", "{a"])
def test_parse_refuses(template: str) -> None:
    with pytest.raises(ValueError, match="template"):
        Template.parse("PK", template)
