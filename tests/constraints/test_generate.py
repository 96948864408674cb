"""``generate`` jobs (constraints/generate.py): the prompt form's one slot, the canvas built from text and slots,
every hard target checked against its slot at submission (and nothing of a refused one left in the compile cache),
on Redraft's tokenizer with a masked model and with a DiffusionGemma."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.constraints.automaton import accepts, compile_target, min_length_tokens
from redraft.constraints.budget import compile_clock
from redraft.constraints.generate import ANY_TEXT, compile_generate, prompt_slot, slot_values
from redraft.constraints.templates import SlotSpec, make_slot
from redraft.errors import ConstraintError, InvalidRequest
from redraft.families import load_model_info, load_tokenizer, special_ids
from redraft.settings import get_settings


@pytest.fixture(scope="module", params=["masked", "diffusion-gemma"])
def model(request, tiny_model, tiny_diffusion_gemma_dir):
    """(ModelInfo, tokenizer): a masked model (BOS and EOS on the canvas) and a block-diffusion one (its EOS may
    end a slot, so it is not among the special ids)."""
    if request.param == "masked":
        return tiny_model
    return (load_model_info("tiny-diffusion-gemma", tiny_diffusion_gemma_dir), load_tokenizer(tiny_diffusion_gemma_dir))


def worker_key(info) -> tuple[int, set[int]]:
    """The (eos, specials) the worker compiles a canvas's targets with (workers/processors/slot_targets.py)."""
    return (info.eos_id if info.eos_id is not None else -1), set(special_ids(info))


# ---------------------------------------------------------------------------------------------- prompt_slot


def test_the_prompt_slot_without_a_target_is_free_text():
    assert prompt_slot(None, 5, 2, 64) == SlotSpec("answer", 5, 2, None, None)


@pytest.mark.parametrize(
    "target, expected",
    [
        ({"regex": "[0-9]{4}"}, ("regex", "[0-9]{4}")),
        ({"choices": ["yes", "no"]}, ("choices", '["yes", "no"]')),
        (
            {"json_schema": {"type": "object", "properties": {"b": {}, "a": {}}}},
            ("json_schema", '{"type": "object", "properties": {"b": {}, "a": {}}}'),
        ),  # key order kept
    ],
)
def test_the_prompt_slot_carries_its_one_target(target, expected):
    assert prompt_slot(target, 8, 1, 64) == SlotSpec("answer", 8, 1, expected, None)


@pytest.mark.parametrize(
    "target",
    [
        {},
        {"regex": "a", "choices": ["a"]},
        {"regex": "a", "vocab": "digits"},
        {"grammar": "x"},
        {"choices": ["a"], "json_schema": {}},
    ],
)
def test_the_prompt_slot_takes_exactly_one_target_kind(target):
    with pytest.raises(InvalidRequest, match=re.escape('target must be exactly one of {"regex": ...}')):
        prompt_slot(target, 8, 0, 64)


@pytest.mark.parametrize(
    "args, error, words",
    [
        (({"regex": "(unclosed"}, 8, 0, 64), ConstraintError, "invalid regex"),
        (({"choices": []}, 8, 0, 64), ConstraintError, "non-empty list"),
        ((None, 65, 0, 64), InvalidRequest, "max_tokens must be a whole number from 1 to 64"),
        (({"regex": "a"}, 4, 5, 64), InvalidRequest, "min_tokens must be from 0 to max_tokens (4)"),
    ],
)
def test_the_prompt_slot_is_checked_as_a_template_slot_is(args, error, words):
    with pytest.raises(error) as exc:
        prompt_slot(*args)
    assert words in exc.value.message and "slot 'answer'" in exc.value.message


# ---------------------------------------------------------------------------------------------- compile_generate

texts = st.sampled_from(["", "Name: ", "the end.", "a\n", " ", "é€ "])
free_slots = st.tuples(st.integers(1, 4), st.sampled_from([None, "digits", "no_newline"]))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_the_canvas_holds_the_text_and_slots_in_order(model, data):
    """Free slots (no target, no min_tokens) are taken as given; fixed text renders byte for byte, empty text
    adds nothing, and each slot's value is read back under its name."""
    info, tokenizer = model
    pieces: list[str | SlotSpec] = []
    for k in range(data.draw(st.integers(1, 3))):
        pieces.append(data.draw(texts))
        size, vocab = data.draw(free_slots)
        pieces.append(SlotSpec(f"s{k}", size, 0, None, vocab))
    pieces.append(data.draw(texts))
    canvas = compile_generate(pieces, tokenizer, info)
    specs = [p for p in pieces if isinstance(p, SlotSpec)]
    assert [(s.name, s.max_tokens, s.min_tokens, s.target, s.vocab) for s in canvas.slots] == [
        (s.name, s.max_tokens, 0, None, s.vocab) for s in specs
    ]
    index = iter(range(len(specs)))
    assert canvas.pieces == [p if isinstance(p, str) else next(index) for p in pieces if p != ""]
    assert [len(canvas.slot_positions(i)) for i in range(len(specs))] == [s.max_tokens for s in specs]
    empty = [info.empty_id if s >= 0 else t for t, s in zip(canvas.token_ids, canvas.slot_of)]
    text, values = canvas.render(empty, tokenizer, info)
    assert text == "".join(p for p in pieces if isinstance(p, str)) and values == [""] * len(specs)
    assert slot_values(canvas, [f"v{i}" for i in range(len(specs))]) == {s.name: f"v{i}" for i, s in enumerate(specs)}


def test_a_min_tokens_slot_without_a_target_is_any_text(model):
    info, tokenizer = model
    pieces = ["A: ", SlotSpec("a", 4, 2), " B: ", SlotSpec("b", 4, 0), SlotSpec("c", 4, 1, ("regex", "[0-9]+"))]
    canvas = compile_generate(pieces, tokenizer, info)
    assert [s.target for s in canvas.slots] == [("regex", ANY_TEXT), None, ("regex", "[0-9]+")]
    assert [s.min_tokens for s in canvas.slots] == [2, 0, 1]


@settings(max_examples=60, deadline=None)
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=20))
def test_any_text_accepts_every_text_and_no_special_token(tiny_model, text):
    """The min_tokens-only target constrains the length alone: any text's tokens are accepted, from none on;
    what no target writes either (special tokens, EOS) it does not take."""
    info, tokenizer = tiny_model
    eos, specials = worker_key(info)
    automaton = compile_target(("regex", ANY_TEXT), tokenizer, eos, specials)
    assert min_length_tokens(automaton) == 0
    assert accepts(automaton, tokenizer.encode(text, add_special_tokens=False).ids)
    assert all(not accepts(automaton, [t]) for t in specials | {eos})


def test_each_target_is_compiled_with_the_key_the_worker_reads_back(model):
    """The worker compiles a canvas's targets again from the slots: that finds what submission compiled."""
    info, tokenizer = model
    pattern = f"[0-9]{{2}}-key-{info.family}"  # compiled by no other test
    compile_generate(["Code: ", make_slot("code", 12, regex=pattern, limit=64)], tokenizer, info)
    with compile_clock() as clock:
        automaton = compile_target(("regex", pattern), tokenizer, *worker_key(info))
    assert clock.compiles == 0 and automaton.pattern == pattern


def test_a_target_that_cannot_fit_its_slot_is_refused_and_not_kept(tiny_model):
    info, tokenizer = tiny_model
    pattern = "[0-9]{12}-refused"  # 12 digits and 8 letters: more than 3 tokens
    with pytest.raises(ConstraintError, match=r"needs \d+ tokens but the slot has 3"):
        compile_generate(["x ", make_slot("answer", 3, regex=pattern, limit=64)], tokenizer, info)
    with compile_clock() as clock:
        compile_target(("regex", pattern), tokenizer, *worker_key(info))
    assert clock.compiles == 1  # compiled again: the refused request left nothing in the cache


def test_a_target_over_the_dp_budget_is_refused_and_not_kept(tiny_model):
    info, tokenizer = tiny_model
    pattern = "[a-z]{1,30}-dp"
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("REDRAFT_MAX_DP_BYTES", str(2**20))
            get_settings.cache_clear()
            with pytest.raises(ConstraintError, match="REDRAFT_MAX_DP_BYTES"):
                compile_generate(["x ", make_slot("answer", 64, regex=pattern, limit=64)], tokenizer, info)
    finally:
        get_settings.cache_clear()
    with compile_clock() as clock:
        compile_target(("regex", pattern), tokenizer, *worker_key(info))
    assert clock.compiles == 1


def test_min_tokens_over_max_tokens_is_refused(tiny_model):
    """``make_slot`` refuses it; a slot built another way is checked here too."""
    info, tokenizer = tiny_model
    for target in (None, ("regex", "[a-z]+")):
        with pytest.raises(InvalidRequest, match="slot 'a': min_tokens exceeds max_tokens"):
            compile_generate(["x ", SlotSpec("a", 2, 3, target)], tokenizer, info)


def test_min_tokens_no_match_of_the_target_can_hold_is_refused_before_the_job_is_accepted(tiny_model):
    """``choices: ["yes"]`` is 1 to 3 tokens ("yes", "y"+"es", ...): asking for 5 was accepted, and the worker's
    slot decoder then found no path and failed the job."""
    info, tokenizer = tiny_model
    spec = make_slot("answer", 8, 5, choices=["yes"], limit=64)
    with pytest.raises(ConstraintError, match=r"min_tokens=5, but no match .* has more than 3; give min_tokens of at "
                                              r"most 3"):
        compile_generate(["Q: ", spec], tokenizer, info)
    canvas = compile_generate(["Q: ", make_slot("answer", 8, 3, choices=["yes"], limit=64)], tokenizer, info)
    assert canvas.slots[0].min_tokens == 3


def test_text_alone_is_refused_unless_no_slot_is_required(tiny_model):
    info, tokenizer = tiny_model
    with pytest.raises(InvalidRequest, match="nothing to generate"):
        compile_generate(["Just text."], tokenizer, info)
    canvas = compile_generate(["Just text."], tokenizer, info, require_slot=False)
    assert canvas.slots == [] and all(canvas.fixed)
    assert canvas.render(canvas.token_ids, tokenizer, info)[0] == "Just text."


@pytest.mark.parametrize("target", [("regex", "(unclosed"), ("grammar", "x"), ("choices", json.dumps("yes"))])
def test_a_bad_stored_target_is_a_422(tiny_model, target):
    info, tokenizer = tiny_model
    with pytest.raises(ConstraintError):
        compile_generate(["x ", SlotSpec("a", 4, 0, target)], tokenizer, info)
