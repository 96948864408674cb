"""Budgets on compiling targets, on the slot decoder's memory and on rendering templates (issue 12), on Redraft's
real tokenizer. Each hostile input of the issue is reproduced here; each refusal is a ConstraintError /
InvalidRequest (422) that names its setting. The API-level checks are in tests/api/test_budgets.py."""

from __future__ import annotations

import json
import multiprocessing
import re
from re import _parser as sre_parser

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.constraints import budget
from redraft.constraints.automaton import compile_choices, compile_json_schema, compile_regex, require_fits
from redraft.constraints.generate import compile_generate
from redraft.constraints.templates import make_slot, render_template
from redraft.errors import ConstraintError, InvalidRequest
from redraft.settings import get_settings
from tests.constraints.test_automaton import EOS, INFO, SPECIALS, TOKENIZER, V


@pytest.fixture
def limits(monkeypatch):
    """Set REDRAFT_* limits for one test (the settings object is re-read, then restored)."""
    def set_limits(**values):
        for name, value in values.items():
            monkeypatch.setenv(f"REDRAFT_{name.upper()}", str(value))
        get_settings.cache_clear()
    yield set_limits
    monkeypatch.undo()
    get_settings.cache_clear()


def nested_arrays(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


def refusal(call) -> ConstraintError:
    with pytest.raises(ConstraintError) as info:
        call()
    return info.value


# ---------------------------------------------------------------------------------------------- before construction

@pytest.mark.parametrize("make,setting", [
    # Each froze or exhausted the API (issue 12); each is now refused by a check that builds nothing.
    (lambda: compile_regex(r"((a{0,50}){0,50}){0,50}", TOKENIZER, EOS, SPECIALS), "REDRAFT_MAX_REGEX_STATES"),
    (lambda: compile_regex(r"\w{200}", TOKENIZER, EOS, SPECIALS), "REDRAFT_MAX_REGEX_STATES"),
    (lambda: compile_regex("|".join(f"w{i}" for i in range(5000)), TOKENIZER, EOS, SPECIALS),
     "REDRAFT_MAX_ALTERNATIVES"),
    (lambda: compile_choices([f"w{i}" for i in range(10_000)], TOKENIZER, EOS, SPECIALS), "REDRAFT_MAX_ALTERNATIVES"),
    (lambda: compile_json_schema(nested_arrays(40), TOKENIZER, EOS, SPECIALS), "REDRAFT_MAX_SCHEMA_DEPTH"),
    (lambda: compile_json_schema(nested_arrays(50), TOKENIZER, EOS, SPECIALS), "REDRAFT_MAX_SCHEMA_DEPTH"),
    (lambda: compile_regex("a" * 70_000, TOKENIZER, EOS, SPECIALS), "REDRAFT_MAX_REGEX_CHARS"),
    (lambda: make_slot("s", 8, regex="a" * 70_000, limit=256), "REDRAFT_MAX_REGEX_CHARS"),
    (lambda: make_slot("s", 8, choices=[f"w{i}" for i in range(10_000)], limit=256), "REDRAFT_MAX_ALTERNATIVES"),
    (lambda: make_slot("s", 8, json_schema=nested_arrays(800), limit=256), "REDRAFT_MAX_SCHEMA_DEPTH"),
], ids=["nested-repeats", "unicode-w-200", "5k-alternatives", "10k-choices", "schema-40-deep", "schema-50-deep",
        "70k-chars", "slot-70k-chars", "slot-10k-choices", "slot-schema-800-deep"])
def test_hostile_targets_are_refused_before_construction(make, setting):
    with budget.compile_clock() as clock:
        exc = refusal(make)
    assert exc.code == "constraint_too_large" and setting in exc.message, exc.message
    assert multiprocessing.active_children() == []  # nothing was started, nothing is left running
    assert clock.compiles <= 1


def test_too_many_states_are_refused_from_the_cheap_byte_automaton_before_the_token_index():
    """`[ab]*a[ab]{14}` (2^15 states) was refused only after the whole 16.8 s build; its byte automaton (256
    tokens) already shows the state count, so the build stops there ("at least")."""
    exc = refusal(lambda: compile_regex(r"[ab]*a[ab]{14}", TOKENIZER, EOS, SPECIALS))
    assert "at least" in exc.message and "exceeds the cap" in exc.message, exc.message


def test_a_compile_past_its_deadline_is_killed(limits):
    limits(compile_timeout_s=0.3)
    with budget.compile_clock() as clock:
        exc = refusal(lambda: compile_regex(r"\w{40}", TOKENIZER, EOS, SPECIALS))  # seconds of outlines-core work
    assert exc.code == "compile_timeout" and "REDRAFT_COMPILE_TIMEOUT_S" in exc.message, exc.message
    assert multiprocessing.active_children() == []
    assert clock.compiles == 1 and clock.seconds > 0  # refused compiles are charged too
    # The slot was given back and nothing was cached: the next compile runs.
    assert compile_regex(r"[0-9]{2}-[0-9]{2}k", TOKENIZER, EOS, SPECIALS).n_states > 1


def test_a_compile_over_its_memory_budget_is_killed(limits):
    limits(compile_memory_bytes=64 * 2**20)
    exc = refusal(lambda: compile_regex(r"[a-z]{600}", TOKENIZER, EOS, SPECIALS))  # ~1.5M edges as Python dicts
    assert exc.code == "compile_memory" and "REDRAFT_COMPILE_MEMORY_BYTES" in exc.message, exc.message
    assert multiprocessing.active_children() == []


def test_compile_time_is_reported_per_block_and_per_automaton():
    with budget.compile_clock() as clock:
        a = compile_regex(r"[0-9]{3}-clock", TOKENIZER, EOS, SPECIALS)
        compile_regex(r"[0-9]{3}-clock", TOKENIZER, EOS, SPECIALS)  # cached: no compile, no time
    assert clock.compiles == 1 and 0 < clock.seconds and a.compile_seconds > 0
    with budget.compile_clock() as outer:
        compile_regex(r"[0-9]{3}-clock", TOKENIZER, EOS, SPECIALS)
    assert outer.compiles == 0 and outer.seconds == 0


# Regexes from a small grammar: literals, classes (ASCII and Unicode), groups, branches and bounded repeats.
atoms = st.sampled_from(["a", "b", "é", "[a-c]", r"\d", r"\w", ".", "[^x]"])
patterns = st.recursive(atoms, lambda inner: st.one_of(
    st.tuples(inner, inner).map("".join),
    st.tuples(inner, inner).map(lambda p: f"({p[0]}|{p[1]})"),
    st.tuples(inner, st.integers(0, 3), st.integers(0, 6)).map(lambda p: f"(?:{p[0]}){{{p[1]},{p[1] + p[2]}}}"),
    inner.map(lambda p: f"(?:{p})*"),
), max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(pattern=patterns, budget_states=st.integers(0, 5000))
def test_the_size_estimate_stops_early_exactly_when_it_passes_its_budget(pattern, budget_states):
    """Counting stops as soon as the budget is spent, and that never changes the answer: the walk with a budget
    raises iff the unbudgeted estimate is over it, and otherwise returns the same number."""
    parsed = sre_parser.parse(pattern)
    full = budget._estimate(parsed, 10**12, budget._Walk(max_alternatives=10**6))
    try:
        bounded = budget._estimate(parsed, budget_states, budget._Walk(max_alternatives=10**6))
    except budget._Over:
        assert full > budget_states
    else:
        assert bounded == full <= budget_states


@settings(max_examples=15, deadline=None)
@given(pattern=patterns.filter(lambda p: len(p) < 40))
def test_the_sparse_result_of_the_child_rebuilds_the_table(pattern):
    """The child hands back (src, tok, dst) edges; the table built from them has exactly that many entries."""
    try:
        a = compile_regex(pattern, TOKENIZER, EOS, SPECIALS)
    except ConstraintError as exc:  # too big for the table, or matches no text: refused with a reason
        assert "cap" in exc.message or "matches no text" in exc.message or "REDRAFT_" in exc.message, exc.message
        return
    assert a.n_edges == int(np.count_nonzero(a.next_state >= 0)) and a.next_state.shape == (a.n_states, V)
    assert a.final.shape == (a.n_states,) and a.final.any()


# ---------------------------------------------------------------------------------------------- the DP's memory

def test_the_issue_s_regex_of_1000_letters_in_256_tokens_fits_now_that_positions_share_token_classes():
    """Once refused (one decoding step scored its ~2.5M edges at every position: ~4.7 GiB). Its 1001 states read
    only 11 distinct token sets ("one to k more letters"), so the DP reads each class once per position: the
    budget is tens of MiB, and the slot is accepted."""
    slot = make_slot("answer", 256, regex="[a-z]{1000}", limit=256)
    compile_generate(["Word: ", slot], TOKENIZER, INFO)
    a = compile_regex("[a-z]{1000}", TOKENIZER, EOS, SPECIALS)
    c = a.classes
    assert a.n_edges > 2_000_000 and c.n_classes < 20 and c.n_class_tokens < a.n_edges // 100
    assert budget.dp_step_bytes(256, c.n_class_tokens, c.n_pairs, a.n_states) < 128 * 2**20
    # (it decodes to 1000 letters: tests/workers/test_slot_decoder.py::test_a_thousand_letters_in_256_positions)


def test_the_dp_refusal_says_how_many_positions_fit_and_that_many_do(limits):
    limits(max_dp_bytes=2**20)
    slot = make_slot("answer", 64, regex="[a-z]{1,30}", limit=256)
    exc = refusal(lambda: compile_generate(["Word: ", slot], TOKENIZER, INFO))
    fits = int(re.search(r"give at most max_tokens=(\d+)", exc.message).group(1))
    assert 1 <= fits < 64
    compile_generate(["Word: ", make_slot("answer", fits, regex="[a-z]{1,30}", limit=256)], TOKENIZER, INFO)
    with pytest.raises(ConstraintError, match="REDRAFT_MAX_DP_BYTES"):
        require_fits(compile_regex("[a-z]{1,30}", TOKENIZER, EOS, SPECIALS), fits + 1)


# ---------------------------------------------------------------------------------------------- templates
# (what templates render is tested in tests/constraints/test_templates.py; here only their budgets)

def render(source: str, **variables):
    return render_template(source, variables, 8, 64)


@settings(max_examples=30, deadline=None)
@given(outer=st.integers(0, 12), inner=st.integers(0, 12))
def test_loop_iterations_are_counted_across_nested_loops(outer, inner):
    """Exactly outer + outer * inner iterations run; over the budget (40 here) is a 422 that names it."""
    source = '{% for i in xs %}{% for j in ys %}.{% endfor %}{% endfor %}{{ slot("a") }}'
    mp = pytest.MonkeyPatch()
    mp.setenv("REDRAFT_TEMPLATE_MAX_ITERATIONS", "40")
    get_settings.cache_clear()
    try:
        if outer + outer * inner <= 40:
            pieces = render(source, xs=list(range(outer)), ys=list(range(inner)))
            assert "".join(p for p in pieces if isinstance(p, str)) == "." * (outer * inner)
        else:
            with pytest.raises(InvalidRequest, match="REDRAFT_TEMPLATE_MAX_ITERATIONS"):
                render(source, xs=list(range(outer)), ys=list(range(inner)))
    finally:
        mp.undo()
        get_settings.cache_clear()


@pytest.mark.parametrize("source,setting", [
    ('{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}{{ slot("a") }}',
     "REDRAFT_TEMPLATE_MAX_ITERATIONS"),  # prints nothing, so the output cap never saw it
    ('{% for x in t recursive %}{{ loop(t) }}{% endfor %}{{ slot("a") }}', "REDRAFT_TEMPLATE_MAX_CALL_DEPTH"),
    ('{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}{{ slot("a") }}', "REDRAFT_TEMPLATE_MAX_CALL_DEPTH"),
    ('{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}{{ slot("a") }}',
     "REDRAFT_TEMPLATE_TIMEOUT_S"),  # 2^40 calls, 40 deep, no loop, no output
    ("{{ 'a' * 10000000 }}{{ slot('a') }}", "200,000-character budget"),  # refused before; still
], ids=["nested-loops", "recursive-loop", "endless-macro", "exponential-macro", "string-repeat"])
def test_hostile_templates_are_refused_naming_the_limit(limits, source, setting):
    limits(template_timeout_s=0.3)
    with pytest.raises(InvalidRequest, match=re.escape(setting)):
        render(source, t=[1])


def test_limits_are_documented_settings():
    fields = get_settings().model_fields
    for name in ("max_regex_chars", "max_schema_depth", "max_alternatives", "max_regex_states", "compile_timeout_s",
                 "compile_memory_bytes", "compile_concurrency", "max_dp_bytes", "template_max_iterations",
                 "template_max_call_depth", "template_timeout_s"):
        assert name in fields
    assert json.dumps(budget.dp_step_bytes(1, 1, 1, 1))
