"""Token automata for constrained slots: regex / JSON schema / choices -> DFA over token ids.

A constrained slot is a run of ``n`` canvas positions whose text must fullmatch a regex (or a JSON
schema, or one of a list of choices). Unused positions hold the EMPTY token, which is dropped from
the text and may only come after the last real token. Tokens are committed in any order, so the
decoder does not walk left to right: it finds the best *whole-slot* assignment consistent with the
positions committed so far (``workers.slot_decoder.best_path``, the torch side).

Compilation (slow, cached per (kind, spec, tokenizer)) uses outlines-core: the regex becomes a DFA
over bytes, walked by every token's exact bytes. The result is a dense numpy table
``next_state: (S, V) int32`` with -1 for "not allowed"; it costs ``S * V * 4`` bytes (a date regex
with Unicode ``\\d`` has ~200 states: 6.6 MB at V = 8192), capped at ``MAX_TABLE_ENTRIES``.
Special tokens (and EOS, and the tokenizer's added special tokens, EMPTY among them) are never
real tokens: their columns are -1. outlines-core 0.2.14's index drops some valid transitions; the
compiler works around it with an end marker (see ``_END_BYTES``), and the tests check acceptance
against Python's ``re.fullmatch``.

Budgets (``constraints.budget``): cheap checks refuse a target before construction (regex length, schema
depth, alternatives, an automaton size estimated from the parse); the construction itself (outlines-core's
index, the schema's regex, the pruning) runs in a forked child under a wall-clock and a memory budget and
hands back the sparse transitions, from which this process builds the table. ``compile_clock`` (there)
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
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import outlines_core
from outlines_core.json_schema import build_regex_from_schema
from tokenizers import Tokenizer

from constraints.budget import (
    check_choices,
    check_pattern,
    check_schema_depth,
    require_dp_fits,
    run_bounded,
    shown,
    timed_compile,
)
from redraft.errors import ConstraintError
from redraft.models import token_bytes

MAX_TABLE_ENTRIES = 64 * 1024 * 1024  # S * V cap: 256 MiB of int32
_CACHE_SIZE = 256  # compiled automata kept per tokenizer ...
_CACHE_BYTES = 1024 * 1024 * 1024  # ... and at most this many bytes of tables in all (least recently used go first)


@dataclass(eq=False)
class TokenAutomaton:
    """A DFA over token ids. Every state can still reach a final state (dead states are pruned).

    Compared by identity (``eq=False``) and weak-referenceable: the workers cache per-device torch
    copies of the tables keyed by the automaton (``workers.slot_decoder``).
    """

    pattern: str  # the regex it was compiled from
    n_states: int  # S
    initial: int  # always 0
    final: np.ndarray = field(repr=False)  # (S,) bool
    next_state: np.ndarray = field(repr=False)  # (S, V) int32, -1: token not allowed from that state
    _min_length: int | None = field(default=None, repr=False)
    _n_edges: int | None = field(default=None, repr=False)  # E: allowed (state, token) pairs
    compile_seconds: float = field(default=0.0, repr=False)  # wall-clock time its compile took
    _classes: EdgeClasses | None = field(default=None, repr=False)

    @property
    def vocab_size(self) -> int:
        return int(self.next_state.shape[1])

    @property
    def n_edges(self) -> int:
        """E, the allowed (state, token) pairs: the slot decoder's cost per position grows with it."""
        if self._n_edges is None:
            self._n_edges = int(np.count_nonzero(self.next_state >= 0))
        return self._n_edges

    @property
    def nbytes(self) -> int:
        return int(self.next_state.nbytes + (self._classes.nbytes if self._classes is not None else 0))

    @property
    def classes(self) -> EdgeClasses:
        """The transitions grouped as the slot decoder reads them (built by the compile, or here on first use)."""
        if self._classes is None:
            src, tok = np.nonzero(self.next_state >= 0)  # (E,) each
            self._classes = edge_classes(src, tok, self.next_state[src, tok])
        return self._classes


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


def compile_regex(pattern: str, tokenizer: Tokenizer, eos_id: int, special_ids: set[int]) -> TokenAutomaton:
    """The token automaton accepting exactly the token sequences whose bytes fullmatch ``pattern``."""
    if not isinstance(pattern, str):
        raise ConstraintError(f"a regex must be a string, not {type(pattern).__name__}")
    return _cached(("regex", pattern), ("regex", pattern), tokenizer, eos_id, special_ids)


def compile_json_schema(schema: dict, tokenizer: Tokenizer, eos_id: int, special_ids: set[int]) -> TokenAutomaton:
    """The automaton of outlines-core's regex for ``schema`` (compact JSON, as outlines writes it)."""
    if not isinstance(schema, dict):
        raise ConstraintError(f"a JSON schema must be an object, not {type(schema).__name__}")
    check_schema_depth(schema)
    try:
        spec = json.dumps(schema)  # key order kept: it is the order of the fields in the output
    except (TypeError, ValueError) as exc:
        raise ConstraintError(f"the JSON schema is not serialisable JSON: {exc}") from exc
    key = ("json_schema", spec)
    return _cached(key, key, tokenizer, eos_id, special_ids)  # its regex is written in the bounded child


def compile_choices(choices: list[str], tokenizer: Tokenizer, eos_id: int, special_ids: set[int]) -> TokenAutomaton:
    """The automaton accepting exactly one of ``choices`` (literal strings, not regexes)."""
    if not choices or not all(isinstance(c, str) for c in choices):
        raise ConstraintError("choices must be a non-empty list of strings")
    check_choices(choices)
    pattern = "(" + "|".join(_escape(c) for c in choices) + ")"
    return _cached(("choices", tuple(choices)), ("regex", pattern), tokenizer, eos_id, special_ids)


def compile_target(
    target: tuple[str, str], tokenizer: Tokenizer, eos_id: int, special_ids: set[int]
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
        succ = _successors(automaton.next_state)
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


def require_fits(automaton: TokenAutomaton, n_positions: int) -> None:
    """ConstraintError (422) unless some accepted sequence fits in a slot of ``n_positions``, and the slot
    decoder's memory per step for that slot stays within ``max_dp_bytes`` (``constraints.budget.dp_step_bytes``)."""
    k = min_length_tokens(automaton)
    if k > n_positions:
        raise ConstraintError(
            f"shortest match of {shown(automaton.pattern)} needs {k} tokens but the slot has {n_positions}"
        )
    c = automaton.classes
    require_dp_fits(automaton.pattern, n_positions, c.n_class_tokens, c.n_pairs, automaton.n_states, k)


# ---------------------------------------------------------------------------------------------- accept


def accepts(automaton: TokenAutomaton, token_ids: list[int]) -> bool:
    """True iff the real tokens ``token_ids`` drive the automaton from its initial to a final state."""
    table = automaton.next_state
    state = automaton.initial
    for t in token_ids:
        if not 0 <= t < automaton.vocab_size:
            return False
        state = int(table[state, t])
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
        return per_tok[full]


def _cached(key: tuple, source: tuple[str, str], tokenizer: Tokenizer, eos_id: int,
            special_ids: set[int]) -> TokenAutomaton:
    """The cached automaton of ``key``, else compiled from ``source`` (``("regex", pattern)`` or
    ``("json_schema", json_text)``) within the compile budgets, then cached."""
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
        while len(per_tok) > _CACHE_SIZE or (len(per_tok) > 1 and _cached_bytes() > _CACHE_BYTES):
            per_tok.popitem(last=False)
    return automaton


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
    """Check the source cheaply here, build it in a bounded child (``constraints.budget.run_bounded``), and
    make the dense table from the sparse result here."""
    kind, spec = source
    if kind == "regex":
        check_pattern(spec)
    vocabulary = _vocabulary(tokenizer, eos_id, special_ids)  # built (and cached) here: the child inherits it
    V = tokenizer.get_vocab_size(with_added_tokens=True)
    excluded = frozenset(_excluded_ids(tokenizer, eos_id, special_ids))
    what = f"regex {shown(spec)}" if kind == "regex" else "the JSON schema"
    built = run_bounded(_build, source, vocabulary, V, excluded, _end_id(tokenizer), MAX_TABLE_ENTRIES, what=what)
    classes = built.classes
    lengths = np.diff(classes.offsets)[classes.cls]  # (P,) tokens each pair reads
    starts = classes.offsets[classes.cls]  # (P,)
    flat = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(int(lengths.sum()))
    next_state = np.full((built.n_states, V), -1, dtype=np.int32)  # (S, V)
    next_state[np.repeat(classes.src, lengths), classes.tokens[flat]] = np.repeat(classes.dst, lengths)
    return TokenAutomaton(pattern=built.pattern, n_states=built.n_states, initial=0, final=built.final,
                          next_state=next_state, _n_edges=int(lengths.sum()), _classes=classes)


def _table_too_big(pattern: str, S: int, V: int, cap: int, about: str = "") -> ConstraintError:
    return ConstraintError(
        f"regex {shown(pattern)} compiles to {about}{S} states; its transition table ({S} x {V} tokens, "
        f"{S * V * 4 / 2**20:.0f} MiB) exceeds the cap of {cap} entries; simplify the pattern",
        code="constraint_too_large")


def _build(source: tuple[str, str], vocabulary: outlines_core.Vocabulary, V: int, excluded: frozenset[int],
           end: int, cap: int) -> _Built:
    """The construction, in the bounded child: the schema's regex, outlines-core's index, pruning, sparse edges."""
    kind, pattern = source
    if kind == "json_schema":
        try:
            pattern = build_regex_from_schema(pattern)
        except (ValueError, TypeError, KeyError) as exc:
            raise ConstraintError(f"the JSON schema cannot be turned into a constraint: {exc}") from exc
        check_pattern(pattern, generated=True)
    inner = _strip_anchors(pattern)
    try:
        # The pattern alone parses ("a)(b" would not), and its byte automaton is cheap next to the token one:
        # its size refuses a table too big before the expensive build. (The byte automaton of a search has up
        # to twice the token automaton's states, a match being reported one byte late: hence the 2.)
        byte_states = len(outlines_core.Index(inner, _byte_vocabulary()).get_transitions())
        if byte_states * V > 2 * cap:
            raise _table_too_big(pattern, byte_states // 2, V, cap, about="at least ")
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
    preds: dict[int, set[int]] = {}
    for s in reach:
        for d in raw.get(s, {}).values():
            preds.setdefault(d, set()).add(s)
    live = {s for s in reach if s in finals}
    queue = deque(live)
    while queue:
        for p in preds.get(queue.popleft(), ()):
            if p not in live:
                live.add(p)
                queue.append(p)
    if initial not in live:
        raise ConstraintError(f"regex {shown(pattern)} matches no text this tokenizer can write")

    order = [initial, *sorted(live - {initial})]
    number = {s: k for k, s in enumerate(order)}
    S = len(order)
    if S * V > cap:
        raise _table_too_big(pattern, S, V, cap)
    src, tok, dst = array("i"), array("i"), array("i")  # (E,) each; 4 bytes an entry, not a Python int
    for s in order:
        for t, d in raw.get(s, {}).items():
            if d in live:
                src.append(number[s])
                tok.append(t)
                dst.append(number[d])
    final = np.zeros(S, dtype=np.bool_)  # (S,)
    final[[number[s] for s in order if s in finals]] = True
    return _Built(pattern, S, final, edge_classes(*(np.frombuffer(a, dtype=np.int32) for a in (src, tok, dst))))


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


def _end_id(tokenizer: Tokenizer) -> int:
    return tokenizer.get_vocab_size(with_added_tokens=True)


def _strip_anchors(pattern: str) -> str:
    """Drop a leading ``^``/``\\A`` and a trailing unescaped ``$``/``\\z``: a slot fullmatches anyway,
    and outlines-core cannot start from a ``^`` inside a group nor end before the end marker.
    (Anchors elsewhere in the pattern are rejected or make their branch unmatchable.)"""
    for anchor in ("^", "\\A"):
        if pattern.startswith(anchor):
            pattern = pattern[len(anchor):]
            break
    for anchor in ("$", "\\z"):
        if pattern.endswith(anchor):
            head = pattern[: -len(anchor)]
            if (len(head) - len(head.rstrip("\\"))) % 2 == 0:
                return head
    return pattern


def _successors(next_state: np.ndarray) -> list[list[int]]:
    """For each state, the distinct states one token away."""
    return [np.unique(row[row >= 0]).tolist() for row in next_state]


def _escape(text: str) -> str:
    """A regex literal for ``text``, in syntax both Python ``re`` and outlines-core (Rust) accept."""
    return "".join(c if c.isalnum() or c == "_" or ord(c) > 127 else f"\\x{ord(c):02x}" for c in text)
