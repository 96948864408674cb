"""Safety targets (constraints/safety/): request validation, normalisation, violations, and the
guard's forbidden set, which must equal a brute-force check of every token in the vocabulary."""

from __future__ import annotations

import re
import sys

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models

from redraft.constraints.canvas import CanvasBuilder
from redraft.constraints.safety import (
    KINDS,
    MAX_PHRASE_CHARS,
    MAX_PHRASES,
    PATTERNS,
    SafetyTargets,
    find_violations,
    normalize,
    parse_safety,
    text_guard,
    utf8_chars,
)
from redraft.errors import InvalidRequest
from redraft.families import _byte_level_table, token_bytes

# ---------------------------------------------------------------------------------------------- reference
# A literal, slow reading of the definitions, sharing no code with the guard (but ``utf8_chars``, which is
# checked against Python's decoder below).


def ref_normalize(text: str) -> tuple[str, list[int]]:
    out: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        low = ch.lower()
        ch = low if len(low) == 1 else ch
        if ch.isspace():
            if out and out[-1] == " ":
                continue
            ch = " "
        out.append(ch)
        origin.append(i)
    return "".join(out), origin


def ref_occurrences(norm: str, phrases: tuple[str, ...], kinds: tuple[str, ...]) -> list[tuple[int, int]]:
    """Every phrase occurrence, and for each kind the longest match from every start (any substring that
    matches lies inside one of these: for these patterns a longer match from a start extends a shorter one)."""
    out = []
    for p in phrases:
        out += [(i, i + len(p)) for i in range(len(norm)) if norm.startswith(p, i)]
    for kind in kinds:
        rx = re.compile(PATTERNS[kind])
        for a in range(len(norm)):
            m = rx.match(norm, a)
            if m:
                out.append((a, m.end()))
    return out


def ref_forbidden(tokenizer, targets: SafetyTargets, left: str, token: int, right: str,
                  left_bytes: bytes = b"", right_bytes: bytes = b"") -> bool:
    special = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    tb = b"" if token in special else token_bytes(tokenizer, token)
    data = left_bytes + tb + right_bytes
    i0, i1 = len(left_bytes), len(left_bytes) + len(tb)
    chars = utf8_chars(data)
    mid = "".join(c for c, _, _ in chars)
    inside = [n for n, (_, a, b) in enumerate(chars) if (a < i1 and b > i0) or a < i0 < b]
    s, e = (inside[0], inside[-1] + 1) if inside else ((n := sum(b <= i0 for _, _, b in chars)), n)
    norm, origin = ref_normalize(left + mid + right)
    ns = sum(o < len(left) + s for o in origin)
    ne = sum(o < len(left) + e for o in origin)
    for a, b in ref_occurrences(norm, targets.banned, targets.pii):
        if (a < ne and b > ns) if ne > ns else (a < ns < b):
            return True
    return False


def brute_force(tokenizer, targets, left, right, left_bytes=b"", right_bytes=b"") -> set[int]:
    return {t for t in range(tokenizer.get_vocab_size())
            if ref_forbidden(tokenizer, targets, left, t, right, left_bytes, right_bytes)}


# ---------------------------------------------------------------------------------------------- parse


def test_parse_safety_accepts_and_normalises():
    assert parse_safety(None) is None
    assert parse_safety({"avoid": ["war"]}) is None
    assert parse_safety({"banned": [], "pii": False}) is None
    t = parse_safety({"banned": ["  Bad \n WORD ", "bomb", "BOMB"], "pii": True, "avoid": ["x"]})
    assert t == SafetyTargets(("bad word", "bomb"), KINDS)
    assert parse_safety({"pii": ["card", "email", "card"]}) == SafetyTargets((), ("email", "card"))


@pytest.mark.parametrize("obj, words", [
    ({"banned": ["ok"], "colour": 1}, ["unknown safety key", "'colour'", "banned, pii, avoid"]),
    ({"banned": "bomb"}, ["safety.banned must be a list"]),
    ({"banned": ["ok", "  \n "]}, ["safety.banned[1]", "empty"]),
    ({"banned": [3]}, ["safety.banned[0] must be a string"]),
    ({"banned": ["x" * (MAX_PHRASE_CHARS + 1)]}, ["safety.banned[0]", f"at most {MAX_PHRASE_CHARS}", "shorten"]),
    ({"banned": [f"w{i}" for i in range(MAX_PHRASES + 1)]}, [f"at most {MAX_PHRASES}"]),
    ({"pii": ["ssn"]}, ["safety.pii[0]", "'ssn'", "email, phone, card"]),
    ({"pii": "email"}, ["safety.pii must be true"]),
    ("bomb", ["safety must be an object"]),
])
def test_parse_safety_rejects_with_a_message_saying_what_to_fix(obj, words):
    with pytest.raises(InvalidRequest) as exc:
        parse_safety(obj)
    assert exc.value.status_code == 422
    for w in words:
        assert w in exc.value.message


def test_phrase_length_counts_collapsed_whitespace():
    assert parse_safety({"banned": ["a" + " \n\t " * 300 + "b"]}).banned == ("a b",)


# ---------------------------------------------------------------------------------------------- text


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",))))
@example("ΟΔΟΣ Σ İstanbul ǅ\u2003\u00a0\n x")
def test_normalize_is_the_per_character_definition(text):
    assert normalize(text) == ref_normalize(text)


def test_regex_whitespace_is_str_isspace():
    ws = re.compile(r"\s")
    assert all(bool(ws.match(c)) == c.isspace() for c in map(chr, range(sys.maxunicode + 1)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=24) | st.lists(st.sampled_from([b"\xe2", b"\x82", b"\xac", b"\xf0\x9f", b"\x98", b"a",
                                                           b"\xed\xa0", b"\xc3", b"\xe0\x80", b"\xf4\x90"]),
                                          max_size=8).map(b"".join))
def test_utf8_chars_is_pythons_decoder_with_byte_spans(data):
    chars = utf8_chars(data)
    assert "".join(c for c, _, _ in chars) == data.decode("utf-8", "replace")
    bounds = [0] + [b for _, _, b in chars]  # contiguous byte spans covering the data
    assert [a for _, a, _ in chars] == bounds[:-1] and bounds[-1] == len(data)


def test_find_violations_maps_back_to_raw_text_and_skips_fixed_text():
    targets = SafetyTargets(("bomb", "bad word"), KINDS)
    text = "A BoMb here; bad \n\t Word; mail Jo.Doe@Example.org; call +1 (555) 123-4567; card 4111 1111 1111 1111."
    found = find_violations(text, targets)
    assert [(v.kind, v.text) for v in found] == [
        ("banned", "BoMb"), ("banned", "bad \n\t Word"), ("email", "Jo.Doe@Example"),
        ("phone", "+1 (555) 123-4567"), ("card", "4111 1111 1111 1111"), ("phone", "4111 1111 1111 1111"),
    ]
    assert all(text[v.start:v.end] == v.text for v in found)
    # Wholly inside one fixed span: the user's. Spanning a fixed span's edge: the model's.
    assert find_violations("xx bomb xx", targets, [(0, 10)]) == []
    assert [v.text for v in find_violations("xx bomb xx", targets, [(0, 5)])] == ["bomb"]
    assert find_violations("xx bomb xx", targets, [(0, 5), (5, 10)]) == []  # touching spans: no model text between
    assert [v.text for v in find_violations("xx bomb xx", targets, [(0, 5), (6, 10)])] == ["bomb"]
    assert find_violations("12345 6", SafetyTargets((), KINDS)) == []  # 6 digits: not a phone number


# ---------------------------------------------------------------------------------------------- guard

PHRASES = ["bomb", "bad word", "x", "Kill", "  HATE \n speech ", "e-mail", "c++", "über", "straße", "on the", "a.b",
           "7", "é"]
FRAGMENTS = ["the ", "b", "bo", "BO", "om", "mb", "bad", "bad ", " ", "  ", "\n", "\t", "word", "Wo", "ki", "ll",
             "hate", "speech", "e", "-", "mail", "c+", "+", "ü", "ber", "stra", "ß", "e", "on", " the", "a.", ".b",
             "me@exa", "@", "@x", "jo.doe", "555", " 12", "34", "+1 (", "555) ", "-", "4111 1111 ", "1111", "7", "é",
             "Σ", "İ", "\u2003", "\ufffd", "x", "z", ".", ",", "call me on ", "email me at "]
BYTES_LEFT = [b"", b"", b"\xe2", b"\xe2\x82", b"\xc3", b"\xf0\x9f\x98"]
BYTES_RIGHT = [b"", b"", b"\x82", b"\xac", b"\x82\xac", b"\xa9", b"\xbc"]
context = st.lists(st.sampled_from(FRAGMENTS), max_size=5).map("".join)
phrase_sets = st.lists(st.sampled_from(PHRASES) | st.text("abo m", min_size=1, max_size=4).filter(str.strip),
                       min_size=0, max_size=5)
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


@pytest.fixture(scope="module")
def odd_tokenizer() -> Tokenizer:
    """A small byte-level vocabulary with what Redraft's own lacks: tokens that end in a space or hold
    spaces inside, and multi-byte characters whole and split (a different tokenizer, its own guard)."""
    to_alphabet = {b: c for c, b in _byte_level_table().items()}
    extra = ["on ", "bad ", " word ", "  ", "\n ", "the ", " the", "bo", "mb", " bomb ", "5 ", " 5", "12 ", "x@",
             " jo ", "a b", "é ", " über", "ß", "€", " 1234 ", "-1 ", "(555) "]
    pieces = ["[PAD]", "[MASK]", "[EMPTY]"] + [to_alphabet[b] for b in range(256)]
    pieces += ["".join(to_alphabet[b] for b in e.encode()) for e in extra]
    pieces.append(to_alphabet[0xE2] + to_alphabet[0x82])  # the first two bytes of "€"
    tokenizer = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(dict.fromkeys(pieces))}, merges=[]))
    tokenizer.add_special_tokens(["[PAD]", "[MASK]", "[EMPTY]"])
    return tokenizer


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
@given(case=cases(phrase_sets | st.just(["on the", "bad word", "a b"])), left_bytes=st.sampled_from(BYTES_LEFT),
       right_bytes=st.sampled_from(BYTES_RIGHT))
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


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_render_leading_space_drop_is_invisible_once_normalised(tiny_model, data):
    """The guard reads units (fixed strings + every slot token's text); ``render`` drops a slot value's
    leading space after fixed text ending in whitespace. Normalised, the two texts are the same (split
    UTF-8 characters included: both join a slot's bytes before decoding)."""
    info, tokenizer = tiny_model
    pool = [info.empty_id] + [tokenizer.encode(s, add_special_tokens=False).ids[0]
                              for s in [" cat", " ", "\n", "  ", "dog", " the", ",", "\t", " 5"]]
    pool += [i for i in range(5, 300) if token_bytes(tokenizer, i) in (b"\xe2", b"\x82", b"\xac", b"\xc3", b"\xa9")]
    builder = CanvasBuilder(tokenizer, info)
    for _ in range(data.draw(st.integers(1, 3))):
        builder.text(data.draw(st.sampled_from(["", "the ", "a\n", "b", "c \t", " "])))
        builder.slot("s", data.draw(st.integers(1, 3)))
    builder.text(data.draw(st.sampled_from(["", " end", "x"])))
    canvas = builder.build()
    ids = [t if canvas.fixed[i] else data.draw(st.sampled_from(pool)) for i, t in enumerate(canvas.token_ids)]
    rendered, _ = canvas.render(ids, tokenizer, info)
    units = []
    for piece in canvas.pieces:
        if isinstance(piece, str):
            units.append(piece)
        else:
            units.append(b"".join(token_bytes(tokenizer, ids[p]) for p in canvas.slot_positions(piece)
                                  if ids[p] != info.empty_id).decode("utf-8", "replace"))
    assert normalize(rendered)[0] == normalize("".join(units))[0]
