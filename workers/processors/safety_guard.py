"""Safety targets during denoising: ``banned`` phrases and ``pii`` never appear in model-written text.

``SafetyGuard`` is a logits processor with the sampler's ``admissible`` hook. Before each step it
sets to ``-inf``, at every still-masked slot position, the tokens ``TextGuard`` forbids between that
position's known contexts (``constraints/safety/`` has the definitions and the proof that checking
at commit time is complete); at each commit, ``admissible`` re-checks the one token against the
canvas as it stands, commits made earlier in the same step included.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer

from redraft.constraints.canvas import Canvas
from redraft.constraints.safety import CONTEXT_CHARS, SafetyTargets, TextGuard, split_pending, text_guard
from redraft.families import ModelInfo


class CanvasText:
    """A canvas's text layout, computed once: its slots' positions in text order and the fixed text
    between them (BOS/EOS are not text). ``context(x, position)`` gives what ``TextGuard`` needs at a
    masked slot position of the token list ``x`` (L,). A walk outwards stops at a masked position, at
    either end, or once ``CONTEXT_CHARS`` non-whitespace characters are in (counted low: tokens split
    inside a UTF-8 character count none) and, with ``email``, a character no email match holds."""

    def __init__(self, canvas: Canvas, guard: TextGuard, mask_id: int) -> None:
        order = [p for p in canvas.pieces if isinstance(p, int)]
        if sorted(order) != list(range(len(canvas.slots))):
            raise ValueError(f"canvas pieces {canvas.pieces!r} do not name each of its {len(canvas.slots)} slots once")
        self.positions = [canvas.slot_positions(k) for k in order]  # slots in text order
        flat = [p for ps in self.positions for p in ps]
        if flat != sorted(flat):
            raise ValueError("canvas slots are not in the order of its pieces")
        gaps = [""]  # gaps[k]: fixed text before the k-th slot; gaps[-1]: after the last one
        for piece in canvas.pieces:
            if isinstance(piece, str):
                gaps[-1] += piece
            else:
                gaps.append("")
        self.where = {p: (k, j) for k, ps in enumerate(self.positions) for j, p in enumerate(ps)}
        self.guard = guard
        self.mask_id = mask_id
        # Per gap, each side: the part that can matter (when trimmed, it is enough on its own), whether it
        # is the whole gap, its non-whitespace characters, and whether it ends any email run.
        self.tails = [guard.trim_left(g) for g in gaps]
        self.heads = [guard.trim_right(g) for g in gaps]
        self.tail_whole = [len(t) == len(g) for t, g in zip(self.tails, gaps)]
        self.head_whole = [len(h) == len(g) for h, g in zip(self.heads, gaps)]
        self.tail_weight = [len("".join(t.split())) for t in self.tails]
        self.head_weight = [len("".join(h.split())) for h in self.heads]
        self.tail_break = [guard.has_break(t) for t in self.tails]
        self.head_break = [guard.has_break(h) for h in self.heads]

    def context(self, x: list[int], position: int) -> tuple[str, str, bytes, bytes]:
        """(left, right, left_bytes, right_bytes) at ``position``: the rendered text of the known runs
        either side, bounded to what can matter; ``left_bytes`` is an incomplete UTF-8 sequence ending
        the left run in the same slot, ``right_bytes`` the continuation bytes starting the right one."""
        left, left_bytes = self._left(x, position)
        right, right_bytes = self._right(x, position)
        return left, right, left_bytes, right_bytes

    def _left(self, x: list[int], position: int) -> tuple[str, bytes]:
        table = self.guard.table
        k, j = self.where[position]
        chunks: list[str] = []  # nearest first
        weight, broke = 0, not self.guard.needs_break
        pending = b""
        first = True
        while True:
            ps = self.positions[k]
            ids: list[int] = []
            done = False
            while j > 0:
                t = x[ps[j - 1]]
                if t == self.mask_id:
                    done = True
                    break
                ids.append(t)
                weight += table.weight[t]
                broke = broke or table.breaks[t]
                j -= 1
                if weight >= CONTEXT_CHARS and broke:
                    done = True
                    break
            data = b"".join([table.data[t] for t in reversed(ids)])
            if first:
                text, pending = split_pending(data)
            else:
                text = data.decode("utf-8", "replace")
            chunks.append(text)
            first = False
            if done:
                break
            chunks.append(self.tails[k])
            weight += self.tail_weight[k]
            broke = broke or self.tail_break[k]
            if k == 0 or not self.tail_whole[k] or (weight >= CONTEXT_CHARS and broke):
                break
            k -= 1
            j = len(self.positions[k])
        return "".join(reversed(chunks)), pending

    def _right(self, x: list[int], position: int) -> tuple[str, bytes]:
        table = self.guard.table
        k, j = self.where[position]
        j += 1
        chunks: list[str] = []
        weight, broke = 0, not self.guard.needs_break
        lead = b""
        first = True
        while True:
            ps = self.positions[k]
            ids: list[int] = []
            done = False
            while j < len(ps):
                t = x[ps[j]]
                if t == self.mask_id:
                    done = True
                    break
                ids.append(t)
                weight += table.weight[t]
                broke = broke or table.breaks[t]
                j += 1
                if weight >= CONTEXT_CHARS and broke:
                    done = True
                    break
            data = b"".join([table.data[t] for t in ids])
            if first:
                n = 0
                while n < len(data) and 0x80 <= data[n] < 0xC0:
                    n += 1
                lead, data = data[:n], data[n:]
            chunks.append(data.decode("utf-8", "replace"))
            first = False
            if done:
                break
            chunks.append(self.heads[k + 1])
            weight += self.head_weight[k + 1]
            broke = broke or self.head_break[k + 1]
            if k + 1 == len(self.positions) or not self.head_whole[k + 1] or (weight >= CONTEXT_CHARS and broke):
                break
            k += 1
            j = 0
        return "".join(chunks), lead


class SafetyGuard:
    """Logits processor (with ``admissible``) for the ``banned`` / ``pii`` safety targets.

    ``rows`` maps a batch row to its canvas and compiled ``TextGuard``; rows not in it are left alone.
    """

    masks_only = True  # it forbids tokens; it never changes an allowed one's logit

    def __init__(self, rows: dict[int, tuple[Canvas, TextGuard]], info: ModelInfo) -> None:
        self.info = info
        self.rows = {row: (CanvasText(canvas, guard, info.mask_id), guard) for row, (canvas, guard) in rows.items()}
        self.in_slot = {row: torch.tensor([s >= 0 for s in canvas.slot_of])  # (L,)
                        for row, (canvas, _) in rows.items()}
        self._static: dict[tuple[int, str], torch.Tensor] = {}

    @classmethod
    def for_canvas(cls, canvas: Canvas, targets: SafetyTargets | None, tokenizer: Tokenizer,
                   info: ModelInfo) -> SafetyGuard | None:
        """The guard of a one-row job; None when there is nothing to guard."""
        if targets is None:
            return None
        return cls({0: (canvas, text_guard(targets, tokenizer))}, info)

    def _static_ids(self, guard: TextGuard, device: torch.device) -> torch.Tensor:
        key = (id(guard), str(device))
        if key not in self._static:
            self._static[key] = torch.tensor(guard.static_ids, dtype=torch.long, device=device)  # (S,)
        return self._static[key]

    def __call__(self, logits: torch.Tensor, x: torch.Tensor, free: torch.Tensor, rows: list[int],
                 offset: int = 0) -> torch.Tensor:
        vocab, width = logits.shape[-1], logits.shape[1]
        for j, row in enumerate(rows):
            if row not in self.rows:
                continue
            text, guard = self.rows[row]
            in_slot = self.in_slot[row].to(free.device)  # (L,) the canvas; x may carry padding after it
            pos = (free[j, : in_slot.numel()] & in_slot).nonzero().squeeze(1)  # (n,)
            pos = pos[(pos >= offset) & (pos < offset + width)]  # the positions these logits are for
            if pos.numel() == 0:
                continue
            rel = pos - offset  # (n,) rows of the window's logits
            static = self._static_ids(guard, logits.device)
            static = static[static < vocab]
            if static.numel():
                logits[j, rel.unsqueeze(1), static.unsqueeze(0)] = float("-inf")
            if vocab > len(guard.table.data):  # ids the tokenizer does not know: no text to check
                logits[j, rel, len(guard.table.data):] = float("-inf")
            xs = x[j].tolist()
            at: list[int] = []
            ids: list[int] = []
            for p in pos.tolist():
                banned = [i for i in guard.dynamic(*text.context(xs, p)) if i < vocab]
                at += [p - offset] * len(banned)
                ids += banned
            if ids:
                dev = logits.device
                logits[j, torch.tensor(at, device=dev), torch.tensor(ids, device=dev)] = float("-inf")
        return logits

    def admissible(self, row: int, x_row: torch.Tensor, position: int, token: int) -> bool:
        entry = self.rows.get(row)
        if entry is None or position not in entry[0].where:
            return True
        text, guard = entry
        left, right, left_bytes, right_bytes = text.context(x_row.tolist(), position)
        return guard.allows(left, token, right, left_bytes=left_bytes, right_bytes=right_bytes)
