"""Tokenised corpus on disk and the training batches drawn from it (MDLM masking + gap training)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from redraft.training.corpus import SOURCES, documents
from redraft.training.tokenizer import save_tokenizer, train_tokenizer

# Chitchat and WordNet are ~80% of the raw characters; weight the sources so prose infill matters.
SOURCE_WEIGHTS = {"wiki": 0.40, "chitchat": 0.25, "wordnet": 0.15, "fortunes": 0.20}


@dataclass(frozen=True)
class SpecialIds:
    pad: int
    mask: int
    bos: int
    eos: int
    empty: int

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer) -> SpecialIds:
        ids = {name: tokenizer.token_to_id(f"[{name.upper()}]") for name in ("pad", "mask", "bos", "eos", "empty")}
        return cls(**ids)


def prepare(build_dir: Path) -> None:
    """Train the tokenizer and tokenise every source into one flat int16 stream per (split, source).

    Each document becomes ``[BOS] tokens [EOS]``; windows are cut from the stream, so a window may
    span documents, as in packed pre-training.
    """
    tok_dir = build_dir / "tokenizer"
    docs = list(documents())
    if not (tok_dir / "tokenizer.json").exists():
        tokenizer = train_tokenizer(d.text for d in docs if not d.held_out)
        save_tokenizer(tokenizer, tok_dir)
    tokenizer = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    special = SpecialIds.from_tokenizer(tokenizer)
    stats: dict[str, dict[str, int]] = {}
    for split in ("train", "heldout"):
        for source in SOURCES:
            texts = [d.text for d in docs if d.source == source and d.held_out == (split == "heldout")]
            encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
            flat: list[int] = []
            for enc in encodings:
                flat.append(special.bos)
                flat.extend(enc.ids)
                flat.append(special.eos)
            torch.save(torch.tensor(flat, dtype=torch.int16), build_dir / f"{split}_{source}.pt")
            stats[f"{split}_{source}"] = {"documents": len(texts), "tokens": len(flat)}
    (build_dir / "corpus_stats.json").write_text(json.dumps(stats, indent=2))


class Streams:
    """The tokenised sources of one split; draws windows with source weights."""

    def __init__(self, build_dir: Path, split: str) -> None:
        self.sources = list(SOURCES)
        self.streams = [torch.load(build_dir / f"{split}_{s}.pt").long() for s in self.sources]
        self.weights = torch.tensor([SOURCE_WEIGHTS[s] for s in self.sources])

    def windows(self, n: int, length: int, generator: torch.Generator) -> torch.Tensor:
        which = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (n,)
        out = torch.empty(n, length, dtype=torch.long)
        for i, s in enumerate(which.tolist()):
            stream = self.streams[s]
            start = int(torch.randint(0, len(stream) - length, (1,), generator=generator))
            out[i] = stream[start : start + length]
        return out


def mdlm_batch(
    x: torch.Tensor, special: SpecialIds, generator: torch.Generator, gap_prob: float = 0.3, max_empty: int = 12
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask a batch of windows for the masked-diffusion loss.

    Each row draws t ~ U(0, 1) and masks each position with probability t; its masked positions
    weigh 1/t (the MDLM ELBO weight). With probability ``gap_prob`` a row also gets a variable-length
    gap: a span followed by 1..max_empty [EMPTY] tokens, all masked with weight 1, so the model learns
    to leave the unused tail of an ``[[gap:N]]`` empty.

    Returns (inputs (B, L), targets (B, L), weights (B, L)); weight 0 means "not scored".
    """
    b, length = x.shape
    x = x.clone()
    gap_region = torch.zeros(b, length, dtype=torch.bool)
    for i in range(b):
        if float(torch.rand((), generator=generator)) >= gap_prob:
            continue
        n_empty = int(torch.randint(1, max_empty + 1, (), generator=generator))
        span = int(torch.randint(0, 17, (), generator=generator))
        start = int(torch.randint(1, length - span - n_empty, (), generator=generator))
        end = start + span
        row = torch.cat([x[i, :end], torch.full((n_empty,), special.empty), x[i, end : length - n_empty]])
        x[i] = row
        gap_region[i, start : end + n_empty] = True
    t = torch.rand(b, 1, generator=generator).clamp_min(1e-3)  # (B, 1)
    masked = (torch.rand(b, length, generator=generator) < t) | gap_region  # (B, L)
    weights = torch.where(gap_region, torch.ones_like(t.expand(b, length)), 1.0 / t.expand(b, length))
    weights = weights * masked
    inputs = torch.where(masked, torch.full_like(x, special.mask), x)
    return inputs, x, weights
