"""The slot decoder: Viterbi over (slot position, automaton state) on torch log-probabilities.

The torch side of :mod:`constraints.automaton` (which stays torch-free for the API process). The
automaton's numpy tables are copied to torch once per (automaton, device) and cached for the
automaton's lifetime (a ``WeakKeyDictionary`` keyed by the automaton), so the per-step calls of a
denoising run do not rebuild them.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np
import torch

from constraints.automaton import TokenAutomaton

_lock = threading.Lock()
# automaton -> {str(device): (src, tok, dst)}; dies with the automaton.
_edges: weakref.WeakKeyDictionary[TokenAutomaton, dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = (
    weakref.WeakKeyDictionary()
)
# automaton -> {str(device): (next_state, final)}
_tables: weakref.WeakKeyDictionary[TokenAutomaton, dict[str, tuple[torch.Tensor, torch.Tensor]]] = (
    weakref.WeakKeyDictionary()
)


def edges(automaton: TokenAutomaton, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The allowed transitions as three (E,) int64 tensors (src, token, dst), sorted by (src, token)."""
    key = str(device)
    with _lock:
        hit = _edges.get(automaton, {}).get(key)
    if hit is not None:
        return hit
    src, tok = np.nonzero(automaton.next_state >= 0)  # (E,), (E,) row-major: sorted by (src, token)
    dst = automaton.next_state[src, tok]  # (E,)
    value = tuple(torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(device) for a in (src, tok, dst))
    with _lock:
        return _edges.setdefault(automaton, {}).setdefault(key, value)


def tables(automaton: TokenAutomaton, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``next_state`` (S, V) int32 and ``final`` (S,) bool on ``device`` (copies: the numpy arrays are never shared)."""
    key = str(device)
    with _lock:
        hit = _tables.get(automaton, {}).get(key)
    if hit is not None:
        return hit
    value = (
        torch.tensor(automaton.next_state, dtype=torch.int32, device=device),
        torch.tensor(automaton.final, dtype=torch.bool, device=device),
    )
    with _lock:
        return _tables.setdefault(automaton, {}).setdefault(key, value)


def best_path(
    automaton: TokenAutomaton,
    logp: torch.Tensor,  # (n, V') log-probabilities, V' >= automaton.vocab_size
    committed: list[int | None],  # (n,) a token id fixed at that position, or None (free)
    empty_id: int,
    min_tokens: int = 0,
) -> list[int] | None:
    """The best whole-slot assignment consistent with ``committed``, or None if none is accepted.

    Viterbi over (position, automaton state) plus one extra state "ended" (the EMPTY tail), with
    backpointers; each position is one vectorised max-scatter over the automaton's edges.
    Score = sum of ``logp[i, token]`` over the *free* positions: committed positions are fixed and
    add nothing (so a committed token whose logp is -inf does not make the slot infeasible). A free
    token whose logp is -inf (or NaN) is forbidden. Ties go to the lowest (src, token) edge.

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
    n = len(committed)
    S, V = automaton.n_states, automaton.vocab_size
    if logp.dim() != 2 or logp.shape[0] != n or logp.shape[1] < V:
        raise ValueError(f"logp must be (n={n}, V>={V}); got {tuple(logp.shape)}")
    if not 0 <= empty_id < logp.shape[1]:
        raise ValueError(f"empty_id {empty_id} is outside the vocabulary of logp")
    if empty_id < V and bool((automaton.next_state[:, empty_id] >= 0).any()):
        raise ValueError(f"empty_id {empty_id} is a real token of this automaton; compile with it as special")
    if min_tokens > n:
        return None
    device = logp.device
    neg_inf = float("-inf")
    src, tok, dst = edges(automaton, device)  # (E,) each
    # Only the logp entries the DP can read: per edge token and the EMPTY column.
    lp_edge = torch.nan_to_num(logp[:, tok].to(torch.float64), nan=neg_inf)  # (n, E)
    lp_empty = torch.nan_to_num(logp[:, empty_id].to(torch.float64), nan=neg_inf)  # (n,)
    table, final = tables(automaton, device)  # (S, V), (S,)
    END = S  # index of the "ended" state in score vectors
    n_edges = int(src.shape[0])
    edge_ids = torch.arange(n_edges, device=device)  # (E,)
    all_states = torch.arange(S, device=device)  # (S,)
    no_real = (
        torch.full((S,), neg_inf, dtype=torch.float64, device=device),  # (S,) scores
        torch.full((S,), -1, dtype=torch.long, device=device),  # (S,) previous states
        torch.full((S,), -1, dtype=torch.long, device=device),  # (S,) tokens
    )

    def relax(cand: torch.Tensor, e_src: torch.Tensor, e_dst: torch.Tensor, e_tok: torch.Tensor, ids: torch.Tensor):
        """Max of ``cand`` (E,) into each destination state, with the argmax edge's source and token."""
        m = cand.shape[0]
        real = torch.full((S,), neg_inf, dtype=torch.float64, device=device)  # (S,)
        real.scatter_reduce_(0, e_dst, cand, reduce="amax", include_self=True)
        hit = (cand == real[e_dst]) & (cand > neg_inf)  # (E,) edges achieving their dst's max
        first = torch.full((S,), m, dtype=torch.long, device=device)  # (S,) lowest argmax edge
        first.scatter_reduce_(0, e_dst, torch.where(hit, ids, m), reduce="amin", include_self=True)
        has = first < m  # (S,)
        pick = first.clamp_max(m - 1)  # (S,)
        return real, torch.where(has, e_src[pick], -1), torch.where(has, e_tok[pick], -1)

    score = torch.full((S + 1,), neg_inf, dtype=torch.float64, device=device)  # (S+1,)
    score[automaton.initial] = 0.0
    back_state: list[torch.Tensor] = []  # n x (S+1,) previous state, -1: unreachable
    back_token: list[torch.Tensor] = []  # n x (S+1,) token written at this position

    for i, c in enumerate(committed):
        if c is not None and not 0 <= c < logp.shape[1]:
            raise ValueError(f"committed token {c} at position {i} is outside the vocabulary")

        # Real token at position i (only from a non-ended state).
        if c is None:
            real, bs, bt = relax(score[src] + lp_edge[i], src, dst, tok, edge_ids)
        elif c != empty_id and c < V:  # committed real token: one edge per source state, cost 0
            col = table[:, c].long()  # (S,)
            cand = torch.where(col >= 0, score[:S], neg_inf)  # (S,)
            real, bs, bt = relax(cand, all_states, col.clamp_min(0), torch.full_like(col, c), all_states)
        else:
            real, bs, bt = no_real

        # EMPTY at position i: stay ended, or end here from a final state (i real tokens so far).
        if c is None or c == empty_id:
            prev_score, prev_state = score[END], torch.tensor(END, device=device)
            if i >= min_tokens:
                f_score, f_state = torch.where(final, score[:S], neg_inf).max(0)
                take = f_score > prev_score
                prev_score, prev_state = torch.where(take, f_score, prev_score), torch.where(take, f_state, prev_state)
            end_score = prev_score + (lp_empty[i] if c is None else 0.0)
            end_state = torch.where(end_score > neg_inf, prev_state, -1)
            end_token = torch.where(end_score > neg_inf, empty_id, -1)
        else:
            end_score, end_state, end_token = no_real[0][0], no_real[1][0], no_real[2][0]

        score = torch.cat([real, end_score.reshape(1)])  # (S+1,)
        back_state.append(torch.cat([bs, end_state.reshape(1)]))
        back_token.append(torch.cat([bt, end_token.reshape(1)]))

    # Accept: a final state after n real tokens (n >= min_tokens holds here), or the ended state.
    accept = torch.cat([torch.where(final, score[:S], neg_inf), score[END:]])  # (S+1,)
    best_score, best = accept.max(0)
    if not best_score > neg_inf:
        return None
    if n == 0:
        return []
    states = torch.stack(back_state).tolist()  # (n, S+1)
    tokens = torch.stack(back_token).tolist()  # (n, S+1)
    out = [0] * n
    state = int(best)
    for i in range(n - 1, -1, -1):
        out[i] = tokens[i][state]
        state = states[i][state]
    return out
