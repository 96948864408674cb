"""The slot decoder: Viterbi over (slot position, automaton state) on torch log-probabilities.

The torch side of :mod:`redraft.constraints.automaton` (which stays torch-free for the API process). A position
does not score every (state, token) edge: it takes the best token of each of the automaton's token classes
once (:class:`redraft.constraints.automaton.EdgeClasses`), then relaxes the (source, destination) pairs with those
maxima, the same optimum for a fraction of the reads. A committed position relaxes only the pairs that read its
token (the automaton is deterministic: one move out of each state at most), so as a denoising run commits tokens
the decoder's work shrinks with the free positions. The slots of one automaton in a call (a length group's rows
under the same target) are one DP, each position a few calls for all of them. The automaton's arrays are copied to
torch once per (automaton, device) and cached for the automaton's lifetime (a ``WeakKeyDictionary`` keyed by the
automaton), so the per-step calls of a denoising run do not rebuild them.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Callable, NamedTuple

import numpy as np
import torch

from redraft.constraints.automaton import TokenAutomaton
from redraft.constraints.budget import dp_step_bytes
from redraft.settings import get_settings

_lock = threading.Lock()
# Between two calls each automaton keeps at most this many bytes of committed tokens' moves on the host, per device
# (``CommittedMoves``; least recently read go first); a call holds the moves it reads until it ends.
COMMITTED_MOVES_BYTES = 8 * 1024 * 1024
_DEVICE_WAY = False  # tests set it to run the device's ways (class maxima, picking tokens) on the CPU
# automaton -> {str(device): Pairs}; dies with the automaton.
_pairs: weakref.WeakKeyDictionary[TokenAutomaton, dict[str, Pairs]] = weakref.WeakKeyDictionary()


class Pairs(NamedTuple):
    """:class:`redraft.constraints.automaton.EdgeClasses` as int64 tensors on one device, with the slot's ending
    as moves: from each final state to END (state S) and from END to itself, each reading EMPTY."""

    src: torch.Tensor  # (P + F + 1,) source state of each move: the P pairs, then the F final states, then END
    dst: torch.Tensor  # (P + F + 1,) its destination (END for the last F + 1)
    cls: torch.Tensor  # (P + F + 1,) the column of a position's move scores it adds: the pair's token class;
    #                    K (EMPTY after a final state) for the F, K + 1 (EMPTY once ended) for the last
    n_pairs: int  # P
    tokens: torch.Tensor  # (M,) the classes' tokens, class after class
    class_of: torch.Tensor  # (M,) the class of each entry of ``tokens``
    n_classes: int  # K
    # On the host, the moves of a committed position: EMPTY's (may end here -> (src, dst)), and each token's.
    ending: dict[bool, tuple[np.ndarray, np.ndarray]]
    by_token: CommittedMoves
    # For the way back, on the host: the pairs into each state, ``into[into_ptr[d]:into_ptr[d + 1]]`` (ascending).
    into: np.ndarray  # (P,) int64
    into_ptr: np.ndarray  # (S + 1,) int64


def _as_long(a, device: torch.device | str) -> torch.Tensor:
    """An int64 tensor on ``device`` from an array or list (no copy on the CPU when it is already int64)."""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(device)


def pairs(automaton: TokenAutomaton, device: torch.device | str = "cpu") -> Pairs:
    """The automaton's grouped transitions on ``device`` (cached per automaton and device, and counted in its
    ``nbytes``, which the compile cache's byte budget reads)."""
    key = str(device)
    with _lock:
        hit = _pairs.get(automaton, {}).get(key)
    if hit is not None:
        return hit
    c = automaton.classes
    S, K = automaton.n_states, c.n_classes
    finals = np.flatnonzero(automaton.final)
    src = np.concatenate([c.src, finals, [S]])
    dst = np.concatenate([c.dst, np.full(finals.size + 1, S)])
    cls = np.concatenate([c.cls, np.full(finals.size, K), [K + 1]])
    as_long = partial(_as_long, device=device)
    class_of = torch.repeat_interleave(torch.arange(K), torch.from_numpy(c.offsets).diff())  # (M,)
    into = np.argsort(c.dst, kind="stable").astype(np.int64)  # (P,) pairs by destination, then pair id
    into_ptr = np.zeros(S + 1, dtype=np.int64)
    np.cumsum(np.bincount(c.dst, minlength=S), out=into_ptr[1:])
    # copies, not views: a view would keep the whole host arrays alive on a device, and count twice on the CPU
    ending = {True: (src[c.n_pairs:].copy(), dst[c.n_pairs:].copy()), False: (np.array([S]), np.array([S]))}
    value = Pairs(as_long(src), as_long(dst), as_long(cls), c.n_pairs, as_long(c.tokens), class_of.to(device), K,
                  ending, CommittedMoves(), into, into_ptr)
    with _lock:
        value = _pairs.setdefault(automaton, {}).setdefault(key, value)
    fixed = sum(t.numel() * t.element_size() for t in (value.src, value.dst, value.cls, value.tokens, value.class_of))
    fixed += value.into.nbytes + value.into_ptr.nbytes + sum(a.nbytes for m in value.ending.values() for a in m)
    moves = value.by_token
    automaton.hold(f"slot decoder on {key}", lambda: fixed + moves.nbytes)  # counted by the compile cache
    return value


class CommittedMoves:
    """The moves of committed tokens, per automaton and device, on the host: for each token the sources and
    destinations of the pairs that read it (int64, by pair), worked out when a call first needs them and kept for
    later calls (a denoising run commits the same tokens step after step) within ``COMMITTED_MOVES_BYTES``: the
    tokens a run has committed would otherwise grow it up to 16 bytes an edge of the automaton."""

    Moves = dict[int, tuple[np.ndarray, np.ndarray]]

    def __init__(self, limit: int | None = None) -> None:
        self.limit = COMMITTED_MOVES_BYTES if limit is None else limit
        self._kept: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()  # oldest read first
        self.nbytes = 0
        self._lock = threading.Lock()  # engines of two models on one device may share an automaton

    def read(self, automaton: TokenAutomaton, tokens) -> Moves:
        """The moves of each of ``tokens`` (the caller's to keep for its call), then the kept ones trimmed to the
        limit, least recently read first."""
        out: CommittedMoves.Moves = {}
        with self._lock:
            for t in tokens:
                hit = self._kept.get(t)
                if hit is None:
                    pp = automaton.pairs_reading(t)
                    c = automaton.classes
                    hit = self._kept[t] = (c.src[pp].astype(np.int64), c.dst[pp].astype(np.int64))
                    self.nbytes += hit[0].nbytes + hit[1].nbytes
                else:
                    self._kept.move_to_end(t)
                out[t] = hit
            while self.nbytes > self.limit:
                _, (src, dst) = self._kept.popitem(last=False)
                self.nbytes -= src.nbytes + dst.nbytes
        return out

    def __len__(self) -> int:
        return len(self._kept)


def best_path(
    automaton: TokenAutomaton,
    logp: torch.Tensor,  # (n, V') log-probabilities or logits, V' >= automaton.vocab_size
    committed: list[int | None],  # (n,) a token id fixed at that position, or None (free)
    empty_id: int,
    min_tokens: int = 0,
) -> list[int] | None:
    """The best whole-slot assignment consistent with ``committed``, or None if none is accepted.

    Viterbi over (position, automaton state) plus one extra state "ended" (the EMPTY tail); each free position
    is one vectorised max-scatter over the automaton's (source, destination) pairs, scored by the best token of
    each pair's class there (computed for all positions at once); a committed position, over the pairs reading
    its token. Only scores are kept; the way back finds,
    position by position, the move that reached each score (recomputing the same float additions).
    Score = sum of ``logp[i, token]`` over the *free* positions: committed positions are fixed and
    add nothing (so a committed token whose logp is -inf does not make the slot infeasible). A free
    token whose logp is -inf (or NaN) is forbidden. Logits do as well as log-probabilities: every position adds
    exactly one term (a token or EMPTY), so a constant per position never changes which path is best. Ties go to
    the ended state, the lowest source state / pair, then the lowest token.

    Contract, as a reference loop (exponential; the same best score, up to ties)::

        best, best_score = None, -inf
        for seq in itertools.product([*range(V), empty_id], repeat=n):
            k = seq.index(empty_id) if empty_id in seq else n        # number of real tokens
            if any(t != empty_id for t in seq[k:]) or k < min_tokens:
                continue                                             # EMPTY only as a tail
            if any(c is not None and seq[i] != c for i, c in enumerate(committed)):
                continue                                             # committed positions keep their token
            state = initial
            for t in seq[:k]:
                state = next_state[state, t]                         # -1: not allowed (specials always)
                if state < 0:
                    break
            else:
                if final[state]:
                    score = sum(logp[i, seq[i]] for i in range(n) if committed[i] is None)
                    if score > best_score:
                        best, best_score = list(seq), score
        return best                                                  # None when best_score == -inf
    """
    return best_paths([(automaton, logp, committed, empty_id, min_tokens)])[0]


class Deferred(NamedTuple):
    """A query's log-probabilities made only when its chunk is decoded (a copy, e.g. of a slot partly outside the
    logits' window): ``make()`` returns the (n, V') tensor, ``nbytes`` is its size, counted against the budget."""

    make: Callable[[], torch.Tensor]
    nbytes: int
    device: torch.device


# (automaton, logp (n, V') or Deferred, committed (n,), empty_id, min_tokens): one slot, as ``best_path`` takes it
Query = tuple


def best_paths(queries: list[Query]) -> list[list[int] | None]:
    """``best_path`` for several slots at once (a row's constrained slots, or a whole length group's): the slots of
    one automaton are one DP, each position one relaxation for all of them, in chunks whose budgeted memory
    (:func:`redraft.constraints.budget.dp_step_bytes` each, counted at the chunk's longest slot, plus any deferred
    copy) stays within ``max_dp_bytes``; a chunk's slots are prepared when it is decoded and freed after. The same
    paths as one call per slot."""
    out: list[list[int] | None] = [None] * len(queries)
    by_automaton: dict[tuple[int, str], list[int]] = {}
    for q, (automaton, logp, *_) in enumerate(queries):
        device = logp.device
        by_automaton.setdefault((id(automaton), str(device)), []).append(q)
    limit = get_settings().max_dp_bytes
    for group in by_automaton.values():
        group.sort(key=lambda q: -len(queries[q][2]))
        a = queries[group[0]][0]
        c = a.classes
        while group:
            each = dp_step_bytes(len(queries[group[0]][2]), c.n_class_tokens, c.n_pairs, a.n_states,
                                 a.max_committed_moves)
            chunk, used = [], 0
            for q in group:  # the longest slot's budget for each slot of the chunk, and its deferred copy
                logp = queries[q][1]
                need = each + (logp.nbytes if isinstance(logp, Deferred) else 0)
                if chunk and used + need > limit:
                    break
                chunk.append(q)
                used += need
            group = group[len(chunk):]
            prepared = []
            for q in chunk:
                automaton, logp, *rest = queries[q]
                slot = _prepare(automaton, logp.make() if isinstance(logp, Deferred) else logp, *rest)
                if slot is not None:
                    prepared.append((q, slot))
            if prepared:
                for (q, _), path in zip(prepared, _solve([slot for _, slot in prepared])):
                    out[q] = path
    return out


@dataclass(eq=False)
class _Slot:
    """One query, checked, with its per-position moves (built by ``_prepare``)."""

    automaton: TokenAutomaton
    g: Pairs
    committed: list[int | None]
    empty_id: int
    min_tokens: int
    row_of: dict[int, int]  # free position -> its row in the per-free-position tensors
    lp_class: torch.Tensor  # (f, M) the class tokens' logits at the free positions
    # (f, K + 2) float64, what a free position's moves add by column (Pairs.cls): each class's best token (K), EMPTY
    # after a final state (-inf before min_tokens), EMPTY once ended
    columns: torch.Tensor

    @property
    def n(self) -> int:
        return len(self.committed)

    @property
    def S(self) -> int:  # noqa: N802 - the automaton's S, as everywhere in this module
        return self.automaton.n_states

    @property
    def device(self) -> torch.device:
        return self.columns.device


def _prepare(automaton: TokenAutomaton, logp: torch.Tensor, committed: list[int | None], empty_id: int,
             min_tokens: int = 0) -> _Slot | None:
    n = len(committed)
    V = automaton.vocab_size
    if logp.dim() != 2 or logp.shape[0] != n or logp.shape[1] < V:
        raise ValueError(f"logp must be (n={n}, V>={V}); got {tuple(logp.shape)}")
    if not 0 <= empty_id < logp.shape[1]:
        raise ValueError(f"empty_id {empty_id} is outside the vocabulary of logp")
    if automaton.pairs_reading(empty_id).size:
        raise ValueError(f"empty_id {empty_id} is a real token of this automaton; compile with it as special")
    for i, c in enumerate(committed):
        if c is not None and not 0 <= c < logp.shape[1]:
            raise ValueError(f"committed token {c} at position {i} is outside the vocabulary")
    if min_tokens > n:
        return None
    device = logp.device
    neg_inf = float("-inf")
    g = pairs(automaton, device)

    # The best token of each class at each free position: one gather, then one reduction a class for the whole slot.
    free_at = [i for i, c in enumerate(committed) if c is None]
    f, M = len(free_at), int(g.tokens.shape[0])
    row_of = {i: r for r, i in enumerate(free_at)}  # position -> row of the free-position tensors
    free_idx = torch.tensor(free_at, dtype=torch.long, device=device)  # (f,)
    if f == n:
        lp_class = logp.index_select(1, g.tokens)  # (n, M)
    elif f * logp.shape[1] < n * M:  # the free rows first: an (f, V') copy is the smaller one
        lp_class = logp.index_select(0, free_idx).index_select(1, g.tokens)  # (f, M)
    else:  # the class tokens' columns first: an (n, M) copy is the smaller one
        lp_class = logp.index_select(1, g.tokens).index_select(0, free_idx)  # (f, M)
    lp_class = lp_class.float()
    lp_class.nan_to_num_(nan=neg_inf, posinf=float("inf"), neginf=neg_inf)  # NaN is forbidden, like -inf
    # Each class is a run of lp_class's columns: on the CPU numpy reduces the runs (~5x faster than the scatter-max
    # there: 0.28 vs 1.57 ms at f = 128, M = 17k, K = 148); on a device, one scatter-max.
    if device.type == "cpu" and not _DEVICE_WAY and g.n_classes:
        runs = automaton.classes.offsets[:-1]
        best_in_class = torch.from_numpy(np.maximum.reduceat(lp_class.numpy(), runs, axis=1))  # (f, K)
    else:
        best_in_class = torch.full((f, g.n_classes), neg_inf, dtype=torch.float32, device=device)  # (f, K)
        best_in_class.scatter_reduce_(1, g.class_of.expand_as(lp_class), lp_class, reduce="amax", include_self=True)
    lp_empty = logp[free_idx, empty_id].double()  # (f,)
    lp_empty.masked_fill_(lp_empty.isnan(), neg_inf)

    # What each move adds at a free position, by column (Pairs.cls): a pair its class's best token there, an ending
    # what EMPTY adds (from a final state only after min_tokens real tokens).
    may_end = torch.tensor([i >= min_tokens for i in free_at], dtype=torch.bool, device=device)  # (f,)
    after_final = lp_empty.masked_fill(~may_end, neg_inf)  # (f,)
    columns = torch.cat([best_in_class.double(), after_final[:, None], lp_empty[:, None]], 1)
    return _Slot(automaton, g, committed, empty_id, min_tokens, row_of, lp_class, columns)


def _solve(slots: list[_Slot]) -> list[list[int] | None]:
    """The forward pass for slots of one automaton, all at once, then each slot's way back.

    Scores are (position, slot, state). At each position the slots free there relax every move (one gather of
    their scores, one add of their move scores, one scatter-max), and the slots committed there only the moves
    reading their token, as one flat gather and scatter-max over (slot, state) for all of them: what the committed
    tokens decide is never scored again, and a position costs the same few calls however many slots there are."""
    g, automaton, device = slots[0].g, slots[0].automaton, slots[0].device
    B, S1, K2 = len(slots), automaton.n_states + 1, g.n_classes + 2
    n_max = max(s.n for s in slots)
    neg_inf = float("-inf")
    # Who moves how at each position, on the host: the free (slot, position)s position-major (so a position's rows
    # of move scores are one slice), the committed ones' moves as flat (slot * S1 + state) indices.
    free_slot: list[int] = []  # the slot of each free (slot, position)
    free_row: list[int] = []  # its row in the slots' columns, stacked slot after slot
    f_ptr = [0]
    c_src: list[np.ndarray] = []  # per committed (slot, position): its moves' sources and destinations, flat
    c_dst: list[np.ndarray] = []
    c_ptr = [0]
    rows_before = np.cumsum([0] + [len(s.row_of) for s in slots])
    moves = g.by_token.read(automaton, {c for s in slots for c in s.committed if c is not None and c != s.empty_id})
    for i in range(n_max):
        at = c_ptr[-1]
        for b, s in enumerate(slots):
            if i >= s.n:
                continue
            c = s.committed[i]
            if c is None:
                free_slot.append(b)
                free_row.append(int(rows_before[b]) + s.row_of[i])
                continue
            src, dst = g.ending[i >= s.min_tokens] if c == s.empty_id else moves[c]
            c_src.append(src + b * S1 if b else src)
            c_dst.append(dst + b * S1 if b else dst)
            at += int(src.size)
        f_ptr.append(len(free_slot))
        c_ptr.append(at)
    as_long = partial(_as_long, device=device)
    f_sizes, c_sizes = np.diff(f_ptr).tolist(), np.diff(c_ptr).tolist()
    # Each position's slices as views made in one call each (a tensor's slicing costs microseconds a time).
    free_slots = as_long(free_slot).split(f_sizes)  # per position: its free slots
    stacked = slots[0].columns if B == 1 else torch.cat([s.columns for s in slots])  # (f_all, K + 2), slot-major
    columns: tuple[torch.Tensor, ...] = ()  # per position: its free slots' move scores by column (k, K + 2)
    if free_row:
        table = stacked
        if free_row != list(range(len(free_row))):
            table = table.index_select(0, as_long(free_row))  # position-major rows
        columns = table.split(f_sizes)
    if c_src:
        flat_src = as_long(np.concatenate(c_src)).split(c_sizes)
        flat_dst = as_long(np.concatenate(c_dst)).split(c_sizes)

    # Forward: scores[i, b, s] is slot b's best score of a prefix of i positions ending in state s (END: ended).
    # Only scores are kept; the way back recomputes which move reached each score (the same float additions).
    scores = torch.full((n_max + 1, B, S1), neg_inf, dtype=torch.float64, device=device)
    scores[0, :, automaton.initial] = 0.0
    rows, flat = scores.unbind(0), scores.view(n_max + 1, B * S1).unbind(0)
    # Flat (source, destination, column) indices of every move for the first k slots: the first k * E entries of
    # B slots' (1-D gathers and scatters: along a row's second dimension they run ~2x slower).
    E = int(g.src.shape[0])
    if free_slot:
        slot_of = torch.arange(max(f_sizes), device=device)[:, None]
        flat_moves = ((slot_of * S1 + g.src).view(-1), (slot_of * S1 + g.dst).view(-1), (slot_of * K2 + g.cls).view(-1))
    prefixes: dict[int, tuple[torch.Tensor, ...]] = {}  # k -> the first k slots' indices (views)
    for i in range(n_max):
        k = f_sizes[i]
        if k:
            if k not in prefixes:
                prefixes[k] = tuple(t[:k * E] for t in flat_moves)
            src, dst, cls = prefixes[k]
            every = k == B  # every slot is free here: they come in slot order
            here = flat[i] if every else rows[i].index_select(0, free_slots[i]).view(-1)  # (k * S1,)
            cand = here.index_select(0, src)  # (k * (P + F + 1),)
            # what each move adds, made here a position at a time (one (f, P) table for the whole call was up to
            # 3x slower on the CPU: fresh pages every call)
            cand += columns[i].view(-1).index_select(0, cls)
            into = flat[i + 1] if every else torch.full((k * S1,), neg_inf, dtype=torch.float64, device=device)
            into.scatter_reduce_(0, dst, cand, reduce="amax")
            if not every:
                rows[i + 1].index_copy_(0, free_slots[i], into.view(k, S1))
        if c_sizes[i]:
            flat[i + 1].scatter_reduce_(0, flat_dst[i], flat[i].index_select(0, flat_src[i]), reduce="amax")
    # The ways back on the host: one copy of the scores and one of the slots' move columns for the whole call.
    sc_all = scores.cpu().numpy()  # (n_max+1, B, S1)
    col_all = stacked.cpu().numpy()  # (f_all, K + 2)
    K = g.n_classes
    ways = [_way_back(s, sc_all[:s.n + 1, b], col_all[rows_before[b]:rows_before[b + 1], :K],
                      col_all[rows_before[b]:rows_before[b + 1], K + 1], moves) for b, s in enumerate(slots)]
    return _pick_tokens(slots, ways)


def _pick_tokens(slots: list[_Slot], ways: list[tuple[list[int], dict[int, int]] | None]) -> list[list[int] | None]:
    """Each free real position's token: the best of its class there, the lowest id on ties. A class's tokens are one
    run of ``lp_class``'s columns, ascending: the first column of the run that holds the class's maximum.

    On the host (CPU tensors, read in place) each run is read alone; on a device, a masked argmax per slot over its
    taken rows and one copy to the host for the call (a read per position would wait on the device each time)."""
    if slots[0].device.type == "cpu" and not _DEVICE_WAY:
        offsets, cls_tokens = slots[0].automaton.classes.offsets, slots[0].automaton.classes.tokens
        for s, way in zip(slots, ways):
            if way is None:
                continue
            lp_class = s.lp_class.numpy()
            for i, k in way[1].items():
                run = lp_class[s.row_of[i], offsets[k]:offsets[k + 1]]  # argmax: the first maximum
                way[0][i] = int(cls_tokens[offsets[k] + int(run.argmax())])
        return [None if way is None else way[0] for way in ways]
    picked = []
    for s, way in zip(slots, ways):
        if way is None or not way[1]:
            continue
        at, ks = zip(*way[1].items())
        device = s.device
        rows = _as_long([s.row_of[i] for i in at], device)  # (T,)
        k = _as_long(ks, device)  # (T,)
        best = s.columns[rows, k].float()  # (T,) the float32 maxima, exactly (float64 holds them exactly)
        lp = s.lp_class.index_select(0, rows)  # (T, M)
        hit = (lp == best[:, None]) & (s.g.class_of[None, :] == k[:, None])  # (T, M) the maxima of each class
        picked.append(s.g.tokens[hit.to(torch.uint8).argmax(1)])  # argmax: the first maximum
    tokens = iter(torch.cat(picked).tolist() if picked else [])  # in the order the taken positions were read
    for way in ways:
        if way is not None:
            for i in way[1]:
                way[0][i] = next(tokens)
    return [None if way is None else way[0] for way in ways]


def _way_back(slot: _Slot, sc: np.ndarray, bic: np.ndarray, lpe: np.ndarray,
              moves: CommittedMoves.Moves) -> tuple[list[int], dict[int, int]] | None:
    """At each position, from the last, the lowest move whose score gives the one reached: the path (committed
    tokens and EMPTY in place) and, for each free real position, the class its token is to come from; None when
    no path is accepted. ``bic`` (f, K) and ``lpe`` (f,) are the slot's best class tokens and EMPTY's terms,
    ``moves`` the committed tokens' (``CommittedMoves.read``)."""
    automaton, g, n, S, committed = slot.automaton, slot.g, slot.n, slot.S, slot.committed
    empty_id, min_tokens, row_of = slot.empty_id, slot.min_tokens, slot.row_of
    neg_inf = float("-inf")
    END = S
    src, cls, final = automaton.classes.src, automaton.classes.cls, automaton.final
    finals = np.flatnonzero(final)
    # Accept: a final state after n real tokens (n >= min_tokens holds here), or the ended state.
    best_final = sc[n, finals].max(initial=neg_inf)
    if not max(best_final, sc[n, END]) > neg_inf:
        return None
    if n == 0:
        return [], {}
    state = END if sc[n, END] >= best_final else int(finals[np.argmax(sc[n, finals])])
    out = [0] * n
    taken: dict[int, int] = {}  # free real position -> the class its token is read from
    for i in range(n - 1, -1, -1):
        c, target, prev = committed[i], sc[i + 1, state], sc[i]
        if state == END:  # EMPTY at i: from the ended state, else from the lowest final state that gives it
            out[i] = empty_id
            add = lpe[row_of[i]] if c is None else 0.0
            if prev[END] + add == target:
                continue
            ok = finals[prev[finals] + add == target] if i >= min_tokens else finals[:0]
            state = int(ok[0])
        elif c is None:  # a pair into ``state``
            into = g.into[g.into_ptr[state]:g.into_ptr[state + 1]]
            p = int(into[np.flatnonzero(prev[src[into]] + bic[row_of[i], cls[into]] == target)[0]])
            taken[i], state = int(cls[p]), int(src[p])
        else:  # the committed token, from the lowest state it takes here
            froms, tos = moves[c]
            froms = froms[tos == state]
            state = int(np.min(froms[prev[froms] == target]))
            out[i] = c
    return out, taken
