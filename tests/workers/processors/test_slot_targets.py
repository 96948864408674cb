"""Hard targets through the sampler: every output fullmatches its regex, parses and validates against
its JSON schema, or is one of its choices; template literals stay byte for byte."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.constraints.generate import compile_generate, prompt_slot, slot_values
from redraft.constraints.templates import render_template
from redraft.errors import ConstraintError, InvalidRequest
from redraft.families import special_ids
from redraft.workers.processors.forbid_tokens import ForbidTokens
from redraft.workers.processors.slot_targets import SlotTargets, constrained_slots
from redraft.workers.processors.slot_vocabulary import SlotVocabulary
from redraft.workers.sampler import SamplerConfig, denoise

REGEXES = [
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}",  # date
    r"[a-z]{1,8}@[a-z]{1,8}\.(com|org)",  # email
    r"-?[0-9]{1,6}",  # integer
    r"[A-Za-z_][A-Za-z0-9_]{0,10}",  # identifier
    r"(yes|no|maybe)",  # alternation
    r"(ab){1,3}c?",  # bounded repeat
    r"[A-Z][a-z]+ [0-9]{1,3}",  # street-ish
]
WORD = st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=6)


@st.composite
def realistic_regexes(draw):
    """Regexes from the families people constrain to: dates, emails, numbers, identifiers,
    alternations and bounded repeats, with drawn bounds, separators and words."""
    kind = draw(st.sampled_from(["date", "email", "number", "identifier", "alternation", "repeat"]))
    if kind == "date":
        sep = draw(st.sampled_from(["-", "/", "."]))
        return f"[0-9]{{4}}{re.escape(sep)}[0-9]{{2}}{re.escape(sep)}[0-9]{{2}}"
    if kind == "email":
        a, b = draw(st.integers(1, 6)), draw(st.integers(1, 6))
        tlds = draw(st.lists(st.sampled_from(["com", "org", "net", "io"]), min_size=1, max_size=3, unique=True))
        return f"[a-z]{{1,{a}}}@[a-z]{{1,{b}}}\\.({'|'.join(tlds)})"
    if kind == "number":
        n = draw(st.integers(1, 6))
        frac = draw(st.booleans())
        return f"-?[0-9]{{1,{n}}}" + ("(\\.[0-9]{1,2})?" if frac else "")
    if kind == "identifier":
        return f"[A-Za-z_][A-Za-z0-9_]{{0,{draw(st.integers(0, 8))}}}"
    if kind == "alternation":
        return "(" + "|".join(draw(st.lists(WORD, min_size=1, max_size=4, unique=True))) + ")"
    lo = draw(st.integers(0, 2))
    return f"({draw(WORD)}){{{lo},{lo + draw(st.integers(0, 2))}}}{draw(WORD)}?"


SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 6},
                                           "age": {"type": "integer"}}, "required": ["name", "age"]}


def generate(adapter, tokenizer, pieces, seed, steps=6, temperature=1.0):
    info = adapter.info
    canvas = compile_generate(pieces, tokenizer, info)
    special = special_ids(info)
    procs = [ForbidTokens(special, info.vocab_size)]
    targets = constrained_slots(canvas, tokenizer, info, special)
    if targets:
        procs.append(SlotTargets({0: targets}, info.empty_id))
    out = denoise(adapter.logits, torch.tensor([canvas.token_ids]), torch.tensor([canvas.fixed]), info.mask_id,
                  SamplerConfig(steps=steps, temperature=temperature), [torch.Generator().manual_seed(seed)], procs)
    text, values = canvas.render(out.tokens[0].tolist(), tokenizer, info)
    return text, slot_values(canvas, values)


@settings(max_examples=30, deadline=None)
@given(regex=st.one_of(st.sampled_from(REGEXES), realistic_regexes()), seed=st.integers(0, 2**31),
       steps=st.integers(1, 12),
       temperature=st.sampled_from([0.0, 1.0, 2.0]))
def test_regex_answers_always_fullmatch(any_adapter, tiny_model, regex, seed, steps, temperature):
    _, tokenizer = tiny_model
    pieces = ["Q: give one.\nA: ", prompt_slot({"regex": regex}, 24, 0, 64)]
    text, slots = generate(any_adapter, tokenizer, pieces, seed, steps, temperature)
    assert re.fullmatch(regex, slots["answer"]), slots
    assert text == "Q: give one.\nA: " + slots["answer"]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_json_schema_answers_parse_and_validate(any_adapter, tiny_model, seed):
    _, tokenizer = tiny_model
    _, slots = generate(any_adapter, tokenizer, ["Person: ", prompt_slot({"json_schema": SCHEMA}, 40, 0, 64)], seed)
    jsonschema.validate(json.loads(slots["answer"]), SCHEMA)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), choices=st.lists(st.sampled_from(["red", "green", "blue", "dark red", "none"]),
                                                     min_size=1, max_size=4, unique=True))
def test_choices_answers_are_one_of_the_choices(any_adapter, tiny_model, seed, choices):
    _, tokenizer = tiny_model
    _, slots = generate(any_adapter, tokenizer, ["Colour: ", prompt_slot({"choices": choices}, 8, 0, 64)], seed)
    assert slots["answer"] in choices


literal = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="{}%#\x00"), max_size=20)


@settings(max_examples=15, deadline=None)
@given(name=literal, items=st.lists(literal, min_size=1, max_size=3), seed=st.integers(0, 2**31))
def test_template_literals_are_preserved_byte_for_byte(any_adapter, tiny_model, name, items, seed):
    _, tokenizer = tiny_model
    source = ('Dear {{ name }},\n{% for item in items %}* {{ item }}: {{ slot("qty" ~ loop.index, max_tokens=4, '
              'regex="[0-9]{1,3}") }} units\n{% endfor %}Regards, {{ slot("sender", max_tokens=5) }}')
    pieces = render_template(source, {"name": name, "items": items}, 8, 64)
    text, slots = generate(any_adapter, tokenizer, pieces, seed)
    expected = f"Dear {name},\n" + "".join(f"* {it}: {slots[f'qty{i}']} units\n" for i, it in enumerate(items, 1))
    assert text == expected + "Regards, " + slots["sender"]
    assert all(re.fullmatch("[0-9]{1,3}", slots[f"qty{i}"]) for i in range(1, len(items) + 1))


@pytest.mark.parametrize("pieces_fn,error,match", [
    (lambda: ["x", prompt_slot({"regex": "[0-9]{20}"}, 3, 0, 64)], ConstraintError, "needs"),
    (lambda: ["x", prompt_slot({"regex": "(unclosed"}, 3, 0, 64)], ConstraintError, "invalid regex"),
    (lambda: ["x", prompt_slot({"choices": ["a much longer answer than fits here"]}, 2, 0, 64)], ConstraintError,
     "needs"),
    (lambda: render_template("{{ slot('a') }}{{ slot('a') }}", {}, 8, 64), InvalidRequest, "used twice"),
    (lambda: render_template("{{ ''.__class__ }}{{ slot('a') }}", {}, 8, 64), InvalidRequest, "sandbox"),
    (lambda: render_template("{{ who }}{{ slot('a') }}", {}, 8, 64), InvalidRequest, "undefined"),
    (lambda: render_template("{% if %}", {}, 8, 64), InvalidRequest, "syntax error"),
])
def test_unsatisfiable_or_invalid_specs_fail_at_compile_time(tiny_model, pieces_fn, error, match):
    info, tokenizer = tiny_model
    with pytest.raises(error, match=match):
        compile_generate(pieces_fn(), tokenizer, info)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31), vocab=st.sampled_from(["digits", "letters", "no_newline"]))
def test_vocabulary_slots_use_only_their_vocabulary(tiny_adapter, tiny_model, seed, vocab):
    info, tokenizer = tiny_model
    pieces = render_template('Code: {{ slot("c", max_tokens=6, vocab="%s") }}!' % vocab, {}, 8, 64)
    canvas = compile_generate(pieces, tokenizer, info)
    special = special_ids(info)
    procs = [ForbidTokens(special, info.vocab_size), SlotVocabulary.for_canvas(canvas, tokenizer, info, special)]
    out = denoise(tiny_adapter.logits, torch.tensor([canvas.token_ids]), torch.tensor([canvas.fixed]), info.mask_id,
                  SamplerConfig(steps=3, temperature=2.0), [torch.Generator().manual_seed(seed)], procs)
    _, values = canvas.render(out.tokens[0].tolist(), tokenizer, info)
    check = {"digits": str.isdigit, "letters": str.isalpha, "no_newline": lambda v: "\n" not in v and "\r" not in v}
    assert values[0] == "" or check[vocab](values[0])


def test_unknown_vocab_is_rejected():
    with pytest.raises(InvalidRequest, match="unknown vocab"):
        render_template('{{ slot("c", vocab="emoji") }}', {}, 8, 64)
