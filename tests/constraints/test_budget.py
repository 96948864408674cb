"""Budgets on compiling targets, on the slot decoder's memory and on rendering templates (issue 12), on Redraft's
real tokenizer. Each hostile input of the issue is reproduced here; each refusal is a ConstraintError /
InvalidRequest (422) that names its setting. The API-level checks are in tests/api/test_budgets.py."""

from __future__ import annotations

import contextvars
import json
import multiprocessing
import os
import re
import signal
import threading
from re import _parser as sre_parser

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from redraft.constraints import budget
from redraft.constraints.automaton import compile_choices, compile_json_schema, compile_regex, require_fits
from redraft.constraints.generate import compile_generate
from redraft.constraints.templates import make_slot, render_template
from redraft.errors import CompileBusy, ConstraintError, InvalidRequest
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


@pytest.mark.parametrize(
    "make,setting",
    [
        # Each froze or exhausted the API (issue 12); each is now refused by a check that builds nothing.
        (lambda: compile_regex(r"((a{0,50}){0,50}){0,50}", TOKENIZER, EOS, SPECIALS), "REDRAFT_MAX_REGEX_STATES"),
        (lambda: compile_regex(r"\w{200}", TOKENIZER, EOS, SPECIALS), "REDRAFT_MAX_REGEX_STATES"),
        (
            lambda: compile_regex("|".join(f"w{i}" for i in range(5000)), TOKENIZER, EOS, SPECIALS),
            "REDRAFT_MAX_ALTERNATIVES",
        ),
        (
            lambda: compile_choices([f"w{i}" for i in range(10_000)], TOKENIZER, EOS, SPECIALS),
            "REDRAFT_MAX_ALTERNATIVES",
        ),
        (lambda: compile_json_schema(nested_arrays(40), TOKENIZER, EOS, SPECIALS), "REDRAFT_MAX_SCHEMA_DEPTH"),
        (lambda: compile_json_schema(nested_arrays(50), TOKENIZER, EOS, SPECIALS), "REDRAFT_MAX_SCHEMA_DEPTH"),
        (lambda: compile_regex("a" * 70_000, TOKENIZER, EOS, SPECIALS), "REDRAFT_MAX_REGEX_CHARS"),
        (lambda: make_slot("s", 8, regex="a" * 70_000, limit=256), "REDRAFT_MAX_REGEX_CHARS"),
        (lambda: make_slot("s", 8, choices=[f"w{i}" for i in range(10_000)], limit=256), "REDRAFT_MAX_ALTERNATIVES"),
        (lambda: make_slot("s", 8, json_schema=nested_arrays(800), limit=256), "REDRAFT_MAX_SCHEMA_DEPTH"),
    ],
    ids=[
        "nested-repeats",
        "unicode-w-200",
        "5k-alternatives",
        "10k-choices",
        "schema-40-deep",
        "schema-50-deep",
        "70k-chars",
        "slot-70k-chars",
        "slot-10k-choices",
        "slot-schema-800-deep",
    ],
)
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
patterns = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.tuples(inner, inner).map("".join),
        st.tuples(inner, inner).map(lambda p: f"({p[0]}|{p[1]})"),
        st.tuples(inner, st.integers(0, 3), st.integers(0, 6)).map(lambda p: f"(?:{p[0]}){{{p[1]},{p[1] + p[2]}}}"),
        inner.map(lambda p: f"(?:{p})*"),
    ),
    max_leaves=8,
)


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
    assert budget.dp_step_bytes(256, c.n_class_tokens, c.n_pairs, a.n_states, a.max_committed_moves) < 128 * 2**20
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


@pytest.mark.parametrize(
    "source,setting",
    [
        (
            '{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}{{ slot("a") }}',
            "REDRAFT_TEMPLATE_MAX_ITERATIONS",
        ),  # prints nothing, so the output cap never saw it
        ('{% for x in t recursive %}{{ loop(t) }}{% endfor %}{{ slot("a") }}', "REDRAFT_TEMPLATE_MAX_CALL_DEPTH"),
        ('{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}{{ slot("a") }}', "REDRAFT_TEMPLATE_MAX_CALL_DEPTH"),
        (
            '{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}{{ slot("a") }}',
            "REDRAFT_TEMPLATE_TIMEOUT_S",
        ),  # 2^40 calls, 40 deep, no loop, no output
        ("{{ 'a' * 10000000 }}{{ slot('a') }}", "200,000-character budget"),  # refused before; still
    ],
    ids=["nested-loops", "recursive-loop", "endless-macro", "exponential-macro", "string-repeat"],
)
def test_hostile_templates_are_refused_naming_the_limit(limits, source, setting):
    limits(template_timeout_s=0.3)
    with pytest.raises(InvalidRequest, match=re.escape(setting)):
        render(source, t=[1])


def test_limits_are_documented_settings():
    fields = get_settings().model_fields
    for name in (
        "max_regex_chars",
        "max_schema_depth",
        "max_alternatives",
        "max_regex_states",
        "compile_timeout_s",
        "compile_memory_bytes",
        "compile_concurrency",
        "max_dp_bytes",
        "template_max_iterations",
        "template_max_call_depth",
        "template_timeout_s",
    ):
        assert name in fields
    assert json.dumps(budget.dp_step_bytes(1, 1, 1, 1, 1))


# ---------------------------------------------------------------------------------------------- added: messages


@settings(max_examples=200, deadline=None)
@given(pattern=st.text(max_size=200), limit=st.integers(1, 120))
def test_a_pattern_is_shown_whole_or_cut_with_its_length(pattern, limit):
    out = budget.shown(pattern, limit)
    if len(pattern) <= limit:
        assert out == repr(pattern)
    else:
        assert out == repr(pattern[:limit]) + f"... ({len(pattern):,} characters)"
        assert len(out) <= len(repr(pattern[:limit])) + 40  # a 64k-character regex is not pasted into the message


# ---------------------------------------------------------------------------------------------- added: before


def test_length_and_choice_limits_are_inclusive(limits):
    limits(max_regex_chars=64, max_alternatives=3)
    budget.check_regex_length("a" * 64)
    exc = refusal(lambda: budget.check_regex_length("a" * 65, "slot 'x': the regex"))
    assert exc.code == "constraint_too_large" and exc.message.startswith("slot 'x': the regex is 65 characters")
    assert "limit of 64 (REDRAFT_MAX_REGEX_CHARS)" in exc.message
    budget.check_choices(["a", "b", "c"])
    exc = refusal(lambda: budget.check_choices(["a", "b", "c", "d"]))
    assert exc.code == "constraint_too_large" and "4 choices are over the limit of 3" in exc.message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3),
    max_leaves=12,
)


def nesting(value) -> int:
    """Objects and arrays nested in a JSON document (0 for a scalar), read recursively."""
    if isinstance(value, dict):
        return 1 + max(map(nesting, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(nesting, value), default=0)
    return 0


@settings(max_examples=150, deadline=None)
@given(base=json_values, wraps=st.lists(st.booleans(), max_size=24))
def test_a_schema_is_refused_exactly_when_nested_deeper_than_the_limit(base, wraps):
    """Any document (the deep part wrapped in objects or arrays beside other values), against a recursive
    count of its nesting."""
    schema = base
    for as_object in wraps:
        schema = {"type": "x", "items": schema} if as_object else [1, schema, "x"]
    limit = get_settings().max_schema_depth
    if nesting(schema) <= limit:
        budget.check_schema_depth(schema)
    else:
        exc = refusal(lambda: budget.check_schema_depth(schema))
        assert exc.code == "constraint_too_large" and f"more than {limit} levels" in exc.message
        assert "REDRAFT_MAX_SCHEMA_DEPTH" in exc.message


# Each atom and what one copy of it costs: its UTF-8 length for a literal, a class's widest member.
WEIGHTED_ATOMS = [
    ("a", 1),
    ("b", 1),
    ("é", 2),
    ("€", 3),
    ("[a-c]", 1),
    ("[é-ü]", 8),
    ("[0-9é]", 8),
    (r"\d", 30),
    (r"\D", 30),
    (r"\w", 320),
    (r"[\w.]", 320),
    (r"\s", 8),
    (".", 8),
    ("[^x]", 8),
    ("[^ab]", 8),
]


@st.composite
def weighted_patterns(draw, depth: int = 3):
    """(pattern, estimated states, alternatives), the estimate read off the docstring's rules: a sequence or
    a branch is the sum of its parts, ``{m,n}`` is n copies (m, at least 1, when unbounded), groups and
    lookarounds cost their body. Branch arms start with distinct letters, so Python's parser keeps them."""
    kind = draw(st.sampled_from(["atom"] * 3 + (["seq", "branch", "bounded", "unbounded", "group"] if depth else [])))
    if kind == "atom":
        pattern, cost = draw(st.sampled_from(WEIGHTED_ATOMS))
        return pattern, cost, 0
    p, e, a = draw(weighted_patterns(depth - 1))
    if kind in ("seq", "branch"):
        q, f, b = draw(weighted_patterns(depth - 1))
        if kind == "seq":
            return p + q, e + f, a + b
        return f"(?:A{p}|B{q})", 2 + e + f, a + b + 2
    if kind == "bounded":
        low = draw(st.integers(0, 10))
        high = draw(st.integers(max(1, low), 100))
        return f"(?:{p}){{{low},{high}}}", high * e, a
    if kind == "unbounded":
        form, low = draw(st.sampled_from([("*", 0), ("+", 1), ("*?", 0), ("++", 1), ("{3,}", 3), ("{2,}?", 2)]))
        return f"(?:{p}){form}", max(1, low) * e, a
    wrap = draw(st.sampled_from(["({})", "(?={})", "(?!{})", "(?>{})", "(?i:{})", "(?:{})"]))
    return wrap.format(p), e, a


@settings(max_examples=150, deadline=None)
@given(weighted_patterns())
@example((r"(?:(?:\w){0,9}){2,9}", 9 * 9 * 320, 0))  # over the default 20,000 states
@example((r"(?:A(?:\d){30}|B(?:é){4,})+", 2 + 30 * 30 + 4 * 2, 2))
def test_the_size_estimate_is_the_sum_and_product_of_its_parts(case):
    pattern, expected, alternatives = case
    walk = budget._Walk(max_alternatives=10**6)
    assert budget._estimate(sre_parser.parse(pattern), 10**12, walk) == expected
    assert walk.alternatives == alternatives
    if alternatives:  # the count is a hard limit: one over it is refused, naming its setting
        budget._estimate(sre_parser.parse(pattern), 10**12, budget._Walk(max_alternatives=alternatives))
        with pytest.raises(ConstraintError, match="REDRAFT_MAX_ALTERNATIVES") as exc:
            budget._estimate(sre_parser.parse(pattern), 10**12, budget._Walk(max_alternatives=alternatives - 1))
        assert exc.value.code == "constraint_too_large"
    states = get_settings().max_regex_states
    if expected > states:
        exc = refusal(lambda: budget.check_pattern(pattern))
        assert exc.code == "constraint_too_large" and f"more than ~{states:,} states" in exc.message
    else:
        budget.check_pattern(pattern)


def test_a_pattern_python_cannot_read_is_refused_unless_a_schema_generated_it():
    for pattern, why in [("(unclosed", "missing )"), ("(" * 3000 + "a" + ")" * 3000, "recursion")]:
        exc = refusal(lambda pattern=pattern: budget.check_pattern(pattern))
        assert exc.message.startswith(f"invalid regex {budget.shown(pattern)}: ") and why in exc.message
        assert exc.code == "invalid_constraint"
        assert budget.check_pattern(pattern, generated=True) is None  # the construction budgets alone guard it
    with pytest.raises(ConstraintError, match="the regex of this JSON schema is"):
        budget.check_pattern("a" * (get_settings().max_regex_chars + 1), generated=True)  # too long still is


# ---------------------------------------------------------------------------------------------- added: during


def free_slots() -> int:
    """How many compile slots are free now (taken and given straight back)."""
    slots, n = budget._compile_slots(), 0
    while slots.acquire(blocking=False):
        n += 1
    for _ in range(n):
        slots.release()
    return n


def _raise(exc: BaseException):
    raise exc


def test_a_bounded_run_hands_back_the_childs_result():
    parent = os.getpid()
    out = budget.run_bounded(lambda n: (os.getpid(), np.arange(n)), 5, what="a test")
    assert out[0] != parent and out[1].tolist() == [0, 1, 2, 3, 4]
    assert multiprocessing.active_children() == [] and free_slots() == get_settings().compile_concurrency


@pytest.mark.parametrize(
    "fn,code,words",
    [
        (
            lambda: _raise(ConstraintError("no such schema", code="schema_unsupported")),
            "schema_unsupported",
            ["no such schema"],
        ),
        (lambda: _raise(ConstraintError("plain refusal")), "invalid_constraint", ["plain refusal"]),
        (lambda: _raise(ValueError("boom")), "invalid_constraint", ["could not be compiled: ValueError: boom"]),
        (
            lambda: _raise(MemoryError()),
            "compile_memory",
            ["compiling a test needed more than 3.0 GiB of memory", "REDRAFT_COMPILE_MEMORY_BYTES"],
        ),
        (
            lambda: os.kill(os.getpid(), signal.SIGKILL),
            "compile_memory",
            ["more than 3.0 GiB of memory (signal SIGKILL)"],
        ),
        (
            lambda: os.kill(os.getpid(), signal.SIGTERM),
            "compile_failed",
            ["process compiling a test died (signal SIGTERM)"],
        ),
        (lambda: os._exit(3), "compile_failed", ["process compiling a test died (exit 3)"]),
    ],
    ids=["refusal-with-code", "refusal", "bug", "memory-error", "sigkill", "sigterm", "exit"],
)
def test_how_the_child_ends_is_the_422_the_caller_gets(limits, fn, code, words):
    """A refusal travels back as itself; any other exception is reported, not fatal; a child that dies without a
    word is out of memory when the kernel or Rust ended it (SIGKILL, SIGABRT), else a failed compile."""
    limits(compile_memory_bytes=3 * 2**30)
    exc = refusal(lambda: budget.run_bounded(fn, what="a test"))
    assert exc.code == code, exc.message
    for w in words:
        assert w in exc.message, exc.message
    assert multiprocessing.active_children() == [] and free_slots() == get_settings().compile_concurrency


def test_memory_limits_are_named_in_mib_below_a_gib(limits):
    limits(compile_memory_bytes=96 * 2**20)
    exc = refusal(lambda: budget.run_bounded(lambda: _raise(MemoryError()), what="x"))
    assert "needed more than 96 MiB of memory" in exc.message


def test_every_slot_busy_for_the_whole_deadline_is_a_503(limits):
    limits(compile_timeout_s=0.2)
    slots, held = budget._compile_slots(), 0
    while slots.acquire(blocking=False):
        held += 1
    try:
        assert held >= 1
        with pytest.raises(CompileBusy) as info:
            budget.run_bounded(os.getpid, what="x")
        assert info.value.status_code == 503 and "REDRAFT_COMPILE_CONCURRENCY" in info.value.message
        assert multiprocessing.active_children() == []  # nothing was started
    finally:
        for _ in range(held):
            slots.release()
    assert budget.run_bounded(lambda: "ran", what="x") == "ran"  # once one is free, compiles run


# ---------------------------------------------------------------------------------------------- added: time


def test_each_clock_counts_the_compiles_of_its_own_block():
    def compile_once(fail: bool = False):
        with budget.timed_compile():
            if fail:
                raise ValueError("refused")

    compile_once()  # no clock open: nothing to count, nothing fails
    with budget.compile_clock() as outer:
        compile_once()
        with budget.compile_clock() as inner:
            compile_once()
            with pytest.raises(ValueError):
                compile_once(fail=True)  # a failed compile's time was spent too
        compile_once()
        plain = threading.Thread(target=compile_once)  # a new thread starts with an empty context...
        plain.start()
        plain.join(timeout=30)
        ctx = contextvars.copy_context()
        worker = threading.Thread(target=ctx.run, args=(compile_once,))  # ...unless it is given this one
        worker.start()
        worker.join(timeout=30)
        assert not plain.is_alive() and not worker.is_alive()
    assert (outer.compiles, inner.compiles) == (3, 2)
    assert outer.seconds >= 0 and inner.seconds >= 0


# ---------------------------------------------------------------------------------------------- added: the DP


sizes = st.tuples(st.integers(0, 300), st.integers(0, 10**7), st.integers(0, 10**6), st.integers(0, 10**5),
                  st.integers(0, 10**6))


@settings(max_examples=200, deadline=None)
@given(a=sizes, b=sizes)
def test_dp_bytes_grow_linearly_in_positions_and_with_every_size(a, b):
    n, m, p, s, r = a
    step = budget.dp_step_bytes
    assert step(n + b[0], m, p, s, r) + step(0, m, p, s, r) == step(n, m, p, s, r) + step(b[0], m, p, s, r)
    assert step(n, m, p, s, r) >= 16  # at least one state's prefix score
    bigger = [max(x, y) for x, y in zip(a, b)]
    assert step(*bigger) >= step(n, m, p, s, r)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 256),
    m=st.integers(10**5, 10**7),
    p=st.integers(1, 10**6),
    s=st.integers(1, 10**6),
    r=st.integers(0, 10**6),
    min_tokens=st.integers(0, 256),
)
@example(n=256, m=10**7, p=1, s=1, r=1, min_tokens=0)  # about 21 positions fit: the advice names them
@example(n=256, m=10**7, p=1, s=1, r=1, min_tokens=200)  # they cannot hold 200 tokens: simplify instead
def test_the_dp_refusal_names_the_most_positions_that_fit(n, m, p, s, r, min_tokens):
    """Refused exactly when one step needs more than ``max_dp_bytes``; the advice is the largest slot that fits
    when that slot can still hold ``min_tokens`` (and at least one token), else to simplify the pattern."""
    min_tokens = min(min_tokens, n)
    limit = get_settings().max_dp_bytes
    if budget.dp_step_bytes(n, m, p, s, r) <= limit:
        budget.require_dp_fits("[a-z]+", n, m, p, s, r, min_tokens)
        return
    exc = refusal(lambda: budget.require_dp_fits("[a-z]+", n, m, p, s, r, min_tokens))
    assert exc.code == "constraint_too_large" and "REDRAFT_MAX_DP_BYTES" in exc.message
    assert f"a slot of {n} tokens under '[a-z]+'" in exc.message
    fitting = [k for k in range(n) if budget.dp_step_bytes(k, m, p, s, r) <= limit]
    if fitting and max(fitting) >= max(1, min_tokens):
        assert f"give at most max_tokens={max(fitting)}" in exc.message
    else:
        assert "give at most" not in exc.message and "simplify the pattern" in exc.message
