"""The text guard (constraints/safety/guard.py): its forbidden set must equal a brute-force check of every token
in the vocabulary (tests/constraints/safety/reference.py), on Redraft's tokenizer and on another one; ``allows``
agrees with it; long contexts are trimmed without changing the answer; guards are cached."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from redraft.constraints.safety import (
    CONTEXT_CHARS,
    KINDS,
    SafetyTargets,
    TextGuard,
    parse_safety,
    text_guard,
)
from redraft.errors import InvalidRequest
from tests.constraints.safety.reference import brute_force, ref_forbidden, ref_normalize, ref_occurrences

PHRASES = [
    "bomb",
    "bad word",
    "x",
    "Kill",
    "  HATE \n speech ",
    "e-mail",
    "c++",
    "über",
    "straße",
    "on the",
    "a.b",
    "7",
    "é",
]
FRAGMENTS = [
    "the ",
    "b",
    "bo",
    "BO",
    "om",
    "mb",
    "bad",
    "bad ",
    " ",
    "  ",
    "\n",
    "\t",
    "word",
    "Wo",
    "ki",
    "ll",
    "hate",
    "speech",
    "e",
    "-",
    "mail",
    "c+",
    "+",
    "ü",
    "ber",
    "stra",
    "ß",
    "e",
    "on",
    " the",
    "a.",
    ".b",
    "me@exa",
    "@",
    "@x",
    "jo.doe",
    "555",
    " 12",
    "34",
    "+1 (",
    "555) ",
    "-",
    "4111 1111 ",
    "1111",
    "7",
    "é",
    "Σ",
    "İ",
    "\u2003",
    "\ufffd",
    "x",
    "z",
    ".",
    ",",
    "call me on ",
    "email me at ",
]
BYTES_LEFT = [b"", b"", b"\xe2", b"\xe2\x82", b"\xc3", b"\xf0\x9f\x98"]
BYTES_RIGHT = [b"", b"", b"\x82", b"\xac", b"\x82\xac", b"\xa9", b"\xbc"]
context = st.lists(st.sampled_from(FRAGMENTS), max_size=5).map("".join)
phrase_sets = st.lists(
    st.sampled_from(PHRASES) | st.text("abo m", min_size=1, max_size=4).filter(str.strip), min_size=0, max_size=5
)
kind_sets = st.lists(st.sampled_from(KINDS), unique=True, max_size=3).map(tuple)


def cased(options: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(options).flatmap(lambda s: st.sampled_from([s, s.upper(), s.title()]))


@st.composite
def cases(draw, phrases=phrase_sets):
    """(phrases, kinds, left, right): contexts that often end with the beginning of one of the phrases
    (left) or start with the end of one (right), in any case and with the phrase's own whitespace."""
    phrases = draw(phrases)
    kinds = draw(kind_sets)
    prefixes = sorted({p[:k] for p in phrases for k in range(1, len(p))})
    suffixes = sorted({p[k:] for p in phrases for k in range(1, len(p))})
    left = draw(context) + (draw(st.just("") | cased(prefixes)) if prefixes else "")
    right = (draw(st.just("") | cased(suffixes)) if suffixes else "") + draw(context)
    return phrases, kinds, left, right


def _targets(phrases, kinds):
    return parse_safety({"banned": phrases, "pii": list(kinds)}) or SafetyTargets((), ("email",))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
@example(case=(["bomb"], (), "the bo", ""))
@example(case=(["bomb"], (), "", "omb"))
@example(case=(["bad"], (), "ba", "d"))
@example(case=(["Bad   WORD"], (), "xx BAD \n", " wOrd"))
@example(case=(["bad word"], (), "x bad ", ""))
@example(case=(["x"], (), "", ""))
@example(case=([], KINDS, "email me at jo", "@x.com"))
@example(case=([], KINDS, "call me on +1 (555) 12", ""))
@example(case=([], ("card",), "4111 1111 1111 ", "1 now"))
def test_forbidden_is_the_brute_force_set(tiny_model, case):
    _, tokenizer = tiny_model
    phrases, kinds, left, right = case
    targets = _targets(phrases, kinds)
    assert set(text_guard(targets, tokenizer).forbidden(left, right)) == brute_force(tokenizer, targets, left, right)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), left_bytes=st.sampled_from(BYTES_LEFT), right_bytes=st.sampled_from(BYTES_RIGHT))
@example(case=(["€5"], (), "", "5"), left_bytes=b"\xe2\x82", right_bytes=b"\xac")
@example(case=(["a€"], (), "a", ""), left_bytes=b"\xe2", right_bytes=b"\xac")
def test_forbidden_is_the_brute_force_set_when_bytes_join(tiny_model, case, left_bytes, right_bytes):
    _, tokenizer = tiny_model
    phrases, kinds, left, right = case
    targets = _targets(phrases, kinds)
    got = set(text_guard(targets, tokenizer).forbidden(left, right, left_bytes=left_bytes, right_bytes=right_bytes))
    assert got == brute_force(tokenizer, targets, left, right, left_bytes, right_bytes)


@settings(max_examples=300, deadline=None)
@given(
    case=cases(phrase_sets | st.just(["on the", "bad word", "a b"])),
    left_bytes=st.sampled_from(BYTES_LEFT),
    right_bytes=st.sampled_from(BYTES_RIGHT),
)
@example(case=(["on the"], (), "", "the"), left_bytes=b"", right_bytes=b"")
@example(case=(["on the"], (), "", " the"), left_bytes=b"", right_bytes=b"")
@example(case=(["bad word"], (), "x bad ", ""), left_bytes=b"", right_bytes=b"")
@example(case=(["bad word"], (), "x ", "word"), left_bytes=b"", right_bytes=b"")
def test_forbidden_is_the_brute_force_set_for_another_tokenizer(odd_tokenizer, case, left_bytes, right_bytes):
    phrases, kinds, left, right = case
    targets = _targets(phrases, kinds)
    got = set(text_guard(targets, odd_tokenizer).forbidden(left, right, left_bytes=left_bytes, right_bytes=right_bytes))
    assert got == brute_force(odd_tokenizer, targets, left, right, left_bytes, right_bytes)


@settings(max_examples=30, deadline=None)
@given(case=cases(), left_bytes=st.sampled_from(BYTES_LEFT), right_bytes=st.sampled_from(BYTES_RIGHT), data=st.data())
def test_allows_agrees_with_forbidden(tiny_model, case, left_bytes, right_bytes, data):
    _, tokenizer = tiny_model
    phrases, kinds, left, right = case
    guard = text_guard(_targets(phrases, kinds), tokenizer)
    forbidden = set(guard.forbidden(left, right, left_bytes=left_bytes, right_bytes=right_bytes))
    tokens = data.draw(st.lists(st.integers(0, tokenizer.get_vocab_size() - 1), max_size=40)) + sorted(forbidden)[:40]
    for t in tokens:
        assert guard.allows(left, t, right, left_bytes=left_bytes, right_bytes=right_bytes) == (t not in forbidden)


def test_explicit_tricky_cases(tiny_model):
    info, tokenizer = tiny_model
    vocab = tokenizer.get_vocab()

    def tid(text: str) -> int:
        (only,) = tokenizer.encode(text, add_special_tokens=False).ids
        return only

    guard = text_guard(parse_safety({"banned": ["bomb", "bad", "bad word", "q"]}), tokenizer)
    assert not guard.allows("the bo", vocab["mb"], "")  # across the fixed / written edge
    assert not guard.allows("the bo", tid("mber"), " x")
    assert guard.allows("the bo", tid("ld"), " x")
    assert not guard.allows("the BO", vocab["mb"], "")  # case-insensitive
    assert not guard.allows("ba", info.empty_id, "d")  # across EMPTY
    assert not guard.allows("bad ", tid(" "), "word")  # a space that collapses into another still bridges
    assert not guard.allows("bad", tid("\n"), "\tword")
    assert guard.allows("bad", tid("ly"), " word")
    assert not guard.allows("", tid("Q"), "")  # single-character phrase: static
    assert tid("Q") in guard.static_ids
    assert guard.allows("bomb", tid("s"), "")  # wholly in the left context: not t's doing
    pii = text_guard(parse_safety({"pii": True}), tokenizer)
    assert not pii.allows("email me at jo", vocab["@"], "x.com")
    assert not pii.allows("email me at jo@", tid("ex"), "")
    assert not pii.allows("call me on 555 12", tid("12"), "")
    assert pii.allows("call me on 555 ", tid("12"), "")  # five digits: not yet a phone number
    assert not pii.allows("call me on 555 ", tid("12"), "34")


def test_long_contexts_are_bounded_without_changing_the_answer(tiny_model):
    _, tokenizer = tiny_model
    filler = "lorem ipsum dolor sit amet " * 40
    targets = parse_safety({"banned": ["bomb", "b" + "o" * 150 + "m"], "pii": True})
    guard = text_guard(targets, tokenizer)
    run = "a" * 600  # one email run, longer than any bound: the guard must see its far end
    cases = [(filler + "the bo", filler), ("x@" + run, ""), ("", run + "@x"), (filler + "b" + "o" * 140, "o" * 9)]
    for left, right in cases:
        got = set(guard.forbidden(left, right))
        sample = sorted(got)[:150] + list(range(0, tokenizer.get_vocab_size(), 97))
        for t in sample:
            assert (t in got) == ref_forbidden(tokenizer, targets, left, t, right), (left[-20:], t)
    assert tokenizer.get_vocab()["b"] in guard.forbidden("x@" + run, "")
    assert tokenizer.get_vocab()["z"] in guard.forbidden("", run + "@x")


def test_guards_are_cached_per_targets_and_tokenizer(tiny_model):
    _, tokenizer = tiny_model
    a = text_guard(parse_safety({"banned": ["bomb"]}), tokenizer)
    assert a is text_guard(parse_safety({"banned": ["BOMB "]}), tokenizer)
    assert a is not text_guard(parse_safety({"banned": ["bomb"], "pii": True}), tokenizer)


# ---------------------------------------------------------------------------------------------- added


@settings(max_examples=15, deadline=None)
@given(phrases=phrase_sets, kinds=kind_sets)
@example(phrases=["q"], kinds=())
@example(phrases=[], kinds=("card", "phone"))
def test_static_ids_are_the_tokens_holding_an_occurrence_by_themselves(tiny_model, phrases, kinds):
    """Forbidden in every context: the tokens (their bytes decoding on their own, so not ragged) whose own
    normalised text holds an occurrence, by the literal reading; each is forbidden whatever surrounds it."""
    _, tokenizer = tiny_model
    targets = _targets(phrases, kinds)
    guard = text_guard(targets, tokenizer)
    table = guard.table
    ragged = table.ragged_left | table.ragged_right
    expected = {
        i
        for i, b in enumerate(table.data)
        if i not in ragged
        and ref_occurrences(ref_normalize(b.decode("utf-8", "replace"))[0], targets.banned, targets.pii)
    }
    assert set(guard.static_ids) == expected
    for t in sorted(expected)[:20]:
        assert not guard.allows("", t, "") and not guard.allows("say ", t, " now")
        assert t in guard.forbidden("x", "y")


def test_an_unknown_pii_kind_is_refused_when_the_guard_is_built(tiny_model):
    """``parse_safety`` refuses it for a request; targets made another way are checked again here."""
    _, tokenizer = tiny_model
    with pytest.raises(InvalidRequest, match="'ssn' is not a PII kind; use email, phone, card"):
        TextGuard(SafetyTargets(("bomb",), ("email", "ssn")), tokenizer)
    assert TextGuard(SafetyTargets((), ("card", "email")), tokenizer).kinds == ("email", "card")


def test_ids_outside_the_vocabulary_are_never_allowed(tiny_model):
    """A model's padding rows have no text to check."""
    _, tokenizer = tiny_model
    guard = text_guard(parse_safety({"banned": ["bomb"]}), tokenizer)
    size = tokenizer.get_vocab_size()
    assert guard.allows("a ", tokenizer.get_vocab()["x"], " b")
    for t in (-1, size, size + 7):
        assert not guard.allows("a ", t, " b") and not guard.allows("", t, "", left_bytes=b"\xe2")


def _is_break(c: str) -> bool:
    """A character no email match can hold (the word characters, ``.%+-_`` and ``@`` are what one is made of)."""
    return not all(x.isalnum() or x in "._%+-@" for x in ref_normalize(c)[0])


def _nonws(text: str) -> int:
    return sum(not c.isspace() for c in text)


long_texts = st.lists(
    st.sampled_from(["word ", "a@b", "x" * 50, " " * 40, "\n", ".", "-", "@", ", ", "é"]), max_size=60
).map("".join)


@settings(max_examples=100, deadline=None)
@given(text=long_texts, email=st.booleans())
@example(text="word " * 200, email=False)
@example(text="a@b" + "x" * 1500, email=True)
@example(text="x" * 1500 + ", " + "x" * 10 + "@" + " " * 600, email=True)
def test_trimmed_contexts_keep_all_that_can_matter(tiny_model, text, email):
    """Read outward from the token, the kept left (right) context is a suffix (prefix) of it with at least
    ``CONTEXT_CHARS`` non-whitespace characters (or all it has), no longer than twice the shortest such part
    (or 2 x ``CONTEXT_CHARS``), and, with email, the whole run of email characters at the token's edge."""
    _, tokenizer = tiny_model
    guard = text_guard(parse_safety({"banned": ["bomb"], "pii": ["email"] if email else False}), tokenizer)
    assert guard.needs_break is email
    for outward, kept in ((text[::-1], guard.trim_left(text)[::-1]), (text, guard.trim_right(text))):
        assert outward.startswith(kept)
        if len(text) <= CONTEXT_CHARS:
            assert kept == outward
        assert _nonws(kept) >= min(CONTEXT_CHARS, _nonws(text))
        need = next((n for n in range(len(outward) + 1) if _nonws(outward[:n]) >= CONTEXT_CHARS), len(outward))
        run = next((n for n, c in enumerate(outward) if _is_break(c)), len(outward))  # the email run at the edge
        if email:
            assert len(kept) >= run
        assert len(kept) <= max(2 * CONTEXT_CHARS, 2 * need, run if email else 0)
        assert guard.has_break(kept) == any(map(_is_break, kept))
