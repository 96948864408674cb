"""Tokenised corpus on disk and the training batches drawn from it (MDLM masking + gap training)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from redraft.errors import TrainingError
from redraft.training.corpus import SOURCES, documents
from redraft.training.tokenizer import save_tokenizer, train_tokenizer

# Chitchat and WordNet are over half the raw characters; weight the sources so encyclopedic and narrative prose
# dominate what is drawn (wiki, FOLDOC, the handbook, the King James text), chat and glosses least.
SOURCE_WEIGHTS = {"wiki": 0.36, "chitchat": 0.10, "wordnet": 0.06, "fortunes": 0.10, "foldoc": 0.12, "jargon": 0.06,
                  "devil": 0.02, "kjv": 0.08, "handbook": 0.10}
PACK_FORMAT = 1  # the version of pack()'s file
SPLITS = ("train", "heldout")


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
    for split in SPLITS:
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


def pack(build_dir: Path, path: Path) -> Path:
    """Everything training reads from ``build_dir`` in one file (the tokenizer, every split's streams, the
    statistics), for a training host that has none of the corpus's packages: :func:`unpack` restores it."""
    streams = {p.stem: torch.load(p) for p in sorted(build_dir.glob("*.pt")) if p.stem.split("_")[0] in SPLITS}
    if not streams:
        raise TrainingError(f"{build_dir} holds no tokenised corpus; run `redraft train --prepare-only` first")
    payload = {"format": PACK_FORMAT, "tokenizer": (build_dir / "tokenizer" / "tokenizer.json").read_text(),
               "stats": json.loads((build_dir / "corpus_stats.json").read_text()), "streams": streams}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def unpack(path: Path, build_dir: Path) -> None:
    """Write a :func:`pack` file out as the build directory ``prepare`` would have written."""
    if not path.is_file():
        raise TrainingError(f"{path} does not exist; make it with `redraft train --prepare-only --pack {path}` "
                            "where the corpus's packages are installed")
    payload = torch.load(path, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != PACK_FORMAT:
        raise TrainingError(f"{path} is not a corpus pack of format {PACK_FORMAT}; make it again with "
                            "`redraft train --prepare-only --pack FILE`")
    (build_dir / "tokenizer").mkdir(parents=True, exist_ok=True)
    save_tokenizer(Tokenizer.from_str(payload["tokenizer"]), build_dir / "tokenizer")
    for name, stream in payload["streams"].items():
        torch.save(stream, build_dir / f"{name}.pt")
    (build_dir / "corpus_stats.json").write_text(json.dumps(payload["stats"], indent=2))


class Streams:
    """The tokenised sources of one split; draws windows with source weights (a source too short for a window is
    not drawn from)."""

    def __init__(self, build_dir: Path, split: str) -> None:
        self.sources = list(SOURCES)
        self.streams = [torch.load(build_dir / f"{split}_{s}.pt").long() for s in self.sources]
        self.weights = torch.tensor([SOURCE_WEIGHTS[s] for s in self.sources])

    def windows(self, n: int, length: int, generator: torch.Generator) -> torch.Tensor:
        fits = torch.tensor([len(s) >= length for s in self.streams])
        if not fits.any():
            raise TrainingError(f"no source has a stream of {length} tokens to cut a window from")
        which = torch.multinomial(self.weights * fits, n, replacement=True, generator=generator)  # (n,)
        out = torch.empty(n, length, dtype=torch.long)
        for i, s in enumerate(which.tolist()):
            stream = self.streams[s]
            start = int(torch.randint(0, len(stream) - length + 1, (1,), generator=generator))
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
