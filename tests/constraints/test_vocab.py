"""Vocabulary masks (constraints/vocab.py) on Redraft's real tokenizer: each named mask admits exactly the tokens
its name says, never a special token, and an unknown name is refused with the list of known ones. That a slot's
output keeps to its vocabulary while sampling is tested in tests/workers/processors/test_slot_targets.py."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.constraints.vocab import VOCABS, allowed_ids, check_vocab
from redraft.errors import InvalidRequest
from redraft.families import token_bytes
from tests.constraints.test_automaton import SPECIALS, TOKENIZER, V

# The oracle: a regex over each token's exact bytes, written apart from the predicates in VOCABS.
ORACLE = {
    "digits": re.compile(rb"[0-9]+"),
    "letters": re.compile(rb"[A-Za-z]+"),  # ASCII letters: a token of "é" (or part of it) is not one
    "no_newline": re.compile(rb"[^\n\r]*"),
    "ascii": re.compile(rb"[\x20-\x7e]*"),  # printable ASCII: no tab, no newline
}
BYTES = [token_bytes(TOKENIZER, i) for i in range(V)]
SPECIAL = frozenset(SPECIALS)


def test_every_named_vocabulary_has_an_oracle():
    assert set(VOCABS) == set(ORACLE)


@pytest.mark.parametrize("name", sorted(ORACLE))
def test_each_vocabulary_admits_exactly_the_tokens_it_names(name):
    allowed = allowed_ids(name, TOKENIZER, SPECIAL)
    expected = tuple(i for i in range(V) if i not in SPECIAL and ORACLE[name].fullmatch(BYTES[i]))
    assert allowed == expected  # in id order, each once
    assert allowed and not SPECIAL & set(allowed)


def test_the_vocabularies_hold_the_tokens_a_reader_expects():
    ids = {name: set(allowed_ids(name, TOKENIZER, SPECIAL)) for name in VOCABS}
    one = {s: TOKENIZER.token_to_id(s) for s in ["0", "7", "a", "Z", "!", "Ċ"]}  # "Ċ" is the byte-level "\n"
    assert {one["0"], one["7"]} <= ids["digits"] and not {one["a"], one["!"]} & ids["digits"]
    assert {one["a"], one["Z"]} <= ids["letters"] and one["0"] not in ids["letters"]
    assert one["Ċ"] not in ids["no_newline"] | ids["ascii"] and one["!"] in ids["no_newline"] & ids["ascii"]
    assert ids["digits"] | ids["letters"] <= ids["ascii"] <= ids["no_newline"]


@pytest.mark.parametrize("name", sorted(ORACLE))
def test_every_admitted_token_decodes_to_text_of_its_vocabulary(name):
    check = {"digits": str.isdigit, "letters": str.isalpha, "no_newline": lambda t: "\n" not in t and "\r" not in t,
             "ascii": lambda t: t.isascii() and t.isprintable()}[name]
    for i in allowed_ids(name, TOKENIZER, SPECIAL):
        text = TOKENIZER.decode([i], skip_special_tokens=True)
        assert text == "" and name in ("no_newline", "ascii") or check(text), (i, text)


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(sorted(VOCABS)), special=st.frozensets(st.integers(0, V - 1), max_size=50))
def test_the_special_ids_passed_in_are_exactly_the_ones_left_out(name, special):
    assert set(allowed_ids(name, TOKENIZER, special)) == set(allowed_ids(name, TOKENIZER, frozenset())) - special


@settings(max_examples=100, deadline=None)
@given(name=st.text(max_size=20))
def test_an_unknown_vocabulary_is_refused_listing_the_known_ones(name):
    if name in VOCABS:
        check_vocab(name)
        return
    with pytest.raises(InvalidRequest) as info:
        check_vocab(name)
    assert info.value.status_code == 422
    assert info.value.message == f"unknown vocab {name!r}; use one of: {', '.join(VOCABS)}"


def test_no_vocabulary_is_no_restriction():
    check_vocab(None)
