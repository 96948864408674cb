"""Infill parsing and canvas compilation (no torch)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.constraints.canvas import Canvas
from redraft.constraints.infill import Gap, compile_infill, parse_text
from redraft.errors import InvalidRequest

# At most 10 characters a literal: 5 literals of 4-byte characters and 24 gap positions stay within the test
# model's 256-token context (at 40, hypothesis found a 257-token canvas, refused before the property was checked).
literal = st.text(st.characters(blacklist_categories=("Cs",)), max_size=10).filter(lambda s: "[[" not in s)


def test_markers_split_text():
    assert parse_text("a [[gap]] b [[gap:3]]", 16, 64) == ["a ", Gap(16), " b ", Gap(3)]


@pytest.mark.parametrize("text", ["no gaps here", "", "[[gapx]]"])
def test_text_without_gap_is_rejected(text):
    with pytest.raises(InvalidRequest, match="no gap"):
        parse_text(text, 16, 64)


@pytest.mark.parametrize("text,match", [("x [[gap:ten]]", "bad gap marker"), ("x [[gap:0]]", "1 to 64"),
                                        ("x [[gap:65]]", "1 to 64")])
def test_bad_markers_are_rejected(text, match):
    with pytest.raises(InvalidRequest, match=match):
        parse_text(text, 16, 64)


@settings(max_examples=60, deadline=None)
@given(parts=st.lists(st.tuples(literal, st.integers(1, 6)), min_size=1, max_size=4), tail=literal)
def test_canvas_layout_and_fixed_text_roundtrip(tiny_model, parts, tail):
    """Free positions are exactly the gaps; fixed text renders back byte for byte whatever the model writes."""
    info, tokenizer = tiny_model
    text = "".join(f"{lit}[[gap:{n}]]" for lit, n in parts) + tail
    canvas = compile_infill(parse_text(text, 16, 64), tokenizer, info)
    assert canvas.fixed.count(False) == sum(n for _, n in parts)
    assert all(t == info.mask_id for t, f in zip(canvas.token_ids, canvas.fixed) if not f)
    # Fill every gap with empties: the output is the text with the markers removed.
    filled = [info.empty_id if not f else t for t, f in zip(canvas.token_ids, canvas.fixed)]
    out, gaps = Canvas.from_json(canvas.to_json()).render(filled, tokenizer, info)
    assert out == "".join(lit for lit, _ in parts) + tail
    assert gaps == [""] * len(parts)


def test_canvas_longer_than_context_is_rejected(tiny_model):
    info, tokenizer = tiny_model
    with pytest.raises(InvalidRequest, match="takes at most"):
        compile_infill(parse_text("a [[gap:200]] b [[gap:200]]", 16, 256), tokenizer, info)
