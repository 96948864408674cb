"""Token automata (torch-free), on Redraft's real tokenizer (models/redraft-tiny). The slot decoder
is tested in tests/workers/test_slot_decoder.py, with the helpers here.

The oracle is Python's ``re.fullmatch`` on the decoded bytes, never the automaton itself. One known
gap: outlines-core's Unicode classes (``\\d`` ...) follow a newer Unicode than this Python's
``unicodedata`` (e.g. U+1CCF5 is a digit in Unicode 16, unassigned in 14), so text with code points
Python does not know is checked against the automaton only (``python_knows``).
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import redraft.constraints.automaton as automaton_module
from redraft.constraints.automaton import (
    TokenAutomaton,
    accepted_lengths,
    accepts,
    compile_choices,
    compile_json_schema,
    compile_regex,
    compile_target,
    min_length_tokens,
    require_fits,
)
from redraft.errors import ConstraintError
from redraft.families import load_model_info, load_tokenizer, special_ids, token_bytes

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "redraft-tiny"
INFO = load_model_info("redraft-tiny", MODEL_DIR)
TOKENIZER = load_tokenizer(MODEL_DIR)
SPECIALS = set(special_ids(INFO))
EMPTY = INFO.empty_id
EOS = INFO.eos_id
V = TOKENIZER.get_vocab_size()
NEVER_REAL = SPECIALS | {EMPTY, EOS}

REGEXES = [
    r"\d{4}-\d{2}-\d{2}",
    r"[a-z]{1,8}@[a-z]{1,8}\.(com|org)",
    r"-?(0|[1-9][0-9]{0,5})",
    r"[A-Za-z_][A-Za-z0-9_]{0,7}",
    r"(yes|no|maybe)",
    r"(ab|c){2,4}x?",
    r" ?[a-z]+( [a-z]+){0,2}\.",
    r"(no|none|n)( thanks)?",
    r'"[^"]{0,4}"',  # the content class also matches U+10FFFF (the compiler's end marker)
    r".{0,3}z",
]
SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 6}, "age": {"type": "integer"}},
     "required": ["name", "age"]},
    {"type": "object", "properties": {"ok": {"type": "boolean"},
                                      "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}},
     "required": ["ok", "tags"]},
    {"enum": ["red", "green", 3]},
]
CHOICES = ["yes", "no", "maybe so", "a.b|c", "naïve", "(x)", "tab\there"]
seeds = st.integers(0, 2**31 - 1)
SLOW = settings(max_examples=25, deadline=None)


def regex(pattern: str) -> TokenAutomaton:
    return compile_regex(pattern, TOKENIZER, EOS, SPECIALS)


def text_of(path: list[int]) -> str:
    """The slot's text; asserts the layout (real tokens, then only EMPTY) and valid UTF-8."""
    k = path.index(EMPTY) if EMPTY in path else len(path)
    assert all(t == EMPTY for t in path[k:]), f"a real token after EMPTY: {path}"
    assert not NEVER_REAL & set(path[:k]), f"a special token written: {path}"
    return b"".join(token_bytes(TOKENIZER, t) for t in path[:k]).decode("utf-8")


def python_knows(text: str) -> bool:
    """Every code point is assigned in this Python's Unicode database (so ``re`` can judge it)."""
    return all(unicodedata.category(ch) != "Cn" for ch in text)


def check(automaton: TokenAutomaton, path: list[int] | None, n: int, committed: list[int | None]) -> str:
    assert path is not None
    assert len(path) == n
    assert all(c is None or t == c for t, c in zip(path, committed)), "a committed position changed"
    text = text_of(path)
    assert re.fullmatch(automaton.pattern, text) or not python_knows(text), (automaton.pattern, text)
    assert accepts(automaton, [t for t in path if t != EMPTY])
    return text


# ------------------------------------------------------------------------------------------ compile


def test_compile_is_cached_and_specials_are_never_allowed():
    a = regex(REGEXES[0])
    assert regex(REGEXES[0]) is a
    assert isinstance(a.next_state, np.ndarray) and isinstance(a.final, np.ndarray)
    assert a.next_state.shape == (a.n_states, V) and a.next_state.dtype == np.int32
    assert a.final.shape == (a.n_states,) and a.final.dtype == np.bool_
    assert a.vocab_size == V and a.nbytes == a.n_states * V * 4 + a.classes.nbytes  # its classes, and the table
    assert a.n_edges == int(np.count_nonzero(a.next_state >= 0))  # asked for above: built from the classes
    assert (a.next_state[:, sorted(NEVER_REAL)] == -1).all()
    xy = compile_choices(["x", "y"], TOKENIZER, EOS, SPECIALS)
    assert compile_choices(["x", "y"], TOKENIZER, EOS, SPECIALS) is xy
    ab = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
          "required": ["a", "b"]}
    ba = {**ab, "properties": dict(reversed(ab["properties"].items()))}
    # Property order is the output's field order: not one cache entry.
    patterns = {compile_json_schema(s, TOKENIZER, EOS, SPECIALS).pattern for s in (ab, ba)}
    assert len(patterns) == 2


@pytest.mark.parametrize("pattern", ["a(", "a)(b", "[z-a]", "a{2,1}", "\\", "(?=a)b", r"(a)\1", r"a$|b"])
def test_invalid_regex_raises_constraint_error(pattern):
    with pytest.raises(ConstraintError, match="regex"):
        regex(pattern)


@pytest.mark.parametrize("pattern,texts", [
    (r"3(-3)?", ["3", "3-3"]),  # a token continuing past a full match into a non-final state
    (r"(a|ab)", ["a", "ab"]),  # leftmost-first would stop at "a"
    (r"a*?", ["", "a", "aa"]),  # lazy repeat would stop at ""
    (r"^(yes|no)$", ["yes", "no"]),  # end anchors are redundant, not fatal
])
def test_no_under_acceptance(pattern, texts):
    """Regressions for outlines-core's index dropping valid transitions (see constraints/automaton.py)."""
    a = regex(pattern)
    for text in texts:
        for ids in (TOKENIZER.encode(text, add_special_tokens=False).ids, [TOKENIZER.token_to_id(c) for c in text]):
            assert accepts(a, ids), (pattern, text, ids)
    choices = compile_choices(["no", "none"], TOKENIZER, EOS, SPECIALS)
    assert accepts(choices, [TOKENIZER.token_to_id("no")])
    assert accepts(choices, [TOKENIZER.token_to_id("no"), TOKENIZER.token_to_id("ne")])


def test_invalid_schema_and_choices_raise_constraint_error():
    with pytest.raises(ConstraintError, match="JSON schema"):
        compile_json_schema({"type": "nonsense"}, TOKENIZER, EOS, SPECIALS)
    with pytest.raises(ConstraintError, match="non-empty"):
        compile_choices([], TOKENIZER, EOS, SPECIALS)


def test_state_and_entry_caps(monkeypatch):
    monkeypatch.setattr(automaton_module, "MAX_STATES", 15)  # its byte automaton (21 states) passes the first check
    with pytest.raises(ConstraintError, match="compiles to 21 states, which exceeds the cap of 15"):
        regex(r"[a-z]{20}")  # 21 states
    monkeypatch.setattr(automaton_module, "MAX_STATES", 8192)
    monkeypatch.setattr(automaton_module, "MAX_TABLE_ENTRIES", 1000)
    with pytest.raises(ConstraintError, match="exceeds the cap of 1,000 entries"):
        regex(r"[a-z]{21}")  # ~2,500 class entries (not cached: the 20 above was refused, this is another)


@pytest.mark.parametrize("pattern", REGEXES)
def test_min_length_and_require_fits(pattern):
    a = regex(pattern)
    k = min_length_tokens(a)
    assert k >= 1 and min_length_tokens(a) == k
    assert not accepts(a, [])  # none of REGEXES matches the empty string
    require_fits(a, k)
    with pytest.raises(ConstraintError, match=f"needs {k} tokens but the slot has {k - 1}"):
        require_fits(a, k - 1)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n_states=st.integers(1, 5), vocab=st.integers(1, 3), n=st.integers(0, 5))
def test_accepted_lengths_are_the_lengths_of_accepted_sequences(data, n_states, vocab, n):
    """On small random automata, against every token sequence of length 0..n (the oracle: ``accepts``)."""
    import itertools

    table = np.array(data.draw(st.lists(st.lists(st.integers(-1, n_states - 1), min_size=vocab, max_size=vocab),
                                        min_size=n_states, max_size=n_states)), dtype=np.int32)  # (S, V)
    final = np.array(data.draw(st.lists(st.booleans(), min_size=n_states, max_size=n_states)))
    a = TokenAutomaton("random", n_states, 0, final, next_state=table)
    expected = [any(accepts(a, list(seq)) for seq in itertools.product(range(vocab), repeat=k)) for k in range(n + 1)]
    assert accepted_lengths(a, n).tolist() == expected


@pytest.mark.parametrize("pattern", REGEXES)
def test_min_tokens_beyond_every_match_in_the_slot_is_refused_with_the_longest(pattern):
    a = regex(pattern)
    n = min_length_tokens(a) + 3
    lengths = accepted_lengths(a, n)
    longest = int(np.flatnonzero(lengths).max())
    require_fits(a, n, min_tokens=longest)
    if longest < n:
        with pytest.raises(ConstraintError, match=f"min_tokens={longest + 1}, .* more than {longest}; give "
                                                  f"min_tokens of at most {longest}"):
            require_fits(a, n, min_tokens=longest + 1)


@settings(max_examples=40, deadline=None)
@given(pattern=st.sampled_from(REGEXES), data=st.data())
def test_tokenised_matches_are_accepted(pattern, data):
    """Any string that fullmatches, tokenised by the tokenizer, is accepted."""
    text = data.draw(st.from_regex(pattern, fullmatch=True))
    ids = TOKENIZER.encode(text, add_special_tokens=False).ids
    assert b"".join(token_bytes(TOKENIZER, t) for t in ids) == text.encode()
    assert accepts(regex(pattern), ids)


@SLOW
@given(pattern=st.sampled_from(REGEXES), seed=seeds)
def test_accepts_iff_bytes_fullmatch(pattern, seed):
    """Random walks on the automaton, then random token substitutions: accepted <=> bytes fullmatch."""
    a = regex(pattern)
    rng = random.Random(seed)
    state, walk = a.initial, []
    for _ in range(rng.randrange(12)):
        allowed = np.flatnonzero(a.next_state[state] >= 0).tolist()
        if not allowed:  # a final state with nothing after it
            break
        walk.append(rng.choice(allowed))
        state = int(a.next_state[state, walk[-1]])
    candidates = [walk]
    for _ in range(3):
        if walk:
            mutated = list(walk)
            mutated[rng.randrange(len(walk))] = rng.choice([rng.randrange(5, V), *walk])
            candidates.append(mutated)
    for seq in candidates:
        data = b"".join(token_bytes(TOKENIZER, t) for t in seq)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            assert not accepts(a, seq)
            continue
        if not python_knows(text):
            continue
        matches = re.fullmatch(pattern, text) is not None
        assert accepts(a, seq) == matches, (pattern, seq, data)


# ------------------------------------------------------------------------------------------ compile_target


def test_compile_target_dispatches_to_the_same_cached_automata():
    schema = SCHEMAS[0]
    assert compile_target(("regex", REGEXES[0]), TOKENIZER, EOS, SPECIALS) is regex(REGEXES[0])
    by_text = compile_target(("json_schema", json.dumps(schema)), TOKENIZER, EOS, SPECIALS)
    assert by_text is compile_json_schema(schema, TOKENIZER, EOS, SPECIALS)
    by_list = compile_target(("choices", json.dumps(CHOICES)), TOKENIZER, EOS, SPECIALS)
    assert by_list is compile_choices(CHOICES, TOKENIZER, EOS, SPECIALS)
    assert accepts(by_list, TOKENIZER.encode("maybe so", add_special_tokens=False).ids)
    # A canvas round-trips targets through JSON as lists: a 2-list works like the tuple.
    assert compile_target(["regex", REGEXES[0]], TOKENIZER, EOS, SPECIALS) is regex(REGEXES[0])


@pytest.mark.parametrize("target,message", [
    (("json_schema", "{not json"), "json_schema target is not valid JSON"),
    (("json_schema", "[1, 2]"), "JSON schema must be an object"),
    (("json_schema", '{"type": "nonsense"}'), "JSON schema"),
    (("choices", "yes"), "choices target is not valid JSON"),
    (("choices", '"yes"'), "non-empty list of strings"),
    (("choices", "[]"), "non-empty list of strings"),
    (("choices", '["a", 1]'), "non-empty list of strings"),
    (("choices", ["a", "b"]), "must be JSON text"),
    (("regex", "a("), "invalid regex"),
    (("grammar", "x"), "unknown target kind"),
    (("regex",), "pair"),
    (None, "pair"),
])
def test_compile_target_rejects_bad_targets(target, message):
    with pytest.raises(ConstraintError, match=message):
        compile_target(target, TOKENIZER, EOS, SPECIALS)


def test_importing_the_module_does_not_import_torch():
    """The API process imports constraints.automaton and must stay light: no torch."""
    code = "import redraft.constraints.automaton, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_a_refused_target_leaves_nothing_in_the_cache_and_the_cache_is_bounded_by_bytes(monkeypatch):
    """Issue 12: the cache kept the tables of requests refused after compiling (~255 MB each at 262k tokens)."""
    from redraft.constraints.generate import compile_generate
    from redraft.constraints.templates import make_slot

    def cached() -> list:
        return [a for per_tok in automaton_module._automata.values() for a in per_tok.values()]

    pattern = "[0-9]{40}q"  # unlikely to be compiled by any other test
    slot = make_slot("answer", 4, regex=pattern, limit=256)
    with pytest.raises(ConstraintError, match="needs"):
        compile_generate(["x ", slot], TOKENIZER, INFO)
    assert all(a.pattern != pattern and pattern not in a.pattern for a in cached())
    # Bytes: with a budget smaller than two automata, compiling a second one evicts the first.
    monkeypatch.setattr(automaton_module, "_CACHE_BYTES", 1)
    first = compile_regex("[a-c]{3}z", TOKENIZER, EOS, SPECIALS)
    compile_regex("[d-f]{3}z", TOKENIZER, EOS, SPECIALS)
    assert all(a is not first for a in cached()) and len(cached()) >= 1


def test_what_cached_automata_hold_after_their_compile_is_held_within_the_byte_budget(monkeypatch):
    """What the slot decoder keeps for an automaton (its copies per device, committed tokens' moves) grows after
    the automaton was cached, with no compile to trim the cache: the cache is trimmed when something is held, and
    when a job takes an automaton from it."""
    import weakref

    def cached() -> list:
        return [a for per_tok in automaton_module._automata.values() for a in per_tok.values()]

    # A cache of this test's own: the least recently used entries of one shared with earlier tests would go first.
    monkeypatch.setattr(automaton_module, "_automata", weakref.WeakKeyDictionary())
    older = compile_regex("[g-i]{3}y", TOKENIZER, EOS, SPECIALS)
    newer = compile_regex("[j-l]{3}y", TOKENIZER, EOS, SPECIALS)
    monkeypatch.setattr(automaton_module, "_CACHE_BYTES", automaton_module._cached_bytes() + 1000)
    assert older in cached() and newer in cached()
    grown = [0]
    older.hold("test", lambda: grown[0])
    assert older in cached()  # still within the budget
    grown[0] = 2000  # grows with no call here (as the kept moves do) ...
    assert compile_regex("[j-l]{3}y", TOKENIZER, EOS, SPECIALS) is newer  # ... until a job takes an automaton
    assert older not in cached() and newer in cached()
    assert compile_regex("[g-i]{3}y", TOKENIZER, EOS, SPECIALS) is not older  # compiled again when asked for
    again = compile_regex("[g-i]{3}y", TOKENIZER, EOS, SPECIALS)
    monkeypatch.setattr(automaton_module, "_CACHE_BYTES", automaton_module._cached_bytes() + 1000)
    again.hold("test", lambda: 10_000)  # a hold past the budget trims at once: the least recently used goes
    assert again in cached() and newer not in cached()



@pytest.mark.parametrize("target", [("regex", REGEXES[4]), ("json_schema", json.dumps(SCHEMAS[2])),
                                    ("choices", json.dumps(CHOICES))])
def test_a_model_without_an_eos_token_gets_the_same_automaton(target):
    # outlines-core needs an EOS id; a model whose config names none must not turn a target into a crash.
    # The EOS token is excluded from the edges either way, so the two differ only where EOS would be read.
    without = compile_target(target, TOKENIZER, None, SPECIALS)
    with_eos = compile_target(target, TOKENIZER, EOS, SPECIALS)
    assert (without.n_states, without.initial) == (with_eos.n_states, with_eos.initial)
    assert np.array_equal(without.final, with_eos.final)
    for field in ("src", "dst", "cls", "offsets"):
        assert np.array_equal(getattr(without.classes, field), getattr(with_eos.classes, field)), field
    kept = np.isin(with_eos.classes.tokens, [EOS], invert=True)
    assert np.array_equal(without.classes.tokens[np.isin(without.classes.tokens, [EOS], invert=True)],
                          with_eos.classes.tokens[kept])
    for text in ("maybe", "maybe so", '"red"', "3", "nope", "yes"):
        ids = TOKENIZER.encode(text, add_special_tokens=False).ids
        assert accepts(without, ids) == accepts(with_eos, ids), text
