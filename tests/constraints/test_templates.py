"""Templates (constraints/templates.py): slot() argument validation, fixed text rendered exactly, loops and
conditionals over variables, and the refusals of render_template / validate_template. Budgets on rendering
(iterations, call depth, time) are in tests/constraints/test_budget.py."""

from __future__ import annotations

import json

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from redraft.constraints.templates import NAME, SlotSpec, make_slot, render_template, validate_template
from redraft.constraints.vocab import VOCABS
from redraft.errors import ConstraintError, InvalidRequest


def render(source: str, **variables):
    return render_template(source, variables, 8, 64)


def fixed(pieces) -> str:
    return "".join(p for p in pieces if isinstance(p, str))


# ---------------------------------------------------------------------------------------------- slot() arguments

@settings(max_examples=100, deadline=None)
@given(name=st.from_regex(NAME, fullmatch=True), limit=st.integers(1, 512), data=st.data())
def test_valid_slot_arguments_give_the_spec_they_describe(name, limit, data):
    max_tokens = data.draw(st.integers(1, limit))
    min_tokens = data.draw(st.integers(0, max_tokens))
    vocab = data.draw(st.sampled_from([None, *VOCABS]))
    spec = make_slot(name, max_tokens, min_tokens, vocab=vocab, limit=limit)
    assert spec == SlotSpec(name=name, max_tokens=max_tokens, min_tokens=min_tokens, target=None, vocab=vocab)


@settings(max_examples=100, deadline=None)
@given(name=st.one_of(st.text(max_size=70), st.integers(), st.none()))
def test_a_bad_slot_name_is_refused_saying_what_a_name_may_hold(name):
    assume(not (isinstance(name, str) and NAME.fullmatch(name)))
    with pytest.raises(InvalidRequest, match="use letters, digits, _ . - \\(up to 64\\)"):
        make_slot(name, 4, limit=64)


@settings(max_examples=100, deadline=None)
@given(max_tokens=st.one_of(st.integers(-100, 0), st.integers(65, 10**6), st.floats(), st.text(max_size=3),
                            st.booleans()))  # True is an int in Python, but not a token count
def test_max_tokens_outside_1_to_the_limit_is_refused_naming_the_range(max_tokens):
    with pytest.raises(InvalidRequest, match="max_tokens must be a whole number from 1 to 64"):
        make_slot("s", max_tokens, limit=64)


@settings(max_examples=50, deadline=None)
@given(max_tokens=st.integers(1, 64), over=st.integers(1, 100))
def test_min_tokens_over_max_tokens_is_refused(max_tokens, over):
    with pytest.raises(InvalidRequest, match=f"min_tokens must be from 0 to max_tokens \\({max_tokens}\\)"):
        make_slot("s", max_tokens, max_tokens + over, limit=64)
    with pytest.raises(InvalidRequest, match="min_tokens must be from 0"):
        make_slot("s", max_tokens, -over, limit=64)
    with pytest.raises(InvalidRequest, match="min_tokens must be from 0"):
        make_slot("s", max_tokens, True, limit=64)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"regex": "[0-9]+", "choices": ["a"]}, InvalidRequest, "at most one of regex, choices, json_schema"),
    ({"regex": "a", "json_schema": {"type": "string"}}, InvalidRequest, "at most one of"),
    ({"regex": ""}, ConstraintError, "regex must be a non-empty string"),
    ({"regex": 5}, ConstraintError, "regex must be a non-empty string"),
    ({"regex": "(unclosed"}, ConstraintError, "invalid regex"),
    ({"choices": []}, ConstraintError, "choices must be a non-empty list of non-empty strings"),
    ({"choices": ["a", ""]}, ConstraintError, "non-empty strings"),
    ({"choices": "ab"}, ConstraintError, "non-empty list"),
    ({"json_schema": "string"}, ConstraintError, "json_schema must be a JSON object"),
    ({"vocab": "emoji"}, InvalidRequest, "unknown vocab 'emoji'; use one of: digits, letters"),
])
def test_bad_targets_are_refused_saying_what_to_write_instead(kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        make_slot("s", 4, limit=64, **kwargs)
    assert "slot 's'" in info.value.message or "vocab" in kwargs


def test_targets_are_stored_as_their_kind_and_a_json_spec():
    assert make_slot("s", 4, regex="[0-9]+", limit=64).target == ("regex", "[0-9]+")
    assert make_slot("s", 4, choices=("yes", "no"), limit=64).target == ("choices", '["yes", "no"]')
    schema = {"type": "object", "properties": {"b": {"type": "string"}, "a": {"type": "integer"}}}
    kind, spec = make_slot("s", 4, json_schema=schema, limit=64).target
    assert kind == "json_schema" and list(json.loads(spec)["properties"]) == ["b", "a"]  # field order is kept


# ---------------------------------------------------------------------------------------------- rendering

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
# Literal template source: no Jinja delimiters; no "\r" either, since Jinja normalises the source's newlines.
literal = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="{}%#\x00\r"), max_size=30)


@settings(max_examples=150, deadline=None)
@given(before=literal, between=text, after=literal)
def test_fixed_text_and_variables_render_exactly(before, between, after):
    pieces = render(before + '{{ slot("a", max_tokens=3) }}{{ v }}{{ slot("b") }}' + after, v=between)
    slots = [p for p in pieces if isinstance(p, SlotSpec)]
    assert [s.name for s in slots] == ["a", "b"] and [s.max_tokens for s in slots] == [3, 8]  # 8: the default
    assert pieces == [p for p in (before, slots[0], between, slots[1], after) if p != ""]


@settings(max_examples=100, deadline=None)
@given(items=st.lists(text, max_size=6), flag=st.booleans(), name=text)
def test_loops_and_conditionals_over_variables(items, flag, name):
    source = ('{% if flag %}Dear {{ name }}{% else %}Hi{% endif %}:\n'
              '{% for item in items %}- {{ item }} {{ slot("q" ~ loop.index, max_tokens=2) }}\n{% endfor %}'
              '{{ slot("end") }}')
    pieces = render(source, items=items, flag=flag, name=name)
    slots = [p for p in pieces if isinstance(p, SlotSpec)]
    assert [s.name for s in slots] == [f"q{i}" for i in range(1, len(items) + 1)] + ["end"]
    head = f"Dear {name}:\n" if flag else "Hi:\n"
    assert fixed(pieces) == head + "".join(f"- {item} \n" for item in items)


def test_loops_macros_and_loop_variables_still_work_under_the_budgets():
    pieces = render('{% macro item(x) %}<{{ x }}>{% endmacro %}{% for i in items %}{{ item(i) }}'
                    '{% if not loop.last %}, {% endif %}{% endfor %} of {{ items|length }} {{ slot("a") }}',
                    items=["a", "b", "c"])
    assert pieces[0] == "<a>, <b>, <c> of 3 "
    tree = [{"n": 1, "c": [{"n": 2, "c": [{"n": 3, "c": []}]}]}]
    assert render('{% for x in tree recursive %}{{ x.n }}{{ loop(x.c) }}{% endfor %}{{ slot("a") }}',
                  tree=tree)[0] == "123"


def test_the_trailing_newline_is_kept():
    assert render('{{ slot("a") }}\n')[-1] == "\n"


def test_slot_arguments_are_validated_while_rendering():
    with pytest.raises(InvalidRequest, match="max_tokens must be a whole number from 1 to 64"):
        render('{{ slot("a", max_tokens=65) }}')
    with pytest.raises(ConstraintError, match="invalid regex"):
        render('{{ slot("a", regex="(") }}')


@pytest.mark.parametrize("source,variables,match", [
    ('{{ slot("a") }}{{ slot("a") }}', {}, "'a' is used twice; slot names must be unique"),
    ("Just text", {}, "the template has no slot"),
    ('{{ slot("a") }}', {"slot": 1}, "`slot` is reserved"),
    ('{{ who }}{{ slot("a") }}', {}, "undefined name.*pass it in `variables`"),
    ("{% if %}", {}, "syntax error on line 1"),
    ("{{ ''.__class__.__mro__ }}{{ slot('a') }}", {}, "sandbox forbids"),
    ("{{ slot }}", {}, "not a value: call it"),
    ("{{ lipsum() }}{{ slot('a') }}", {}, "undefined name"),  # random filler text is not available
    ("{{ 1 // 0 }}{{ slot('a') }}", {}, "failed to render: ZeroDivisionError"),
    ("{{ 2 ** 100 }}{{ slot('a') }}", {}, "exponents are limited to 64"),
])
def test_bad_templates_are_refused_saying_what_was_wrong(source, variables, match):
    with pytest.raises(InvalidRequest, match=match):
        render_template(source, variables, 8, 64)


# ---------------------------------------------------------------------------------------------- saving

def test_validate_template_accepts_a_template_with_a_slot_and_refuses_the_rest():
    validate_template('Hello {{ name }}, {% for x in xs %}{{ slot("a" ~ loop.index) }}{% endfor %}')
    with pytest.raises(InvalidRequest, match="the template has no slot"):
        validate_template("Hello {{ name }}")
    with pytest.raises(InvalidRequest, match="syntax error on line 2"):
        validate_template('{{ slot("a") }}\n{% for %}')
