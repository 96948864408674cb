"""The slot decoder (``redraft.workers.slot_decoder.best_path``) on Redraft's real tokenizer; the automata,
the tokenizer and the text checks come from tests/constraints/test_automaton.py."""

from __future__ import annotations

import gc
import itertools
import json
import os
import re
import weakref
from unittest import mock

import jsonschema
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.constraints import budget
from redraft.constraints.automaton import (
    TokenAutomaton,
    compile_choices,
    compile_json_schema,
    compile_regex,
    min_length_tokens,
    require_fits,
)
from redraft.errors import ConstraintError
from redraft.families import token_bytes
from redraft.settings import get_settings
from redraft.workers import slot_decoder
from redraft.workers.slot_decoder import best_path
from tests.constraints.test_automaton import (
    CHOICES,
    EMPTY,
    EOS,
    INFO,
    REGEXES,
    SCHEMAS,
    SLOW,
    SPECIALS,
    TOKENIZER,
    V,
    check,
    regex,
    seeds,
    text_of,
)


def random_logp(seed: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(n, V, generator=g)).log_softmax(-1)  # (n, V)


def free_score(path: list[int], logp: torch.Tensor, committed: list[int | None]) -> float:
    return sum(float(logp[i, t]) for i, t in enumerate(path) if committed[i] is None)


def test_device_tensors_are_cached_per_automaton():
    """Repeated calls (one per denoising step) reuse the torch copies; they die with the automaton."""
    a = compile_regex(r"(q|r){1,3}zz", TOKENIZER, EOS, SPECIALS)
    g = slot_decoder.pairs(a)
    assert slot_decoder.pairs(a) is slot_decoder.pairs(a, torch.device("cpu"))
    assert g.src.dtype == g.dst.dtype == g.cls.dtype == g.tokens.dtype == torch.int64
    # The pairs and their classes spell exactly the table's edges, each once.
    edges = sorted((s, t, d) for s, d, k in zip(g.src.tolist(), g.dst.tolist(), g.cls.tolist())
                   for t in g.tokens[g.class_of == k].tolist())
    src, tok = np.nonzero(a.next_state >= 0)
    assert edges == sorted(zip(src.tolist(), tok.tolist(), a.next_state[src, tok].tolist()))
    # What a committed position reads: exactly the table's column of that token.
    for t in {tok_ for _, tok_, _ in edges}:
        reading = a.pairs_reading(t)
        assert sorted(zip(g.src[reading].tolist(), g.dst[reading].tolist())) == \
            [(s, int(a.next_state[s, t])) for s in range(a.n_states) if a.next_state[s, t] >= 0]
    # R, what the DP budget counts for a committed position: the most pairs one token is read by.
    assert a.classes.max_reading == max(a.pairs_reading(t).size for t in range(V))
    path = best_path(a, random_logp(0, 4), [None] * 4, EMPTY)
    check(a, path, 4, [None] * 4)
    assert a in slot_decoder._pairs

    # An automaton built by hand (outside the compile cache): its cached tensors go when it does.
    table = np.full((1, V), -1, dtype=np.int32)
    table[0, TOKENIZER.token_to_id("q")] = 0
    loop = TokenAutomaton(pattern="q*", n_states=1, initial=0, final=np.ones(1, dtype=np.bool_), next_state=table)
    before = len(slot_decoder._pairs)
    assert best_path(loop, random_logp(1, 3), [None] * 3, EMPTY) is not None
    assert len(slot_decoder._pairs) == before + 1
    gone = weakref.ref(loop)
    del loop
    gc.collect()
    assert gone() is None
    assert len(slot_decoder._pairs) == before


# ------------------------------------------------------------------------------------------ best_path


@SLOW
@given(pattern=st.sampled_from(REGEXES), seed=seeds, extra=st.integers(0, 6), data=st.data())
def test_best_path_matches_and_keeps_commits(pattern, seed, extra, data):
    a = regex(pattern)
    n = min_length_tokens(a) + extra
    free = [None] * n
    path = best_path(a, random_logp(seed, n), free, EMPTY)
    check(a, path, n, free)

    keep = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    committed = [t if k else None for t, k in zip(path, keep)]
    logp = random_logp(seed + 1, n)
    again = best_path(a, logp, committed, EMPTY)
    check(a, again, n, committed)
    # The old path is still feasible, so the new optimum is at least as good under the new logp.
    assert free_score(again, logp, committed) >= free_score(path, logp, committed) - 1e-9


@settings(max_examples=15, deadline=None)
@given(schema=st.sampled_from(SCHEMAS), seed=seeds)
def test_json_schema_output_validates(schema, seed):
    a = compile_json_schema(schema, TOKENIZER, EOS, SPECIALS)
    n = min_length_tokens(a) + 4
    path = best_path(a, random_logp(seed, n), [None] * n, EMPTY)
    value = json.loads(check(a, path, n, [None] * n))
    jsonschema.validate(value, schema)


@settings(max_examples=15, deadline=None)
@given(seed=seeds, n=st.integers(4, 8))
def test_choices_output_is_a_choice(seed, n):
    a = compile_choices(CHOICES, TOKENIZER, EOS, SPECIALS)
    path = best_path(a, random_logp(seed, n), [None] * n, EMPTY)
    assert text_of(path) in CHOICES


@pytest.mark.parametrize("pattern", REGEXES)
def test_slot_too_short(pattern):
    a = regex(pattern)
    k = min_length_tokens(a)
    assert k >= 1
    assert best_path(a, random_logp(0, k - 1), [None] * (k - 1), EMPTY) is None
    with pytest.raises(ConstraintError, match=f"needs {k} tokens but the slot has {k - 1}"):
        require_fits(a, k - 1)
    require_fits(a, k)
    path = best_path(a, random_logp(0, k), [None] * k, EMPTY)
    check(a, path, k, [None] * k)
    assert EMPTY not in path  # exactly k real tokens: no accepted sequence is shorter


@settings(max_examples=15, deadline=None)
@given(seed=seeds, min_tokens=st.integers(0, 7))
def test_min_tokens(seed, min_tokens):
    a = regex(r"[a-z]{1,8}")
    path = best_path(a, random_logp(seed, 6), [None] * 6, EMPTY, min_tokens=min_tokens)
    if min_tokens > 6:
        assert path is None
    else:
        check(a, path, 6, [None] * 6)
        assert len(path) - path.count(EMPTY) >= min_tokens


def test_impossible_commits_return_none():
    a = regex(r"[a-z]{1,8}")
    x = TOKENIZER.token_to_id("x")
    logp = random_logp(1, 4)
    assert best_path(a, logp, [None, EMPTY, x, None], EMPTY) is None  # real token after EMPTY
    assert best_path(a, logp, [EMPTY, None, None, None], EMPTY) is None  # empty match not allowed
    assert best_path(a, logp, [None, INFO.mask_id, None, None], EMPTY) is None  # special token
    assert best_path(a, logp, [None, TOKENIZER.token_to_id("1"), None, None], EMPTY) is None
    assert best_path(compile_choices(["", "a"], TOKENIZER, EOS, SPECIALS), logp, [EMPTY] * 4, EMPTY) == [EMPTY] * 4
    assert best_path(a, logp[:0], [], EMPTY) is None
    everything_banned = torch.full((4, V), float("-inf"))
    assert best_path(a, everything_banned, [x, None, None, None], EMPTY) is None
    assert best_path(a, everything_banned, [x, EMPTY, EMPTY, EMPTY], EMPTY) == [x, EMPTY, EMPTY, EMPTY]


@settings(max_examples=20, deadline=None)
@given(pattern=st.sampled_from(REGEXES), seed=seeds, extra=st.integers(0, 4), shift=st.floats(-50, 50), data=st.data())
def test_logits_do_as_well_as_log_probabilities(pattern, seed, extra, shift, data):
    """Each position adds one term to a path's score, so per-position constants (the log-softmax normaliser, any
    shift) leave the best path's score unchanged: the processor hands the DP raw logits."""
    a = regex(pattern)
    n = min_length_tokens(a) + extra
    logits = 3 * torch.randn(n, V, generator=torch.Generator().manual_seed(seed))
    logits += shift * torch.rand(n, 1, generator=torch.Generator().manual_seed(seed + 1))  # a constant per position
    committed = [None] * n
    if n:
        first = best_path(a, logits.log_softmax(-1), committed, EMPTY)
        keep = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
        committed = [t if k else None for t, k in zip(first, keep)]
    logp = logits.log_softmax(-1)
    from_logits, from_logp = best_path(a, logits, committed, EMPTY), best_path(a, logp, committed, EMPTY)
    check(a, from_logits, n, committed)
    assert free_score(from_logits, logp, committed) == pytest.approx(free_score(from_logp, logp, committed), abs=1e-4)


@settings(max_examples=20, deadline=None)
@given(picks=st.lists(st.tuples(st.sampled_from(REGEXES), st.integers(0, 5), st.integers(0, 3)), min_size=1,
                      max_size=5), seed=seeds, data=st.data())
def test_slots_decoded_side_by_side_get_the_paths_they_get_alone(picks, seed, data):
    """A row's slots run as one DP over their automata side by side (best_paths): each gets exactly the path it
    gets alone, whatever the other slots' lengths, commits and minimum lengths."""
    queries = []
    for k, (pattern, extra, min_tokens) in enumerate(picks):
        a = regex(pattern)
        n = min_length_tokens(a) + extra
        logp = random_logp(seed + k, n)
        committed = [None] * n
        first = best_path(a, logp, committed, EMPTY)
        if first is not None and n:
            keep = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
            committed = [t if kept else None for t, kept in zip(first, keep)]
        queries.append((a, random_logp(seed + 100 + k, n), committed, EMPTY, min(min_tokens, n + 1)))
    together = slot_decoder.best_paths(queries)
    assert together == [best_path(*q) for q in queries]


@settings(max_examples=25, deadline=None)
@given(pattern=st.sampled_from(REGEXES),
       slots=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3), st.floats(0, 1)), min_size=2, max_size=10),
       seed=seeds, budget_mib=st.sampled_from([None, 1, 2]), data=st.data())
def test_a_groups_slots_of_one_automaton_get_the_paths_they_get_alone(pattern, slots, seed, budget_mib, data):
    """The slots of one automaton (a length group's rows, each with the same target) are one DP: each position
    relaxes the free slots' moves together and the committed slots' token moves as one flat scatter, in chunks
    within the DP budget. Each slot gets exactly the path it gets alone, whatever the lengths, the commits (EMPTY
    ones too), the minimum lengths and the chunking."""
    a = regex(pattern)
    queries = []
    for k, (extra, min_tokens, share) in enumerate(slots):
        n = min_length_tokens(a) + extra
        first = best_path(a, random_logp(seed + k, n), [None] * n, EMPTY)
        committed = [None] * n
        if first is not None and n:
            keep = data.draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
            committed = [t if u < share else None for t, u in zip(first, keep)]
        queries.append((a, random_logp(seed + 100 + k, n), committed, EMPTY, min(min_tokens, n + 1)))
    alone = [best_path(*q) for q in queries]
    env = {} if budget_mib is None else {"REDRAFT_MAX_DP_BYTES": str(budget_mib * 2**20)}
    with mock.patch.dict(os.environ, env):
        get_settings.cache_clear()
        try:
            together = slot_decoder.best_paths(queries)
            with mock.patch.object(slot_decoder, "_DEVICE_WAY", True):  # a GPU's ways: class maxima, picking tokens
                device_way = slot_decoder.best_paths(queries)
        finally:
            get_settings.cache_clear()
    assert together == alone == device_way
    for (_, _, committed, _, min_tokens), path in zip(queries, together):
        if path is not None:
            check(a, path, len(committed), committed)
            assert len(path) - path.count(EMPTY) >= min_tokens


@settings(max_examples=30, deadline=None)
@given(pattern=st.sampled_from(REGEXES), seed=seeds, extra=st.integers(0, 4), levels=st.integers(1, 3),
       data=st.data())
def test_ties_go_to_the_lowest_token_that_makes_the_same_move(pattern, seed, extra, levels, data):
    """With logits on a few levels (ties everywhere), each free real token is the lowest id that scores the same
    there and makes the same move: no lower token of its class at that position ties it (on the host's way of
    picking tokens and on a device's)."""
    a = regex(pattern)
    n = min_length_tokens(a) + extra
    g = torch.Generator().manual_seed(seed)
    logp = torch.randint(0, levels, (n, V), generator=g).float()  # (n, V)
    first = best_path(a, logp, [None] * n, EMPTY)
    keep = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    committed = [t if kept and t is not None else None for t, kept in zip(first or [None] * n, keep)]
    path = best_path(a, logp, committed, EMPTY)
    with mock.patch.object(slot_decoder, "_DEVICE_WAY", True):
        assert best_path(a, logp, committed, EMPTY) == path
    check(a, path, n, committed)
    state = a.initial
    for i, t in enumerate(path):
        if t == EMPTY:
            break
        nxt = a.step(state, t)
        if committed[i] is None:
            same = [u for u in range(t) if logp[i, u] == logp[i, t] and a.step(state, u) == nxt]
            assert not same, (i, t, same[:5])
        state = nxt


def test_deferred_copies_are_made_one_at_a_time_and_chunks_stay_within_the_budget():
    """A slot partly outside the logits' window passes a deferred copy of its logits: the decoder makes it when the
    slot's chunk is prepared, and no earlier copy is alive by then; with a budget that fits two slots, no chunk
    holds more than two. The paths are those of the same tensors given directly."""
    a = regex(r"[a-z]{1,8}@[a-z]{1,8}\.(com|org)")
    n = min_length_tokens(a) + 3
    tensors = [random_logp(k, n) for k in range(6)]
    made: list[weakref.ref] = []
    alive_at_make: list[int] = []

    def make(k):
        alive_at_make.append(sum(r() is not None for r in made))
        t = tensors[k].clone()
        made.append(weakref.ref(t))
        return t

    queries = [(a, slot_decoder.Deferred(lambda k=k: make(k), 4 * n * V, torch.device("cpu")), [None] * n, EMPTY, 0)
               for k in range(6)]
    each = budget.dp_step_bytes(n, a.classes.n_class_tokens, a.classes.n_pairs, a.n_states, a.max_committed_moves)
    chunks: list[int] = []
    solve = slot_decoder._solve
    with mock.patch.dict(os.environ, {"REDRAFT_MAX_DP_BYTES": str(max(2**20, 2 * (each + 4 * n * V)))}), \
            mock.patch.object(slot_decoder, "_solve", lambda slots: chunks.append(len(slots)) or solve(slots)):
        get_settings.cache_clear()
        try:
            paths = slot_decoder.best_paths(queries)
        finally:
            get_settings.cache_clear()
    assert paths == [best_path(a, t, [None] * n, EMPTY) for t in tensors]
    assert alive_at_make == [0] * 6
    assert sum(chunks) == 6 and max(chunks) == 2


def test_a_thousand_letters_in_256_positions():
    """2.5M edges, 11 token classes: the DP reads the classes, and the path spells exactly 1000 letters."""
    a = regex("[a-z]{1000}")
    free = [None] * 256
    path = best_path(a, random_logp(0, 256), free, EMPTY)
    assert re.fullmatch("[a-z]{1000}", check(a, path, 256, free))


# Tiny alphabet for brute force: digits with a two-digit token, "-", a letter, and EMPTY.
ALPHABET = [TOKENIZER.token_to_id(s) for s in ["1", "2", "12", "-", "3", "a"]] + [EMPTY]
BRUTE_PATTERNS = [r"[0-9]{1,3}(-[0-9])?", r"(12|3)+a?", r"1?2?-?3?", r"(1|12)(-3)?"]


@SLOW
@given(pattern=st.sampled_from(BRUTE_PATTERNS), seed=seeds, n=st.integers(1, 4), min_tokens=st.integers(0, 3),
       data=st.data())
def test_best_path_is_the_maximum(pattern, seed, n, min_tokens, data):
    """Against exhaustive enumeration over a restricted vocabulary (other tokens' logp is -inf)."""
    a = regex(pattern)
    logp = torch.full((n, V), float("-inf"))
    logp[:, ALPHABET] = torch.randn(n, len(ALPHABET), generator=torch.Generator().manual_seed(seed))
    committed = data.draw(st.lists(st.one_of(st.none(), st.sampled_from(ALPHABET)), min_size=n, max_size=n))

    best, best_score = None, float("-inf")
    for seq in itertools.product(ALPHABET, repeat=n):
        k = seq.index(EMPTY) if EMPTY in seq else n
        if any(t != EMPTY for t in seq[k:]) or k < min_tokens:
            continue
        if any(c is not None and seq[i] != c for i, c in enumerate(committed)):
            continue
        text = b"".join(token_bytes(TOKENIZER, t) for t in seq[:k]).decode()
        if re.fullmatch(pattern, text):
            score = free_score(list(seq), logp, committed)
            if score > best_score:
                best, best_score = list(seq), score

    path = best_path(a, logp, committed, EMPTY, min_tokens=min_tokens)
    if best is None:
        assert path is None
    else:
        check(a, path, n, committed)
        assert len(path) - path.count(EMPTY) >= min_tokens
        assert free_score(path, logp, committed) == pytest.approx(best_score, abs=1e-6)


@settings(max_examples=20, deadline=None)
@given(limit=st.sampled_from([0, 2_000, 20_000, 2**40]), steps=st.integers(1, 4), seed=seeds, data=st.data())
def test_the_committed_tokens_moves_kept_stay_within_their_limit_and_the_paths_do_not_change(limit, steps, seed,
                                                                                              data):
    """Each step of a run commits more tokens; the moves kept for them between calls (``CommittedMoves``) stay
    within the limit (least recently read first out), a call still reads every move it needs, and the paths are the
    ones found with nothing dropped."""
    a = regex("[a-z]{40}")  # a letter is read from 40 states: 640 bytes of moves a token
    n = 24
    first = best_path(a, random_logp(seed, n), [None] * n, EMPTY)
    moves = slot_decoder.pairs(a).by_token
    keep = data.draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
    for step in range(1, steps + 1):
        committed = [t if u < step / (steps + 1) else None for t, u in zip(first, keep)]
        queries = [(a, random_logp(seed + 10 * step + k, n), committed, EMPTY) for k in range(2)]
        with mock.patch.object(moves, "limit", limit):
            bounded = slot_decoder.best_paths(queries)
            assert moves.nbytes <= limit
            assert moves.nbytes == sum(s.nbytes + d.nbytes for s, d in moves._kept.values())
        with mock.patch.object(moves, "limit", 2**40):  # nothing dropped: every token's moves kept from now on
            assert bounded == slot_decoder.best_paths(queries)
            assert set(moves._kept) >= {t for t in committed if t is not None and t != EMPTY}
        for path in bounded:
            check(a, path, n, committed)


def test_what_the_decoder_keeps_for_an_automaton_counts_in_its_bytes():
    """The compile cache's byte budget reads ``TokenAutomaton.nbytes``: the decoder's copies of an automaton (per
    device) and the committed tokens' moves it keeps count there, as do the lookup tables once built."""
    letters = [TOKENIZER.token_to_id(c) for c in "abc"]
    table = np.full((3, V), -1, dtype=np.int32)
    for s in range(3):
        table[s, letters] = min(s + 1, 2)
    a = TokenAutomaton(pattern="[abc]{2,}", n_states=3, initial=0, final=np.array([False, False, True]),
                       next_state=table)
    bare = a.nbytes
    a.pairs_reading(letters[0])  # the lookup tables
    assert a.nbytes > bare
    looked_up = a.nbytes
    g = slot_decoder.pairs(a)
    copies = sum(t.numel() * t.element_size() for t in (g.src, g.dst, g.cls, g.tokens, g.class_of))
    assert a.nbytes - looked_up >= copies
    with_pairs = a.nbytes
    assert g.by_token.nbytes == 0
    path = best_path(a, random_logp(2, 5), [letters[1], None, letters[2], None, None], EMPTY)
    assert path is not None and g.by_token.nbytes > 0
    assert a.nbytes - with_pairs == g.by_token.nbytes
