"""What the two noise policies' group steps share: a group's candidates, the model's own distribution at them, the
rows' processors, and the acceptance rules' ranking (``mask_noise.step_group``, ``uniform_noise.step_group``).

A group is the rows of one forward pass, their logits ``raw`` (b, W, V). Candidates are the positions a step
proposes for, listed row after row (``flat`` indexes ``raw.view(b * W, V)``); per-row values are spread over a
row's candidates as (N,) tensors, and (N,) values are laid back out as (b, W) for the acceptance rules. The
V-wide passes over the candidates run in chunks that stay in cache on a CPU, all at once on a GPU.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

# On a CPU the V-wide work of a step runs over this many bytes of logits at a time, so each chunk stays in cache
# through its passes (copy, normaliser, maximum, CDF, search); a GPU takes a step's candidates at once.
CPU_CHUNK_BYTES = 2 * 1024 * 1024


_pinned = threading.local()  # per thread (an engine loop, a caller stepping rows): its pinned host buffers, by use


def to_host(t: torch.Tensor, use: str) -> np.ndarray:
    """One of a step's host reads: ``t`` as a host array, read before the step goes on. On the CPU, ``t`` itself; from
    a GPU, through this thread's page-locked buffer for ``use`` (grown as needed, kept step to step), which the GPU
    writes directly rather than through a staging copy. The array is valid until the thread's next read for ``use``."""
    if t.device.type == "cpu":
        return t.numpy()
    buffers = _pinned.__dict__.setdefault("buffers", {})
    key = (use, t.dtype)
    if key not in buffers or buffers[key].numel() < t.numel():
        buffers[key] = torch.empty(t.numel(), dtype=t.dtype, pin_memory=True)
    out = buffers[key][: t.numel()].view(t.shape)
    out.copy_(t, non_blocking=True)
    torch.cuda.current_stream(t.device).synchronize()
    return out.numpy()


@dataclass(eq=False)
class Candidates:
    """The candidates of a group, row after row: ``rows``/``pos`` (N,) on the logits' device, ``pos_h`` the
    positions on the host, ``counts``/``starts`` per row, ``flat`` (N,) rows of ``raw.view(b * W, V)``."""

    rows: torch.Tensor
    pos: torch.Tensor
    pos_h: list[int]
    counts: list[int]
    starts: list[int]
    flat: torch.Tensor
    width: int
    chunk: int  # candidates per V-wide pass

    @classmethod
    def of(cls, cand: torch.Tensor, raw: torch.Tensor) -> Candidates:
        """From the (b, W) candidate mask of a group whose logits are ``raw`` (b, W, V): one host read."""
        b, width, vocab = raw.shape
        ri_h, pi_h = torch.from_numpy(to_host(cand, "candidates")).nonzero(as_tuple=True)  # (N,) each candidate's
        # row and position, row after row
        counts = torch.bincount(ri_h, minlength=b).tolist()
        starts = [0]
        for n in counts:
            starts.append(starts[-1] + n)
        ri, pi = ri_h.to(raw.device), pi_h.to(raw.device)
        n = int(ri_h.shape[0])
        chunk = n if raw.device.type == "cuda" else max(1, CPU_CHUNK_BYTES // (vocab * raw.element_size()))
        return cls(ri, pi, pi_h.tolist(), counts, starts, ri * width + pi, width, max(1, chunk))

    @property
    def n(self) -> int:
        return self.starts[-1]

    def mine(self, j: int) -> slice:
        """Row ``j``'s candidates in the (N,) tensors."""
        return slice(self.starts[j], self.starts[j + 1])

    def chunks(self):
        """(start, end) of each V-wide pass over the candidates."""
        return ((c0, min(c0 + self.chunk, self.n)) for c0 in range(0, self.n, self.chunk))

    def spread(self, values: list, dtype=torch.float32) -> torch.Tensor:
        """One value per row, repeated over the row's candidates: (N,) on the device."""
        return torch.tensor(values, dtype=dtype).repeat_interleave(torch.tensor(self.counts)).to(self.flat.device)

    def at_rows(self, members: list[int]) -> torch.Tensor:
        """The (N,) indices of the candidates of rows ``members``, on the device."""
        if not members:
            return torch.zeros(0, dtype=torch.long, device=self.flat.device)
        return torch.cat([torch.arange(self.starts[j], self.starts[j + 1]) for j in members]).to(self.flat.device)

    def padded(self, values: torch.Tensor, fill: float, b: int) -> torch.Tensor:
        """(N,) values laid out as (b, W), ``fill`` off the candidates."""
        out = torch.full((b, self.width), fill, dtype=values.dtype, device=values.device)  # (b, W)
        out[self.rows, self.pos] = values
        return out


def own_distribution(flat_raw: torch.Tensor, c: Candidates, temp: torch.Tensor | None,
                     needs_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The normaliser (N,) of the model's own distribution at each candidate and, if asked, its entropy (N,) at
    the row's temperature ``temp`` (N,) (0: greedy, the entropy of the logits as they are)."""
    device = flat_raw.device
    lse = torch.empty(c.n, device=device)
    entropy = torch.empty(c.n, device=device) if needs_entropy else None
    for c0, c1 in c.chunks():
        own = flat_raw.index_select(0, c.flat[c0:c1])  # (c, V)
        lse[c0:c1] = own.logsumexp(-1)
        if entropy is not None:
            t = temp[c0:c1]
            scaled = own / torch.where(t > 0, t, 1.0).unsqueeze(1)
            entropy[c0:c1] = torch.distributions.Categorical(logits=scaled, validate_args=False).entropy()
    return lse, entropy


def keep_own(rows, flat_raw: torch.Tensor, c: Candidates) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """A copy of the model's own logits (n_k, V) at the candidates of rows whose processors change values (a
    structure target's forced path, a soft guide), and where they sit among the candidates (n_k,); (None, None)
    when every processor only forbids tokens, which leaves an allowed token's logit as the model gave it."""
    keeps = [j for j, r in enumerate(rows) if any(not getattr(p, "masks_only", False) for p in r.processors)]
    if not keeps:
        return None, None
    at = c.at_rows(keeps)
    return at, flat_raw.index_select(0, c.flat[at])


def own_logit(processed_at: torch.Tensor, tokens: torch.Tensor, kept_at, kept) -> torch.Tensor:
    """The model's own logit (N,) of ``tokens`` (N,) whose processed logit is ``processed_at`` (N,)."""
    if kept is None:
        return processed_at
    out = processed_at.clone()
    out[kept_at] = kept.gather(-1, tokens[kept_at].unsqueeze(1)).squeeze(1)
    return out


def apply_processors(rows, raw: torch.Tensor, xs: list[torch.Tensor], stills: list[torch.Tensor],
                     offsets: list[int], errors: list) -> None:
    """Each row's processors on its logits ``raw[j:j+1]`` (1, W, V), in place, with its canvas ``xs[j]`` (1, L),
    undecided positions ``stills[j]`` (1, L) and window offset. A row whose processor raises gets the error in
    ``errors[j]`` and takes no part in the rest of the step."""
    for j, r in enumerate(rows):
        if not r.processors:
            continue
        view = raw[j:j + 1]
        logits = view
        try:
            for proc in r.processors:
                logits = proc(logits, xs[j], stills[j], [r.proc_index], offset=offsets[j])
        except Exception as exc:  # noqa: BLE001 - this row's failure is this row's alone
            errors[j] = exc
            continue
        if logits.data_ptr() != view.data_ptr():
            view.copy_(logits)


def acceptance_keys(rows, members: list[int], conf: torch.Tensor, entropy: torch.Tensor | None, cand: torch.Tensor,
                    steps_left: torch.Tensor, counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The acceptance rules of rows ``members``, each kind for its rows at once: an ordering key (b, W) (higher
    first) and how many to take (b,) (0 for rows not in ``members``)."""
    b, width = conf.shape
    key = torch.full((b, width), float("-inf"), device=conf.device)
    k = torch.zeros(b, dtype=torch.long, device=conf.device)
    kinds: dict[type, list[int]] = {}
    for j in members:
        kinds.setdefault(type(rows[j].accept), []).append(j)
    for kind, js in kinds.items():
        idx = torch.tensor(js, device=conf.device)
        key_m, k_m = kind.choose_rows([rows[j].accept for j in js], conf[idx], None if entropy is None else entropy[idx],
                                      cand[idx], steps_left[idx], [rows[j].generator for j in js], [counts[j] for j in js])
        key[idx], k[idx] = key_m.to(key.dtype), k_m
    return key, k


def ranks(ranked: torch.Tensor) -> torch.Tensor:
    """Each position's place (b, W) in its row's order, highest ``ranked`` first (ties: left first)."""
    order = ranked.argsort(dim=1, descending=True, stable=True)  # (b, W)
    places = torch.arange(ranked.shape[1], device=ranked.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, places)
