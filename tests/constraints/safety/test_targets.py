"""Safety targets as a request gives them (constraints/safety/targets.py): validation with messages that say what
to fix, and phrases normalised as the package docstring defines (checked against a literal reading of it)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.constraints.safety import (
    KINDS,
    MAX_PHRASE_CHARS,
    MAX_PHRASES,
    SafetyTargets,
    normalize_phrase,
    parse_safety,
)
from redraft.errors import InvalidRequest
from tests.constraints.safety.reference import ref_normalize


def test_parse_safety_accepts_and_normalises():
    assert parse_safety(None) is None
    assert parse_safety({"avoid": ["war"]}) is None
    assert parse_safety({"banned": [], "pii": False}) is None
    t = parse_safety({"banned": ["  Bad \n WORD ", "bomb", "BOMB"], "pii": True, "avoid": ["x"]})
    assert t == SafetyTargets(("bad word", "bomb"), KINDS)
    assert parse_safety({"pii": ["card", "email", "card"]}) == SafetyTargets((), ("email", "card"))


@pytest.mark.parametrize(
    "obj, words",
    [
        ({"banned": ["ok"], "colour": 1}, ["unknown safety key", "'colour'", "banned, pii, avoid"]),
        ({"banned": "bomb"}, ["safety.banned must be a list"]),
        ({"banned": ["ok", "  \n "]}, ["safety.banned[1]", "empty"]),
        ({"banned": [3]}, ["safety.banned[0] must be a string"]),
        ({"banned": ["x" * (MAX_PHRASE_CHARS + 1)]}, ["safety.banned[0]", f"at most {MAX_PHRASE_CHARS}", "shorten"]),
        ({"banned": [f"w{i}" for i in range(MAX_PHRASES + 1)]}, [f"at most {MAX_PHRASES}"]),
        ({"pii": ["ssn"]}, ["safety.pii[0]", "'ssn'", "email, phone, card"]),
        ({"pii": "email"}, ["safety.pii must be true"]),
        ("bomb", ["safety must be an object"]),
    ],
)
def test_parse_safety_rejects_with_a_message_saying_what_to_fix(obj, words):
    with pytest.raises(InvalidRequest) as exc:
        parse_safety(obj)
    assert exc.value.status_code == 422
    for w in words:
        assert w in exc.value.message


def test_phrase_length_counts_collapsed_whitespace():
    assert parse_safety({"banned": ["a" + " \n\t " * 300 + "b"]}).banned == ("a b",)


# ---------------------------------------------------------------------------------------------- added

phrases = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12).filter(lambda p: not p.isspace() and p)


@settings(max_examples=200, deadline=None)
@given(st.lists(phrases, max_size=6))
def test_banned_phrases_are_the_definition_normalised_stripped_and_deduplicated(values):
    """As the package docstring says, phrases are normalised the same way and stripped: each is its literal
    normalisation without the outer space, in the request's order, each once; normalising again changes nothing."""
    expected = tuple(dict.fromkeys(ref_normalize(p)[0].strip(" ") for p in values))
    targets = parse_safety({"banned": values})
    assert (targets.banned if targets else ()) == expected
    assert all(normalize_phrase(p) == p for p in expected)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(KINDS), max_size=6))
def test_pii_kinds_are_kept_once_in_the_package_order(kinds):
    """A list (or tuple) of kinds: each once, in ``KINDS`` order, whatever the request's order; none is no target."""
    expected = tuple(k for k in KINDS if k in kinds)
    for given_as in (list(kinds), tuple(kinds)):
        targets = parse_safety({"pii": given_as})
        assert (targets.pii if targets else ()) == expected
        assert targets is None or targets.banned == ()


def test_tuples_are_accepted_where_lists_are():
    assert parse_safety({"banned": ("Bomb",), "pii": ("phone",)}) == SafetyTargets(("bomb",), ("phone",))


def test_normalize_phrase_names_where_the_phrase_came_from():
    with pytest.raises(InvalidRequest, match="a banned phrase must be a string"):
        normalize_phrase(None)
    with pytest.raises(InvalidRequest, match=r"^a banned phrase is empty"):
        normalize_phrase(" \t\n")
    with pytest.raises(InvalidRequest, match=rf"^x\[7\] has {MAX_PHRASE_CHARS + 1} characters"):
        normalize_phrase("é" * (MAX_PHRASE_CHARS + 1), "x[7]")
    assert normalize_phrase("é" * MAX_PHRASE_CHARS) == "é" * MAX_PHRASE_CHARS  # the limit itself is allowed
