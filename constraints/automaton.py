"""Token automata for constrained slots: regex / JSON schema / choices -> DFA over token ids.

A constrained slot is a run of ``n`` canvas positions whose text must fullmatch a regex (or a JSON
schema, or one of a list of choices). Unused positions hold the EMPTY token, which is dropped from
the text and may only come after the last real token. Tokens are committed in any order, so the
decoder does not walk left to right: it finds the best *whole-slot* assignment consistent with the
positions committed so far (``redraft.workers.slot_decoder.best_path``, the torch side).

Compilation (slow, cached per (kind, spec, tokenizer)) uses outlines-core: the regex becomes a DFA
over bytes, walked by every token's exact bytes. A JSON schema is first prepared by
:mod:`redraft.constraints.json_schema` (refused where outlines-core would not enforce it, rewritten where it would
write it wrongly); its strings' patterns and formats are checked in the bounded build
(``_check_string_contents``). The result is kept as :class:`EdgeClasses`: the (source, destination) state
pairs and the distinct token sets they read, a few MB even at V = 262,144 where a dense ``(S, V)`` table
would take hundreds (it is built only when asked for, ``next_state``); capped at ``MAX_STATES`` states and
``MAX_TABLE_ENTRIES`` entries.
Special tokens (and EOS, and the tokenizer's added special tokens, EMPTY among them) are never
real tokens: their columns are -1. outlines-core 0.2.14's index drops some valid transitions; the
compiler works around it with an end marker (see ``_END_BYTES``), and the tests check acceptance
against Python's ``re.fullmatch``.

Budgets (``redraft.constraints.budget``): cheap checks refuse a target before construction (regex length, schema
depth, alternatives, an automaton size estimated from the parse); the construction itself (outlines-core's
index, the schema's regex, the pruning) runs in a forked child under a wall-clock and a memory budget and
hands back the grouped transitions (its token classes). ``compile_clock`` (there)
reports the time compiles take; ``TokenAutomaton.compile_seconds`` is one automaton's.

Torch-free (numpy only): imported by the API at submission (``compile_target``, ``require_fits``)
and by the workers. Never import torch here.
"""

from __future__ import annotations

import json
import re
import threading
import time
import weakref
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import outlines_core
from outlines_core.json_schema import build_regex_from_schema
from tokenizers import Tokenizer

from redraft.constraints.budget import (
    check_choices,
    check_pattern,
    check_schema_depth,
    require_dp_fits,
    run_bounded,
    shown,
    timed_compile,
)
from redraft.constraints.json_schema import prepare, string_contents, strip_anchors, unsafe_contents
from redraft.errors import ConstraintError
from redraft.families import token_bytes
from redraft.settings import get_settings

MAX_STATES = 8192  # automaton states (after pruning); its byte automaton is checked against twice this first
MAX_TABLE_ENTRIES = 64 * 1024 * 1024  # entries the automaton keeps: its classes' tokens plus 3 per pair (int32)
_CACHE_SIZE = 256  # compiled automata kept per tokenizer ...
_CACHE_BYTES = 1024 * 1024 * 1024  # ... and at most this many bytes of tables in all (least recently used go first)


class TokenAutomaton:
    """A DFA over token ids. Every state can still reach a final state (dead states are pruned).

    Held as :class:`EdgeClasses` (what the slot decoder reads: compact at any vocabulary size); the dense
    ``next_state`` table ``(S, V)`` is built only when asked for (tests, small vocabularies; never by the
    decoder or the API). Compared by identity and weak-referenceable: the workers cache per-device torch
    copies keyed by the automaton (``redraft.workers.slot_decoder``).
    """

    def __init__(self, pattern: str, n_states: int, initial: int, final: np.ndarray,
                 next_state: np.ndarray | None = None, classes: EdgeClasses | None = None,
                 vocab_size: int | None = None, compile_seconds: float = 0.0) -> None:
        if next_state is None and (classes is None or vocab_size is None):
            raise ValueError("a token automaton needs its table, or its classes and vocabulary size")
        self.pattern = pattern  # the regex it was compiled from
        self.n_states = n_states  # S
        self.initial = initial  # always 0
        self.final = final  # (S,) bool
        self._next_state = next_state  # (S, V) int32, -1: not allowed; None until asked for
        self._classes = classes
        self._vocab_size = int(next_state.shape[1]) if next_state is not None else int(vocab_size)
        self.compile_seconds = compile_seconds  # wall-clock time its compile took
        self._min_length: int | None = None
        self._lookup: tuple[np.ndarray, ...] | None = None
        # What other modules keep on this automaton's behalf (the slot decoder's copies per device), by key: a
        # function giving its bytes now, counted by ``nbytes``.
        self._held: dict[str, Callable[[], int]] = {}

    def __repr__(self) -> str:
        return f"TokenAutomaton(pattern={self.pattern!r}, n_states={self.n_states}, initial={self.initial})"

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def classes(self) -> EdgeClasses:
        """The transitions grouped as the slot decoder reads them (built by the compile, or here on first use)."""
        if self._classes is None:
            src, tok = np.nonzero(self._next_state >= 0)  # (E,) each
            self._classes = edge_classes(src, tok, self._next_state[src, tok])
        return self._classes

    @property
    def next_state(self) -> np.ndarray:
        """The dense table (S, V) int32, -1 where a token is not allowed: built from the classes on first use."""
        if self._next_state is None:
            c = self.classes
            table = np.full((self.n_states, self.vocab_size), -1, dtype=np.int32)
            lengths = np.diff(c.offsets)[c.cls]  # (P,) tokens each pair reads
            table[np.repeat(c.src, lengths), c.tokens[_pair_token_index(c)]] = np.repeat(c.dst, lengths)
            self._next_state = table
        return self._next_state

    @property
    def n_edges(self) -> int:
        """E, the allowed (state, token) pairs (what the decoder would read without token classes)."""
        c = self.classes
        return int(np.diff(c.offsets)[c.cls].sum())

    @property
    def nbytes(self) -> int:
        """The bytes kept for this automaton, what the compile cache's byte budget counts: its classes, the dense
        table and the lookup tables once built, and what other modules keep for it (``hold``)."""
        built = [self._next_state] if self._next_state is not None else []
        built += list(self._lookup) if self._lookup is not None else []
        return int(self.classes.nbytes + sum(a.nbytes for a in built) + sum(f() for f in list(self._held.values())))

    def hold(self, key: str, nbytes: Callable[[], int]) -> None:
        """Count in ``nbytes`` what ``nbytes()`` says another module keeps for this automaton, under ``key``; the
        compile cache is brought back within its byte budget (what is held grows after the automaton was cached)."""
        self._held[key] = nbytes
        _fit_all()

    @property
    def max_committed_moves(self) -> int:
        """The most moves a committed position relaxes in the slot decoder: the pairs reading one token
        (:attr:`EdgeClasses.max_reading`), or EMPTY's endings (each final state's, and the ended state's own)."""
        return max(self.classes.max_reading, int(np.count_nonzero(self.final)) + 1)

    def pairs_reading(self, token: int) -> np.ndarray:
        """The pairs (indices into ``classes``) whose class holds ``token``, ascending."""
        class_ptr, class_pairs, token_ptr, token_classes = self._tables()
        if not 0 <= token < self.vocab_size:
            return np.zeros(0, dtype=np.int64)
        ks = token_classes[token_ptr[token]:token_ptr[token + 1]]
        if ks.size == 0:
            return np.zeros(0, dtype=np.int64)
        return np.sort(np.concatenate([class_pairs[class_ptr[k]:class_ptr[k + 1]] for k in ks]))

    def step(self, state: int, token: int) -> int:
        """The state ``token`` leads to from ``state``, or -1."""
        p = self.pairs_reading(token)
        hit = p[self.classes.src[p] == state]
        return int(self.classes.dst[hit[0]]) if hit.size else -1

    def _tables(self) -> tuple[np.ndarray, ...]:
        """(class -> pairs) and (token -> classes) as CSR arrays, built once."""
        if self._lookup is None:
            c = self.classes
            by_class = np.argsort(c.cls, kind="stable")
            class_ptr = np.zeros(c.n_classes + 1, dtype=np.int64)
            np.cumsum(np.bincount(c.cls, minlength=c.n_classes), out=class_ptr[1:])
            class_of = np.repeat(np.arange(c.n_classes), np.diff(c.offsets))  # (M,)
            by_token = np.argsort(c.tokens, kind="stable")
            token_ptr = np.zeros(self.vocab_size + 1, dtype=np.int64)
            np.cumsum(np.bincount(c.tokens, minlength=self.vocab_size), out=token_ptr[1:])
            self._lookup = (class_ptr, by_class, token_ptr, class_of[by_token])
        return self._lookup


def _pair_token_index(c: EdgeClasses) -> np.ndarray:
    """For every edge, pair after pair, its index into ``c.tokens``."""
    lengths = np.diff(c.offsets)[c.cls]  # (P,)
    starts = c.offsets[c.cls]  # (P,)
    return np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(int(lengths.sum()))


@dataclass(frozen=True, eq=False)
class EdgeClasses:
    """An automaton's transitions as (source, destination) *pairs*, each reading a *token class*.

    The slot decoder's step costs what it reads: scoring every (state, token) edge at every position is
    ``n * E`` (E reaches ``S * V`` where a state admits most tokens, as inside a JSON string). But the edges
    between two states form a token set, and few distinct sets recur across the automaton (in a string of at
    most 45 characters, "one more character" is the same set of tokens from each of the 45 states). So a
    position first takes the best token of each distinct class (``n * M`` reads, ``M`` = the classes' sizes
    summed, at most E), then relaxes the ``P`` pairs with those maxima: the same optimum, exactly.

    Classes are identical token sets (found by two 64-bit fingerprints per pair, then checked token by token:
    a fingerprint collision only splits a class, it never merges two). Pairs are sorted by (src, dst), a
    class's tokens ascending; ties in the decoder go to the lowest pair, then the lowest token.
    """

    src: np.ndarray  # (P,) int32 each pair's source state
    dst: np.ndarray  # (P,) int32 its destination
    cls: np.ndarray  # (P,) int32 the class of tokens it reads
    tokens: np.ndarray  # (M,) int32 the classes' tokens, class after class, ascending within each
    offsets: np.ndarray  # (K+1,) int64 class k is tokens[offsets[k]:offsets[k+1]]

    @property
    def n_pairs(self) -> int:
        return int(self.src.shape[0])

    @property
    def n_class_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.offsets.shape[0] - 1)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.src, self.dst, self.cls, self.tokens, self.offsets)))

    @cached_property
    def max_reading(self) -> int:
        """R, the most pairs that read one token (what a committed position relaxes at most)."""
        if not self.tokens.size:
            return 0
        per_class = np.bincount(self.cls, minlength=self.n_classes)  # (K,) pairs of each class
        class_of = np.repeat(np.arange(self.n_classes), np.diff(self.offsets))  # (M,)
        return int(np.bincount(self.tokens, weights=per_class[class_of]).max())


def edge_classes(src: np.ndarray, tok: np.ndarray, dst: np.ndarray) -> EdgeClasses:
    """Group the transitions ``(src, tok, dst)`` (E,) each, in any order, into :class:`EdgeClasses`."""
    src, tok, dst = (np.asarray(a, dtype=np.int64) for a in (src, tok, dst))
    E = int(src.shape[0])
    if E == 0:
        empty = np.zeros(0, dtype=np.int32)
        return EdgeClasses(empty, empty, empty, empty, np.zeros(1, dtype=np.int64))
    order = np.lexsort((tok, dst, src))  # by pair (src, dst), tokens ascending inside a pair
    src, tok, dst = src[order], tok[order], dst[order]
    new_pair = np.ones(E, dtype=np.bool_)
    new_pair[1:] = (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])
    starts = np.flatnonzero(new_pair)  # (P,) first edge of each pair
    counts = np.diff(np.append(starts, E))  # (P,) tokens of each pair
    # Fingerprints of each pair's token set: sums (mod 2^64) of fixed random values per token, two of them.
    h = np.random.default_rng(0x5EED).integers(0, 2**63, size=(2, int(tok.max()) + 1), dtype=np.uint64)
    with np.errstate(over="ignore"):
        keys = np.stack([counts.astype(np.uint64), np.add.reduceat(h[0][tok], starts),
                         np.add.reduceat(h[1][tok], starts)], axis=1)  # (P, 3)
    _, first, cls = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    cls = cls.reshape(-1)
    # Check each pair against its class's first pair, token by token; a pair that differs gets a class of its own.
    rep = first[cls]  # (P,) the pair whose tokens stand for the class
    within = np.arange(E) - np.repeat(starts, counts)  # (E,) index of each edge inside its pair
    edge_pair = np.repeat(np.arange(starts.shape[0]), counts)  # (E,)
    same = tok == tok[starts[rep[edge_pair]] + within]  # (E,)
    differs = np.unique(edge_pair[~same])
    if differs.size:
        cls[differs] = first.shape[0] + np.arange(differs.size)
        first = np.concatenate([first, differs])
    lengths = counts[first]  # (K,)
    offsets = np.zeros(first.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.repeat(starts[first] - offsets[:-1], lengths) + np.arange(int(offsets[-1]))  # (M,) edge indices
    i32 = lambda a: np.ascontiguousarray(a, dtype=np.int32)
    return EdgeClasses(i32(src[starts]), i32(dst[starts]), i32(cls), i32(tok[flat]), offsets)


# ---------------------------------------------------------------------------------------------- compile


def compile_regex(pattern: str, tokenizer: Tokenizer, eos_id: int | None, special_ids: set[int]) -> TokenAutomaton:
    """The token automaton accepting exactly the token sequences whose bytes fullmatch ``pattern``."""
    if not isinstance(pattern, str):
        raise ConstraintError(f"a regex must be a string, not {type(pattern).__name__}")
    return _cached(("regex", pattern), ("regex", pattern), tokenizer, eos_id, special_ids)


def compile_json_schema(schema: dict, tokenizer: Tokenizer, eos_id: int | None, special_ids: set[int]) -> TokenAutomaton:
    """The automaton of outlines-core's regex for ``schema`` (compact JSON, as outlines writes it)."""
    if not isinstance(schema, dict):
        raise ConstraintError(f"a JSON schema must be an object, not {type(schema).__name__}")
    check_schema_depth(schema)
    try:
        spec = json.dumps(schema)  # key order kept: it is the order of the fields in the output
    except (TypeError, ValueError) as exc:
        raise ConstraintError(f"the JSON schema is not serialisable JSON: {exc}") from exc
    key = ("json_schema", _prepared(spec, get_settings().max_alternatives))
    return _cached(key, key, tokenizer, eos_id, special_ids)  # its regex is written in the bounded child


@lru_cache(maxsize=_CACHE_SIZE)
def _prepared(spec: str, max_alternatives: int) -> str:
    """The schema ``spec`` as outlines-core is handed it (``redraft.constraints.json_schema.prepare``: refused where
    it would not be enforced, rewritten where it would be written wrongly), once per schema text and the one setting
    it reads (a bounded integer's values): a refusal raises and is not cached."""
    return json.dumps(prepare(json.loads(spec)))


def compile_choices(choices: list[str], tokenizer: Tokenizer, eos_id: int | None, special_ids: set[int]) -> TokenAutomaton:
    """The automaton accepting exactly one of ``choices`` (literal strings, not regexes)."""
    if not choices or not all(isinstance(c, str) for c in choices):
        raise ConstraintError("choices must be a non-empty list of strings")
    check_choices(choices)
    pattern = "(" + "|".join(_escape(c) for c in choices) + ")"
    return _cached(("choices", tuple(choices)), ("regex", pattern), tokenizer, eos_id, special_ids)


def compile_target(
    target: tuple[str, str], tokenizer: Tokenizer, eos_id: int | None, special_ids: set[int]
) -> TokenAutomaton:
    """The automaton of a slot target as stored on a canvas: ``("regex", pattern)``,
    ``("json_schema", json_text)`` (a JSON object, key order kept) or ``("choices", json_text)``
    (a JSON list of strings)."""
    try:
        kind, spec = target
    except (TypeError, ValueError) as exc:
        raise ConstraintError(f"a target must be a (kind, spec) pair, not {target!r}") from exc
    if kind == "regex":
        return compile_regex(spec, tokenizer, eos_id, special_ids)
    if kind not in ("json_schema", "choices"):
        raise ConstraintError(f"unknown target kind {kind!r}; expected regex, json_schema or choices")
    if not isinstance(spec, str):
        raise ConstraintError(f"a {kind} target must be JSON text, not {type(spec).__name__}")
    try:
        value = json.loads(spec)
    except ValueError as exc:
        raise ConstraintError(f"the {kind} target is not valid JSON: {exc}") from exc
    if kind == "json_schema":
        return compile_json_schema(value, tokenizer, eos_id, special_ids)
    if not isinstance(value, list):
        raise ConstraintError("choices must be a non-empty list of strings")
    return compile_choices(value, tokenizer, eos_id, special_ids)


def min_length_tokens(automaton: TokenAutomaton) -> int:
    """The fewest real tokens of any accepted sequence (BFS from the initial state)."""
    if automaton._min_length is None:
        c = automaton.classes
        succ: list[list[int]] = [[] for _ in range(automaton.n_states)]
        for src, dst in zip(c.src.tolist(), c.dst.tolist()):
            succ[src].append(dst)
        final = automaton.final.tolist()
        dist = {automaton.initial: 0}
        queue = deque([automaton.initial])
        while queue:
            s = queue.popleft()
            if final[s]:
                automaton._min_length = dist[s]
                break
            for d in succ[s]:
                if d not in dist:
                    dist[d] = dist[s] + 1
                    queue.append(d)
        else:  # unreachable: pruning keeps only states that reach a final state
            raise ConstraintError(f"the constraint {automaton.pattern!r} accepts no token sequence")
    return automaton._min_length


def accepted_lengths(automaton: TokenAutomaton, n: int) -> np.ndarray:
    """(n + 1,) bool: which lengths 0..n (real tokens) some accepted sequence has (layered reachability over the
    automaton's state pairs: n passes over them)."""
    c = automaton.classes
    src, dst = np.asarray(c.src, dtype=np.int64), np.asarray(c.dst, dtype=np.int64)
    final = np.asarray(automaton.final, dtype=bool)
    reach = np.zeros(automaton.n_states, dtype=bool)
    reach[automaton.initial] = True
    out = np.zeros(n + 1, dtype=bool)
    out[0] = final[automaton.initial]
    for k in range(1, n + 1):
        nxt = np.zeros_like(reach)
        nxt[dst[reach[src]]] = True
        if not nxt.any():
            break
        reach = nxt
        out[k] = bool((reach & final).any())
    return out


def require_fits(automaton: TokenAutomaton, n_positions: int, min_tokens: int = 0) -> None:
    """ConstraintError (422) unless some accepted sequence fits in a slot of ``n_positions`` with at least
    ``min_tokens`` real tokens, and the slot decoder's memory per step for that slot stays within
    ``max_dp_bytes`` (``redraft.constraints.budget.dp_step_bytes``)."""
    k = min_length_tokens(automaton)
    if k > n_positions:
        raise ConstraintError(
            f"shortest match of {shown(automaton.pattern)} needs {k} tokens but the slot has {n_positions}"
        )
    if min_tokens > k:
        lengths = accepted_lengths(automaton, n_positions)
        if not lengths[min_tokens:].any():
            longest = int(np.flatnonzero(lengths).max())
            raise ConstraintError(
                f"min_tokens={min_tokens}, but no match of {shown(automaton.pattern)} that fits the slot's "
                f"{n_positions} tokens has more than {longest}; give min_tokens of at most {longest}"
            )
    c = automaton.classes
    require_dp_fits(automaton.pattern, n_positions, c.n_class_tokens, c.n_pairs, automaton.n_states,
                    automaton.max_committed_moves, k)


# ---------------------------------------------------------------------------------------------- accept


def accepts(automaton: TokenAutomaton, token_ids: list[int]) -> bool:
    """True iff the real tokens ``token_ids`` drive the automaton from its initial to a final state."""
    state = automaton.initial
    for t in token_ids:
        state = automaton.step(state, t)
        if state < 0:
            return False
    return bool(automaton.final[state])


# ---------------------------------------------------------------------------------------------- internals

_lock = threading.Lock()
# tokenizer -> {(kind, spec, eos_id, specials): automaton}, LRU per tokenizer; dies with the tokenizer.
_automata: weakref.WeakKeyDictionary[Tokenizer, OrderedDict] = weakref.WeakKeyDictionary()
# tokenizer -> {(eos_id, specials): outlines_core.Vocabulary}
_vocabularies: weakref.WeakKeyDictionary[Tokenizer, dict] = weakref.WeakKeyDictionary()


def _lookup(key: tuple, tokenizer: Tokenizer, eos_id: int, special_ids: set[int]) -> TokenAutomaton | None:
    full = (*key, eos_id, frozenset(special_ids))
    with _lock:
        per_tok = _automata.get(tokenizer)
        if per_tok is None or full not in per_tok:
            return None
        per_tok.move_to_end(full)
        hit = per_tok[full]
        _fit(per_tok)  # what the cached automata hold grew since the last compile (the slot decoder's copies)
        return hit


def _cached(key: tuple, source: tuple[str, str], tokenizer: Tokenizer, eos_id: int | None,
            special_ids: set[int]) -> TokenAutomaton:
    """The cached automaton of ``key``, else compiled from ``source`` (``("regex", pattern)`` or
    ``("json_schema", json_text)``) within the compile budgets, then cached. A model without an EOS token
    (``eos_id`` None) gets an id past the vocabulary and the end marker: outlines-core needs one, and the
    automaton's edges keep real tokens only."""
    if eos_id is None:
        eos_id = _end_id(tokenizer) + 1
    hit = _lookup(key, tokenizer, eos_id, special_ids)
    if hit is not None:
        return hit
    start = time.perf_counter()
    with timed_compile():
        automaton = _compile(source, tokenizer, eos_id, frozenset(special_ids))
    automaton.compile_seconds = time.perf_counter() - start
    full = (*key, eos_id, frozenset(special_ids))
    with _lock:
        per_tok = _automata.setdefault(tokenizer, OrderedDict())
        per_tok[full] = automaton
        _fit(per_tok)
    return automaton


def _fit(per_tok: OrderedDict) -> None:
    """Drop one tokenizer's least recently used automata until the cache is within its size and byte budgets (the
    newest one stays). The cache's reference only: a job that holds an automaton keeps it until it ends. Call
    with ``_lock`` held."""
    while len(per_tok) > _CACHE_SIZE or (len(per_tok) > 1 and _cached_bytes() > _CACHE_BYTES):
        per_tok.popitem(last=False)


def _fit_all() -> None:
    with _lock:
        for per_tok in list(_automata.values()):
            _fit(per_tok)


def _cached_bytes() -> int:
    return sum(a.nbytes for per_tok in _automata.values() for a in per_tok.values())


def discard(automaton: TokenAutomaton) -> None:
    """Drop an automaton from the cache: the request that compiled it was refused (say, by ``require_fits``),
    so its tables must not stay in memory on the request's behalf."""
    with _lock:
        for per_tok in _automata.values():
            for key in [k for k, a in per_tok.items() if a is automaton]:
                del per_tok[key]


def _excluded_ids(tokenizer: Tokenizer, eos_id: int, special_ids: frozenset[int]) -> set[int]:
    """Never real tokens: the given specials, EOS, and every added special token (EMPTY included)."""
    added = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    return set(special_ids) | {eos_id} | added


def _vocabulary(tokenizer: Tokenizer, eos_id: int, special_ids: frozenset[int]) -> outlines_core.Vocabulary:
    """outlines-core's vocabulary keyed by each token's exact *bytes*.

    outlines-core reads ``str`` keys as their UTF-8 bytes (no GPT-2 ``Ġ`` decoding: ``"Ġ"`` would be
    the two bytes C4 A0, not a space), so byte-level tokens are given as ``bytes`` keys, partial
    UTF-8 sequences included.
    """
    key = (eos_id, special_ids)
    with _lock:
        hit = _vocabularies.get(tokenizer, {}).get(key)
    if hit is not None:
        return hit
    decoder = json.loads(tokenizer.to_str()).get("decoder") or {}
    if "ByteLevel" not in json.dumps(decoder):
        raise ConstraintError("regex, JSON-schema and choice constraints need a byte-level BPE tokenizer")
    added = tokenizer.get_added_tokens_decoder()
    excluded = _excluded_ids(tokenizer, eos_id, special_ids)
    mapping: dict[bytes, list[int]] = {}
    for i in range(tokenizer.get_vocab_size(with_added_tokens=True)):
        if i in excluded or tokenizer.id_to_token(i) is None:
            continue
        data = added[i].content.encode("utf-8") if i in added else token_bytes(tokenizer, i)
        if data:
            mapping.setdefault(data, []).append(i)
    mapping.pop(_END_BYTES, None)  # a real token spelling the marker could not be told apart from it
    mapping[_END_BYTES] = [_end_id(tokenizer)]
    vocabulary = outlines_core.Vocabulary(eos_id, mapping)
    with _lock:
        _vocabularies.setdefault(tokenizer, {})[key] = vocabulary
    return vocabulary


@dataclass(frozen=True)
class _Built:
    """What the bounded child hands back: the automaton as grouped transitions (compact to send)."""

    pattern: str
    n_states: int
    final: np.ndarray  # (S,) bool; states renumbered, the initial state is 0
    classes: EdgeClasses


def _compile(source: tuple[str, str], tokenizer: Tokenizer, eos_id: int, special_ids: frozenset[int]) -> TokenAutomaton:
    """Check the source cheaply here, build it in a bounded child (``redraft.constraints.budget.run_bounded``), which hands
    back the automaton's token classes."""
    kind, spec = source
    if kind == "regex":
        check_pattern(spec)
    vocabulary = _vocabulary(tokenizer, eos_id, special_ids)  # built (and cached) here: the child inherits it
    V = tokenizer.get_vocab_size(with_added_tokens=True)
    excluded = frozenset(_excluded_ids(tokenizer, eos_id, special_ids))
    what = f"regex {shown(spec)}" if kind == "regex" else "the JSON schema"
    built = run_bounded(_build, source, vocabulary, V, excluded, _end_id(tokenizer), MAX_STATES, MAX_TABLE_ENTRIES,
                        what=what)
    return TokenAutomaton(pattern=built.pattern, n_states=built.n_states, initial=0, final=built.final,
                          classes=built.classes, vocab_size=V)


def _too_big(pattern: str, what: str) -> ConstraintError:
    return ConstraintError(f"regex {shown(pattern)} compiles to {what}; simplify the pattern",
                           code="constraint_too_large")


def _build(source: tuple[str, str], vocabulary: outlines_core.Vocabulary, V: int, excluded: frozenset[int],
           end: int, max_states: int, cap: int) -> _Built:
    """The construction, in the bounded child: the schema's regex, outlines-core's index, pruning, sparse edges."""
    kind, pattern = source
    if kind == "json_schema":
        schema = json.loads(pattern)
        try:
            for where, what, string in string_contents(schema):
                _check_string_contents(build_regex_from_schema(json.dumps(string)), where, what)
            pattern = build_regex_from_schema(pattern)
        except (ValueError, TypeError, KeyError) as exc:
            raise ConstraintError(f"the JSON schema cannot be turned into a constraint: {exc}") from exc
        check_pattern(pattern, generated=True)
    inner = strip_anchors(pattern)
    try:
        # The pattern alone parses ("a)(b" would not), and its byte automaton is cheap next to the token one:
        # its size refuses an automaton with too many states before the expensive build. (The byte automaton of a
        # search has up to twice the token automaton's states, a match being reported one byte late: hence the 2.)
        byte_states = len(outlines_core.Index(inner, _byte_vocabulary()).get_transitions())
        if byte_states > 2 * max_states:
            raise _too_big(pattern, f"at least {-(-byte_states // 2)} states, which exceeds the cap of {max_states}")
        index = outlines_core.Index(f"(?:{inner})\\x{{10FFFF}}", vocabulary)
    except ValueError as exc:
        try:
            re.compile(pattern)
        except re.error as py_exc:
            raise ConstraintError(f"invalid regex {shown(pattern)}: {py_exc}") from exc
        raise ConstraintError(
            f"regex {shown(pattern)} cannot be compiled to an automaton ({exc}); not supported: look-around, "
            "backreferences, Unicode \\b, and anchors other than a leading ^ and a trailing $"
        ) from exc

    transitions = index.get_transitions()
    # Final: the marker token completes the match. (Having a marker transition is not enough: P may
    # take U+10FFFF as content, e.g. inside a JSON string.)
    accepting = set(index.get_final_states())
    finals = {s for s, trans in transitions.items() if trans.get(end) in accepting}
    raw: dict[int, dict[int, int]] = {
        s: {t: d for t, d in trans.items() if t not in excluded and t < V} for s, trans in transitions.items()
    }
    del transitions
    initial = index.get_initial_state()

    # Keep only states reachable from the initial state that can still reach a final state.
    reach, queue = {initial}, deque([initial])
    while queue:
        for d in raw.get(queue.popleft(), {}).values():
            if d not in reach:
                reach.add(d)
                queue.append(d)
    live = _coreachable({s: raw.get(s, {}) for s in reach}, (s for s in reach if s in finals))
    if initial not in live:
        raise ConstraintError(f"regex {shown(pattern)} matches no text this tokenizer can write")

    order = [initial, *sorted(live - {initial})]
    number = {s: k for k, s in enumerate(order)}
    S = len(order)
    if S > max_states:
        raise _too_big(pattern, f"{S} states, which exceeds the cap of {max_states}")
    src, tok, dst = array("i"), array("i"), array("i")  # (E,) each; 4 bytes an entry, not a Python int
    for s in order:
        for t, d in raw.get(s, {}).items():
            if d in live:
                src.append(number[s])
                tok.append(t)
                dst.append(number[d])
    final = np.zeros(S, dtype=np.bool_)  # (S,)
    final[[number[s] for s in order if s in finals]] = True
    classes = edge_classes(*(np.frombuffer(a, dtype=np.int32) for a in (src, tok, dst)))
    if classes.n_class_tokens + 3 * classes.n_pairs > cap:
        raise _too_big(pattern, f"{classes.n_pairs:,} state pairs over {classes.n_class_tokens:,} token-class entries, "
                                f"which exceeds the cap of {cap:,} entries")
    return _Built(pattern, S, final, classes)


# outlines-core 0.2.14 builds the index from a regex-automata *search* DFA and keeps a token only if
# its end state is "not a match state" or "a full match at end of input". Two consequences, both
# under-acceptance: (1) match states are reported one byte late, so a token that continues past a
# full match into a non-final state is dropped ("3" then "-" in ``3(-3)?``); (2) leftmost-first
# semantics stop at the first match ("ab" is lost in ``(a|ab)``, "a" in ``a*?``). We compile
# ``(?:P)\x{10FFFF}`` instead and add a fake token (id V) spelling the end marker U+10FFFF: no
# real-token prefix is ever a full match, so neither problem arises, and a state is final iff the
# marker token takes it to a full match. (w + marker is in L(P) + marker iff w is in L(P), whatever w contains.)
_END_BYTES = "\U0010FFFF".encode()


@lru_cache(maxsize=1)
def _byte_vocabulary() -> outlines_core.Vocabulary:
    """One token per byte: a cheap vocabulary to check that a pattern parses on its own."""
    return outlines_core.Vocabulary(256, {bytes([b]): [b] for b in range(256)})


def _coreachable(edges: dict[int, dict[int, int]], finals) -> set[int]:
    """The states of ``edges`` (state -> {token: next state}) from which one of ``finals`` can be reached."""
    preds: dict[int, set[int]] = {}
    for s, trans in edges.items():
        for d in trans.values():
            preds.setdefault(d, set()).add(s)
    live = set(finals)
    queue = deque(live)
    while queue:
        for p in preds.get(queue.popleft(), ()):
            if p not in live:
                live.add(p)
                queue.append(p)
    return live


@lru_cache(maxsize=1)
def _marked_byte_vocabulary() -> outlines_core.Vocabulary:
    """One token per byte, and token 256 spelling the end marker (``_END_BYTES``)."""
    return outlines_core.Vocabulary(257, {**{bytes([b]): [b] for b in range(256)}, _END_BYTES: [256]})


# Bytes a JSON string's text cannot hold raw: the quote that would end it, the backslash that starts an escape,
# and the control characters (U+0000-U+001F). None is part of a multi-byte UTF-8 sequence.
_NOT_IN_STRINGS = frozenset({0x22, 0x5C, *range(0x20)})


def _check_string_contents(regex: str, where: str, what: str) -> None:
    """Refuse a string schema whose regex (outlines-core's ``"..."`` for it) can write a byte of ``_NOT_IN_STRINGS``
    between its quotes: the byte automaton of what is inside (with the end marker, as ``_build``), any such byte on
    a transition that can still reach the end."""
    if regex.startswith('("') and regex.endswith('")'):  # a pattern comes bracketed, a format bare
        regex = regex[1:-1]
    inner = regex[1:-1] if len(regex) >= 2 and regex[0] == regex[-1] == '"' else regex
    try:
        index = outlines_core.Index(f"(?:{inner})\\x{{10FFFF}}", _marked_byte_vocabulary())
    except ValueError as exc:
        raise ConstraintError(
            f"the JSON schema's {what} at {'the schema' if where == '#' else where} cannot be compiled ({exc}); not "
            "supported: look-around, backreferences, anchors other than at the start and end of a branch",
            code="unsupported_schema") from exc
    transitions = index.get_transitions()
    accepting = set(index.get_final_states())
    finals = [s for s, trans in transitions.items() if trans.get(256) in accepting]  # the marker ends a match
    live = _coreachable(transitions, finals)
    bad = sorted({b for s, trans in transitions.items() for b, d in trans.items()
                  if b < 256 and b in _NOT_IN_STRINGS and d in live})
    if bad:
        raise unsafe_contents(where, what, bad)


def _end_id(tokenizer: Tokenizer) -> int:
    return tokenizer.get_vocab_size(with_added_tokens=True)


def _escape(text: str) -> str:
    """A regex literal for ``text``, in syntax both Python ``re`` and outlines-core (Rust) accept."""
    return "".join(c if c.isalnum() or c == "_" or ord(c) > 127 else f"\\x{ord(c):02x}" for c in text)
