"""Finding banned phrases and PII in finished text (constraints/safety/text.py): normalisation, UTF-8 decoding of
token bytes, violations mapped back to the raw text, each against a literal reading of its definition."""

from __future__ import annotations

import re
import sys

from hypothesis import example, given, settings
from hypothesis import strategies as st

from redraft.constraints.canvas import CanvasBuilder
from redraft.constraints.safety import (
    KINDS,
    SafetyTargets,
    find_violations,
    normalize,
    split_pending,
    utf8_chars,
)
from redraft.families import token_bytes
from tests.constraints.safety.reference import ref_normalize


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",))))
@example("ΟΔΟΣ Σ İstanbul ǅ\u2003\u00a0\n x")
def test_normalize_is_the_per_character_definition(text):
    assert normalize(text) == ref_normalize(text)


def test_regex_whitespace_is_str_isspace():
    ws = re.compile(r"\s")
    assert all(bool(ws.match(c)) == c.isspace() for c in map(chr, range(sys.maxunicode + 1)))


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=24)
    | st.lists(
        st.sampled_from(
            [b"\xe2", b"\x82", b"\xac", b"\xf0\x9f", b"\x98", b"a", b"\xed\xa0", b"\xc3", b"\xe0\x80", b"\xf4\x90"]
        ),
        max_size=8,
    ).map(b"".join)
)
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
        ("banned", "BoMb"),
        ("banned", "bad \n\t Word"),
        ("email", "Jo.Doe@Example"),
        ("phone", "+1 (555) 123-4567"),
        ("card", "4111 1111 1111 1111"),
        ("phone", "4111 1111 1111 1111"),
    ]
    assert all(text[v.start : v.end] == v.text for v in found)
    # Wholly inside one fixed span: the user's. Spanning a fixed span's edge: the model's.
    assert find_violations("xx bomb xx", targets, [(0, 10)]) == []
    assert [v.text for v in find_violations("xx bomb xx", targets, [(0, 5)])] == ["bomb"]
    assert find_violations("xx bomb xx", targets, [(0, 5), (5, 10)]) == []  # touching spans: no model text between
    assert [v.text for v in find_violations("xx bomb xx", targets, [(0, 5), (6, 10)])] == ["bomb"]
    assert find_violations("12345 6", SafetyTargets((), KINDS)) == []  # 6 digits: not a phone number


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_render_leading_space_drop_is_invisible_once_normalised(tiny_model, data):
    """The guard reads units (fixed strings + every slot token's text); ``render`` drops a slot value's
    leading space after fixed text ending in whitespace. Normalised, the two texts are the same (split
    UTF-8 characters included: both join a slot's bytes before decoding)."""
    info, tokenizer = tiny_model
    pool = [info.empty_id] + [
        tokenizer.encode(s, add_special_tokens=False).ids[0]
        for s in [" cat", " ", "\n", "  ", "dog", " the", ",", "\t", " 5"]
    ]
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
            units.append(
                b"".join(
                    token_bytes(tokenizer, ids[p]) for p in canvas.slot_positions(piece) if ids[p] != info.empty_id
                ).decode("utf-8", "replace")
            )
    assert normalize(rendered)[0] == normalize("".join(units))[0]


# ---------------------------------------------------------------------------------------------- added

utf8_pieces = st.lists(
    st.sampled_from(
        [
            b"\xe2",
            b"\x82",
            b"\xac",
            b"\xf0\x9f",
            b"\x98",
            b"\x80",
            b"a",
            b" ",
            b"\xed\xa0",
            b"\xc3",
            b"\xa9",
            b"\xe0\x80",
            b"\xf4\x90",
            b"\xff",
        ]
    ),
    max_size=8,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=24) | utf8_pieces)
def test_split_pending_holds_back_only_an_incomplete_sequence_at_the_end(data):
    """The pending bytes are a suffix of the data shaped as an unfinished sequence (a lead byte and fewer
    continuation bytes than it announces), and all of one that some character's encoding starts with; the rest
    decodes as Python's decoder does, so text + pending is the data."""
    text, pending = split_pending(data)
    head = data[: len(data) - len(pending)]
    assert data.endswith(pending) and text == head.decode("utf-8", "replace")
    assert text + pending.decode("utf-8", "replace") == data.decode("utf-8", "replace")
    if pending:
        assert 1 <= len(pending) <= _announced(pending[0]) and all(0x80 <= b <= 0xBF for b in pending[1:])
    incomplete = [k for k in (1, 2, 3) if k <= len(data) and _is_proper_prefix(data[-k:])]
    if incomplete:
        assert pending == data[-max(incomplete) :]


def _announced(lead: int) -> int:
    """Continuation bytes a UTF-8 lead byte announces (0: not a lead byte)."""
    return 1 if 0xC2 <= lead <= 0xDF else 2 if 0xE0 <= lead <= 0xEF else 3 if 0xF0 <= lead <= 0xF4 else 0


def _is_proper_prefix(data: bytes) -> bool:
    """Whether some code point's UTF-8 encoding starts with ``data`` and is longer (decoding every candidate)."""
    need = _announced(data[0])
    if not 0 < len(data) <= need:
        return False
    rest = need + 1 - len(data)
    for tail in _tails(rest):
        try:
            (data + tail).decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False


def _tails(n: int) -> list[bytes]:
    """Every continuation-byte string of length ``n`` (n <= 3; 64**3 = 262,144 at most, built once per length)."""
    if n not in _TAILS:
        out = [b""]
        for _ in range(n):
            out = [t + bytes([c]) for t in out for c in range(0x80, 0xC0)]
        _TAILS[n] = out
    return _TAILS[n]


_TAILS: dict[int, list[bytes]] = {}


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=8), cut=st.integers(0, 40))
def test_split_pending_joins_a_character_split_across_token_bytes(text, cut):
    """How the guard uses it: the bytes of a slot cut anywhere decode, once the pending bytes are joined with the
    bytes after the cut, to the original text."""
    data = text.encode()
    cut = min(cut, len(data))
    head, pending = split_pending(data[:cut])
    assert head + (pending + data[cut:]).decode() == text
    assert len(pending) <= 3


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(st.sampled_from("ab \n\tBOMB"), max_size=30),
    spans=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)).map(sorted).map(tuple), max_size=3),
)
def test_violations_are_the_occurrences_not_wholly_inside_fixed_text(text, spans):
    """Each reported banned phrase is ``text[start:end]``, normalises to the phrase, and is one of every occurrence
    of the literal reading; those whose every character is fixed text (the spans' union) are exactly those left out."""
    targets = SafetyTargets(("bomb", "a b"), ())
    norm, origin = ref_normalize(text)
    occurrences = sorted(
        {
            (origin[i], origin[i + len(p) - 1] + 1)
            for p in targets.banned
            for i in range(len(norm))
            if norm.startswith(p, i)
        }
    )
    fixed = {k for a, b in spans for k in range(a, b)}  # touching or overlapping spans: one run of user text
    expected = [(s, e) for s, e in occurrences if not fixed.issuperset(range(s, e))]
    found = find_violations(text, targets, spans)
    assert sorted((v.start, v.end) for v in found) == expected
    assert all(v.kind == "banned" and v.text == text[v.start : v.end] for v in found)
    assert all(ref_normalize(v.text)[0] in targets.banned for v in found)
