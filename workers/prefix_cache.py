"""Fast-dLLM's block-wise prefix cache for ModernBERT masked models: opt-in per job (``cache: "prefix"``), approximate.

A row's **prefix** is every position left of the first writable position of its current block (fixed text and
the blocks already written: nothing there is undecided). At the block's first step the model reads the whole
canvas, as without the cache, and keeps every layer's keys and values at the prefix; the block's other steps
read only the positions from the prefix's end on, their queries attending to the kept keys and values and to
their own. The next block refreshes it. Without ``block_size`` the whole canvas is one block and the prefix is
the fixed text before the first gap (a ``generate`` job's prompt), read once.

It is **approximate** (Fast-dLLM, arXiv 2505.22618, section 3.1): the prefix's keys and values were computed when
the block was still masked and do not see what the block writes afterwards. It is exact where nothing changed
since the refresh (a test checks that), and off by default; its measured cost on held-out infill is in
docs/benchmarks.md beside its speed-up (``benchmarks/prefix_cache.py``).

The forward pass here is ModernBERT's own layers and weights (``ModernBertForMaskedLM``: embeddings, attention
norms, ``Wqkv``, rotary embeddings, ``Wo``, the GLU, final norm, head, decoder), called over a slice of the
canvas with the cached keys and values in front; without a cache it gives the model's own logits up to float
rounding (a test checks that against ``ModernBertForMaskedLM.forward``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(eq=False)
class PrefixCache:
    """A row's kept keys and values: every layer's, at canvas positions [0, start), filled at ``block``."""

    block: int
    start: int
    keys: list[torch.Tensor]  # per layer (1, heads, start, head_dim)
    values: list[torch.Tensor]


def supports(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a ModernBERT masked LM, the architecture this cache reads."""
    from transformers import ModernBertForMaskedLM

    return isinstance(model, ModernBertForMaskedLM)


def forward(model, ids: torch.Tensor, start: int, attention_mask: torch.Tensor | None,
            keys: list[torch.Tensor] | None = None, values: list[torch.Tensor] | None = None
            ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """ModernBERT over canvas positions [start, start + n) given as ``ids`` (b, n), with the keys and values of
    positions [0, start) from ``keys``/``values`` (per layer (b, heads, start, head_dim); None when start is 0).
    ``attention_mask`` (b, start + n) bool marks real positions (None: all). Returns the logits (b, n, V) and every
    layer's keys and values at the positions read, (b, heads, n, head_dim) each."""
    from transformers.models.modernbert.modeling_modernbert import apply_rotary_pos_emb

    base = model.model
    config = model.config
    b, n = ids.shape
    total = start + n
    device = ids.device
    hidden = base.embeddings(input_ids=ids)  # (b, n, H)
    positions = torch.arange(start, total, device=device).unsqueeze(0)  # (1, n)
    rotary = {kind: base.rotary_emb(hidden, positions, kind) for kind in set(config.layer_types)}
    # Which keys each query may read: real positions, and for sliding layers those within the window. A query
    # always reads itself, so a padded position whose window holds only padding stays finite (its output is
    # never used: padding is fixed).
    keep = torch.ones((b, 1, 1, total), dtype=torch.bool, device=device) if attention_mask is None \
        else attention_mask.view(b, 1, 1, total)
    q_pos, k_pos = positions.view(1, 1, n, 1), torch.arange(total, device=device).view(1, 1, 1, total)
    itself = q_pos == k_pos  # (1, 1, n, total)
    masks = {"full_attention": keep | itself,
             "sliding_attention": (keep & ((q_pos - k_pos).abs() <= config.sliding_window)) | itself}
    new_keys, new_values = [], []
    for i, layer in enumerate(base.layers):
        attn = layer.attn
        qkv = attn.Wqkv(layer.attn_norm(hidden)).view(b, n, 3, -1, attn.head_dim)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(dim=2))  # (b, heads, n, head_dim)
        cos, sin = rotary[layer.attention_type]
        q, k = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)
        new_keys.append(k)
        new_values.append(v)
        if keys is not None:
            k, v = torch.cat([keys[i], k], dim=2), torch.cat([values[i], v], dim=2)  # (b, heads, total, head_dim)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=masks[layer.attention_type],
                                             scale=attn.head_dim ** -0.5)  # (b, heads, n, head_dim)
        hidden = hidden + attn.out_drop(attn.Wo(out.transpose(1, 2).reshape(b, n, -1)))
        hidden = hidden + layer.mlp(layer.mlp_norm(hidden))
    logits = model.decoder(model.head(base.final_norm(hidden)))  # (b, n, V)
    return logits, new_keys, new_values


def prefix_end(row) -> int:
    """The first writable position of the row's current block: positions before it are all decided."""
    lo, hi, _ = row.noise.blocks[row.noise.block]
    free = row.free[lo:hi].nonzero()
    return lo + int(free[0, 0]) if free.numel() else lo


def cached_groups(adapter, rows) -> list[tuple[list[int], torch.Tensor]]:
    """The logits (b, L, V) of rows that keep a prefix cache, one pass per group of rows of one shape: rows whose
    block starts read their whole canvas and fill their cache; the others read from their prefix's end on. A row's
    logits at its prefix are zeros: nothing there is undecided, so nothing reads them."""
    model = adapter.model
    fills: dict[int, list[int]] = {}
    reads: dict[tuple[int, int], list[int]] = {}
    for i, row in enumerate(rows):
        ctx = row.context
        if ctx is None or ctx.block != row.noise.block:
            fills.setdefault(row.x.numel(), []).append(i)
        else:
            reads.setdefault((row.x.numel(), ctx.start), []).append(i)
    out = []
    for length, members in fills.items():
        ids, mask = _stack(rows, members, 0)
        logits, keys, values = forward(model, ids, 0, mask)
        for j, i in enumerate(members):
            row = rows[i]
            start = prefix_end(row)
            row.context = PrefixCache(row.noise.block, start, [k[j:j + 1, :, :start].clone() for k in keys],
                                      [v[j:j + 1, :, :start].clone() for v in values])
        out.append((members, adapter.finish(logits)))
    for (length, start), members in reads.items():
        ids, mask = _stack(rows, members, start)
        ctxs = [rows[i].context for i in members]
        keys = [torch.cat([c.keys[li] for c in ctxs]) for li in range(len(ctxs[0].keys))]
        values = [torch.cat([c.values[li] for c in ctxs]) for li in range(len(ctxs[0].values))]
        logits, _, _ = forward(model, ids, start, mask, keys, values)
        tail = adapter.finish(logits)  # (b, L - start, V)
        full = tail.new_zeros((len(members), length, tail.shape[-1]))
        full[:, start:] = tail
        out.append((members, full))
    adapter.positions_read += sum(len(m) * length for length, m in fills.items()) + \
        sum(len(m) * (length - start) for (length, start), m in reads.items())
    return out


def _stack(rows, members: list[int], start: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The rows' model input from ``start`` on (b, L - start), and their attention masks over the whole canvas."""
    ids = torch.stack([rows[i].model_input()[start:] for i in members])
    masks = [rows[i].attention_mask for i in members]
    if all(m is None for m in masks):
        return ids, None
    return ids, torch.stack([m if m is not None else torch.ones_like(rows[i].x, dtype=torch.bool)
                             for i, m in zip(members, masks)])
