"""Quality report for a trained model (``redraft model-report``): its numbers go into the model card.

* held-out masked-token top-1 accuracy and NLL at mask ratios 0.15 / 0.5 / 0.9, next to a
  unigram-frequency baseline scored on exactly the same positions;
* ten held-out sentences with one to three gaps each, filled through the service's own path
  (canvas compilation, the Hugging Face adapter, the sampler), shown verbatim, good or bad.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from redraft.constraints.infill import compile_infill, parse_text
from redraft.families import load_model_info, load_tokenizer, special_ids
from redraft.training.corpus import documents
from redraft.training.data import SpecialIds
from redraft.training.train import heldout_windows, masked_accuracy, unigram_baseline
from redraft.workers.adapters import get_adapter
from redraft.workers.processors.forbid_tokens import ForbidTokens
from redraft.workers.sampler import SamplerConfig, denoise

RATIOS = (0.15, 0.5, 0.9)


def train_counts(build_dir: Path, vocab_size: int) -> torch.Tensor:
    counts = torch.zeros(vocab_size, dtype=torch.long)
    for path in sorted(build_dir.glob("train_*.pt")):
        counts += torch.bincount(torch.load(path).long(), minlength=vocab_size)
    return counts


def accuracy_table(model_dir: Path, build_dir: Path, n_windows: int = 512, seq_len: int = 128) -> list[dict]:
    info = load_model_info("report", model_dir)
    adapter = get_adapter("report", model_dir, "cpu")
    tokenizer = load_tokenizer(model_dir)
    special = SpecialIds.from_tokenizer(tokenizer)
    windows = heldout_windows(build_dir, n_windows, seq_len)
    counts = train_counts(build_dir, info.vocab_size)
    rows = []
    for ratio in RATIOS:
        acc, nll, n, masked = masked_accuracy(adapter.model, windows, ratio, special)
        base_acc, base_nll = unigram_baseline(counts, windows, masked)
        rows.append({"ratio": ratio, "positions": n, "accuracy": acc, "nll": nll,
                     "unigram_accuracy": base_acc, "unigram_nll": base_nll})
    return rows


def heldout_sentences(n: int = 10) -> list[str]:
    """Short held-out sentences from prose sources (never trained on)."""
    out = []
    for doc in documents():
        if not doc.held_out or doc.source not in ("wiki", "fortunes"):
            continue
        first = re.split(r"(?<=[.!?])\s+", doc.text.strip())[0]
        if 60 <= len(first) <= 160 and "\n" not in first:
            out.append(first)
    step = max(1, len(out) // n)
    return out[::step][:n]


def gapped(sentence: str, index: int) -> tuple[str, list[str]]:
    """Replace one to three words (chosen deterministically) with [[gap:N]] markers."""
    words = sentence.split(" ")
    n_gaps = 1 + index % 3
    picks = sorted({(3 + 7 * k + index) % max(1, len(words) - 1) + 1 for k in range(n_gaps)})
    removed = []
    for p in picks:
        removed.append(words[p])
        words[p] = "[[gap:4]]"
    return " ".join(words), removed


def infill_examples(model_dir: Path, n: int = 10, steps: int = 8) -> list[dict]:
    info = load_model_info("report", model_dir)
    adapter = get_adapter("report", model_dir, "cpu")
    tokenizer = load_tokenizer(model_dir)
    procs = [ForbidTokens(special_ids(info), info.vocab_size)]
    rows = []
    for i, sentence in enumerate(heldout_sentences(n)):
        text, removed = gapped(sentence, i)
        canvas = compile_infill(parse_text(text, 16, 64), tokenizer, info)
        out = denoise(adapter.logits, torch.tensor([canvas.token_ids]), torch.tensor([canvas.fixed]), info.mask_id,
                      SamplerConfig(steps=steps), [torch.Generator().manual_seed(0)], procs)
        filled, gaps = canvas.render(out.tokens[0].tolist(), tokenizer, info)
        rows.append({"input": text, "original_words": removed, "model_gaps": gaps, "output": filled})
    return rows


def markdown(table: list[dict], examples: list[dict]) -> str:
    lines = ["| mask ratio | positions | top-1 accuracy | NLL (nats) | unigram accuracy | unigram NLL |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in table:
        lines.append(f"| {r['ratio']} | {r['positions']} | {r['accuracy']:.3f} | {r['nll']:.3f} | "
                     f"{r['unigram_accuracy']:.3f} | {r['unigram_nll']:.3f} |")
    lines += ["", "Held-out infills (greedy, 8 steps; `[[gap:4]]` = up to 4 tokens):", ""]
    for i, e in enumerate(examples, 1):
        lines.append(f"{i}. input: `{e['input']}`  ")
        lines.append(f"   removed: {json.dumps(e['original_words'])} · model wrote: {json.dumps(e['model_gaps'])}  ")
        lines.append(f"   output: `{e['output']}`")
    return "\n".join(lines)


def run_report(model_dir: Path, build_dir: Path) -> str:
    return markdown(accuracy_table(model_dir, build_dir), infill_examples(model_dir))
