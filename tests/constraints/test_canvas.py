"""The canvas (constraints/canvas.py), on Redraft's real tokenizer, without a model: what the builder lays out,
what ``render`` rebuilds from it, the context-length refusal and the JSON round trip."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.constraints.canvas import Canvas, CanvasBuilder
from redraft.errors import InvalidRequest
from tests.constraints.test_automaton import INFO, NEVER_REAL, TOKENIZER, V

WIDE = dataclasses.replace(INFO, context_length=100_000)  # the layout tests are not about the length limit
ORDINARY = [i for i in range(V) if i not in NEVER_REAL]

# Fixed text: any Unicode (no surrogates), with the spaces, newlines and marker-like strings that matter here.
fixed_text = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12),
    st.sampled_from(["The capital is ", "a\n", " ", "  ", "über ", "é", "[MASK]", "[[gap]]", "x@", "\r\n"]),
)
slot_spec = st.tuples(st.integers(1, 6), st.sampled_from([None, "digits", "letters"]),
                      st.sampled_from([None, ("regex", "[0-9]+"), ("choices", '["a", "b"]')]))
layouts = st.lists(st.one_of(fixed_text, slot_spec), min_size=1, max_size=8)


def build(layout, info=WIDE, require_slot: bool = False) -> Canvas:
    builder = CanvasBuilder(TOKENIZER, info)
    for k, item in enumerate(layout):
        if isinstance(item, str):
            builder.text(item)
        else:
            max_tokens, vocab, target = item
            builder.slot(f"s{k}", max_tokens, min(1, max_tokens), target, vocab)
    return builder.build(require_slot=require_slot)


@settings(max_examples=150, deadline=None)
@given(layout=layouts)
def test_slot_positions_hold_max_tokens_masks_and_everything_else_is_fixed(layout):
    canvas = build(layout)
    assert len(canvas.token_ids) == len(canvas.fixed) == len(canvas.slot_of) == canvas.length
    slots = [item for item in layout if not isinstance(item, str)]
    assert [s.max_tokens for s in canvas.slots] == [s[0] for s in slots]
    covered = []
    for index, slot in enumerate(canvas.slots):
        positions = canvas.slot_positions(index)
        assert len(positions) == slot.max_tokens
        assert positions == list(range(positions[0], positions[0] + slot.max_tokens))  # one contiguous run
        assert all(canvas.token_ids[p] == INFO.mask_id and not canvas.fixed[p] for p in positions)
        covered += positions
    assert covered == sorted(covered)  # slots lie on the canvas in the order they were added
    for p in range(canvas.length):
        assert canvas.fixed[p] == (canvas.slot_of[p] == -1) == (p not in covered)
    assert canvas.token_ids[0] == INFO.bos_id and canvas.fixed[0]
    assert canvas.token_ids[-1] == INFO.eos_id and canvas.fixed[-1]  # a masked LM's canvas ends with EOS
    # The pieces are the non-empty fixed strings and the slot indexes, in order.
    assert canvas.pieces == list(_pieces(layout))


def _pieces(layout):
    index = 0
    for item in layout:
        if isinstance(item, str):
            if item:
                yield item
        else:
            yield index
            index += 1


@settings(max_examples=150, deadline=None)
@given(layout=layouts, data=st.data())
def test_fixed_text_is_byte_identical_after_render(layout, data):
    """Whatever the slots hold, every fixed piece comes back exactly, at the span the layout gives it, and the
    text is the pieces and slot values joined in order."""
    canvas = build(layout)
    state = [t if canvas.fixed[p] else data.draw(st.sampled_from([INFO.empty_id, *ORDINARY[:400], *ORDINARY[-50:]]))
             for p, t in enumerate(canvas.token_ids)]
    text, values, layout_info = canvas.render_layout(state, [0.5] * len(state), TOKENIZER, INFO)
    assert (text, values) == canvas.render(state, TOKENIZER, INFO)
    assert len(values) == len(canvas.slots)
    assert text == "".join(p if isinstance(p, str) else values[p] for p in canvas.pieces)
    for piece, (start, end) in zip(canvas.pieces, layout_info["pieces"]):
        if isinstance(piece, str):
            assert text[start:end] == piece
    assert [(s["start"], s["end"]) for s in layout_info["slots"]] == \
           [tuple(span) for piece, span in zip(canvas.pieces, layout_info["pieces"]) if isinstance(piece, int)]
    for start, end, confidence, position in layout_info["written"]:
        assert 0 <= start < end <= len(text) and confidence == 0.5 and not canvas.fixed[position]


@settings(max_examples=100, deadline=None)
@given(layout=layouts)
def test_all_empty_slots_render_the_fixed_text_alone(layout):
    canvas = build(layout)
    state = [t if canvas.fixed[p] else INFO.empty_id for p, t in enumerate(canvas.token_ids)]
    text, values = canvas.render(state, TOKENIZER, INFO)
    assert text == "".join(p for p in canvas.pieces if isinstance(p, str))
    assert values == [""] * len(canvas.slots)


@pytest.mark.parametrize("before,word,expected", [
    ("The capital is ", " Paris", "The capital is Paris"),  # the word's space is dropped after a space
    ("The capital is", " Paris", "The capital is Paris"),  # kept where the text does not end in one
    ("Line\n", " Paris", "Line\nParis"),  # any whitespace counts
    ("x ", "Paris", "x Paris"),  # nothing to drop
])
def test_a_slot_after_a_space_drops_the_word_s_leading_space_only(before, word, expected):
    builder = CanvasBuilder(TOKENIZER, INFO)
    builder.text(before)
    builder.slot("city", 3)
    canvas = builder.build()
    ids = TOKENIZER.encode(word, add_special_tokens=False).ids
    positions = canvas.slot_positions(0)
    state = list(canvas.token_ids)
    for p, t in zip(positions, ids + [INFO.empty_id] * (len(positions) - len(ids))):
        state[p] = t
    text, values = canvas.render(state, TOKENIZER, INFO)
    assert text == expected and values == [expected[len(before):]]
    space = TOKENIZER.encode(" ", add_special_tokens=False).ids
    if before.endswith(" "):  # the model sees "is [MASK]", as in training: the trailing space is off the canvas
        assert canvas.token_ids[positions[0] - 1] != space[0]


def test_a_canvas_over_the_context_length_is_refused_with_its_code():
    small = dataclasses.replace(INFO, context_length=12)
    fits = build([(10, None, None)], small)  # BOS + 10 + EOS
    assert fits.length == 12
    with pytest.raises(InvalidRequest) as info:
        build([(11, None, None)], small)
    exc = info.value
    assert exc.code == "context_too_long" and exc.status_code == 422
    assert "13 tokens" in exc.message and "at most 12" in exc.message and "shorten the text" in exc.message


@settings(max_examples=50, deadline=None)
@given(layout=layouts, limit=st.integers(2, 60))
def test_the_length_refusal_happens_exactly_when_the_canvas_is_longer_than_the_model_takes(layout, limit):
    length = build(layout).length
    small = dataclasses.replace(INFO, context_length=limit)
    if length <= limit:
        assert build(layout, small).length == length
    else:
        with pytest.raises(InvalidRequest) as info:
            build(layout, small)
        assert info.value.code == "context_too_long" and f"{length} tokens" in info.value.message


def test_a_canvas_without_a_slot_is_refused_unless_asked_not_to():
    builder = CanvasBuilder(TOKENIZER, INFO)
    builder.text("only fixed text")
    with pytest.raises(InvalidRequest, match="nothing to generate"):
        builder.build()
    builder = CanvasBuilder(TOKENIZER, INFO)
    builder.text("only fixed text")
    assert builder.build(require_slot=False).slots == []


@settings(max_examples=100, deadline=None)
@given(layout=layouts)
def test_to_json_and_from_json_round_trip_through_real_json(layout):
    canvas = build(layout)
    again = Canvas.from_json(json.loads(json.dumps(canvas.to_json())))
    assert again == canvas
    assert all(isinstance(s.target, tuple) or s.target is None for s in again.slots)
