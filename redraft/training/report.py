"""Quality report for trained models (``redraft model-report``): its numbers go into the model card.

One or more models, all measured on exactly the same held-out windows and positions (they must share the build
directory's tokenizer vocabulary):

* held-out masked-token top-1 accuracy and NLL at mask ratios 0.15 / 0.5 / 0.9, and on one contiguous span of
  16 tokens per window ("span16 accuracy", one forward pass), next to a unigram-frequency baseline scored on the
  same positions;
* mean written length vs N: held-out sentences with one word replaced by ``[[gap:N]]`` (N = 4, 8, 16), the mean
  number of tokens each model wrote into the gap beside the removed word's length in tokens;
* the latency of the README's first infill through the same path on the CPU (median of 5 runs after a warm-up);
* ten held-out sentences with one to three gaps each, filled through the service's own path
  (canvas compilation, the Hugging Face adapter, the sampler), shown verbatim, good or bad.
"""

from __future__ import annotations

import json
import platform
import re
import statistics
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch
from tokenizers import Tokenizer

from redraft.constraints.canvas import Canvas
from redraft.constraints.infill import compile_infill, parse_text
from redraft.errors import TrainingError
from redraft.families import ModelInfo, load_model_info, load_tokenizer, special_ids
from redraft.settings import Settings
from redraft.training.corpus import documents
from redraft.training.train import heldout_windows, unigram_baseline
from redraft.workers.adapters import get_adapter
from redraft.workers.processors.forbid_tokens import ForbidTokens
from redraft.workers.sampler import SamplerConfig, denoise

RATIOS = (0.15, 0.5, 0.9)
RATIO_SEED = 1234  # train.masked_accuracy's: the report's ratio rows are the training log's evaluation positions
SPAN = 16  # the span row: one contiguous span of this many tokens masked per window
SPAN_SEED = 4321
GAP_LENGTHS = (4, 8, 16)
# The README's first job (its quickstart), as it submits it: text, steps and seed.
QUICKSTART_TEXT = "The capital of France is [[gap:4]]. It is famous for [[gap]]."
QUICKSTART_STEPS, QUICKSTART_SEED = 16, 1
# What the service parses a [[gap]] and a [[gap:N]] with (REDRAFT_DEFAULT_GAP_TOKENS / REDRAFT_MAX_GAP_TOKENS).
DEFAULT_GAP_TOKENS = Settings.model_fields["default_gap_tokens"].default
MAX_GAP_TOKENS = Settings.model_fields["max_gap_tokens"].default


@dataclass(frozen=True)
class Model:
    """A model directory loaded for the report, on the CPU; ``name`` is the directory's name."""

    name: str
    info: ModelInfo
    adapter: object
    tokenizer: Tokenizer

    @property
    def dropped(self) -> set[int]:
        """Ids a rendered slot leaves out: the empty token and every special one (mask, pad, BOS, EOS, ...)."""
        return set(special_ids(self.info)) | {self.info.empty_id}


def model_name(model_dir: Path) -> str:
    return Path(model_dir).resolve().name


def load_model(model_dir: Path) -> Model:
    model_dir = Path(model_dir)
    info = load_model_info("report", model_dir)
    return Model(model_name(model_dir), info, get_adapter("report", model_dir, "cpu"), load_tokenizer(model_dir))


def load_models(model_dirs: list[Path], build_dir: Path) -> list[Model]:
    """The models to compare, checked first: distinct names, and each one's vocabulary the size of the build
    directory's tokenizer (the held-out windows are that tokenizer's ids)."""
    model_dirs = [Path(d) for d in model_dirs]
    if not model_dirs:
        raise TrainingError("model-report needs at least one model directory")
    names = [model_name(d) for d in model_dirs]
    for name in names:
        if names.count(name) > 1:
            raise TrainingError(f"two model directories are named {name!r}; the report names each model by its "
                                "directory, so give them distinct names")
    tok_file = Path(build_dir) / "tokenizer" / "tokenizer.json"
    if not tok_file.exists():
        raise TrainingError(f"{tok_file} does not exist; `redraft train --build-dir {build_dir}` writes it")
    vocab = Tokenizer.from_file(str(tok_file)).get_vocab_size()
    for name, model_dir in zip(names, model_dirs, strict=True):
        size = load_model_info("report", model_dir).vocab_size
        if size != vocab:
            raise TrainingError(f"model {name!r} ({model_dir}) has a vocabulary of {size} tokens but the build "
                                f"directory's tokenizer ({tok_file}) has {vocab}; a model is measured on the "
                                "tokens of the corpus it was trained on")
    return [load_model(d) for d in model_dirs]


def train_counts(build_dir: Path, vocab_size: int) -> torch.Tensor:
    counts = torch.zeros(vocab_size, dtype=torch.long)
    for path in sorted(build_dir.glob("train_*.pt")):
        counts += torch.bincount(torch.load(path).long(), minlength=vocab_size)
    return counts


def ratio_mask(shape: tuple[int, int], ratio: float, seed: int = RATIO_SEED) -> torch.Tensor:
    """(N, L) bool: each position masked with probability ``ratio``, drawn as train.masked_accuracy draws it."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < ratio


def span_mask(shape: tuple[int, int], span: int = SPAN, seed: int = SPAN_SEED) -> torch.Tensor:
    """(N, L) bool: one contiguous run of ``span`` positions per row, its start drawn from a seeded generator."""
    n, length = shape
    if length < span:
        raise TrainingError(f"a window of {length} tokens cannot hold a {span}-token span")
    starts = torch.randint(0, length - span + 1, (n, 1), generator=torch.Generator().manual_seed(seed))  # (N, 1)
    pos = torch.arange(length).unsqueeze(0)  # (1, L)
    return (pos >= starts) & (pos < starts + span)


@torch.no_grad()
def masked_scores(model: Model, windows: torch.Tensor, masked: torch.Tensor, batch: int = 64) -> tuple[float, float]:
    """Top-1 accuracy and mean NLL (nats) of one forward pass with the ``masked`` positions (N, L) masked."""
    correct, nll, count = 0, 0.0, 0
    for i in range(0, len(windows), batch):
        x, m = windows[i : i + batch], masked[i : i + batch]
        logits = model.adapter.logits(torch.where(m, model.info.mask_id, x))  # (b, L, V) float32
        logp = logits.log_softmax(-1)
        correct += int((logits.argmax(-1) == x)[m].sum())
        nll -= float(logp.gather(-1, x.unsqueeze(-1)).squeeze(-1)[m].sum())
        count += int(m.sum())
    if count == 0:
        return float("nan"), float("nan")
    return correct / count, nll / count


def accuracy_table(model_dirs: list[Path], build_dir: Path, n_windows: int = 512, seq_len: int = 128) -> list[dict]:
    """One row per mask ratio, then the 16-token span row; each row has every model's accuracy and NLL
    (``models``: name -> {accuracy, nll}) and the unigram baseline's, all on the same positions."""
    models = load_models(model_dirs, build_dir)
    windows = heldout_windows(build_dir, n_windows, seq_len)  # (N, L)
    counts = train_counts(build_dir, models[0].info.vocab_size)
    masks = [({"ratio": r}, ratio_mask(windows.shape, r)) for r in RATIOS]
    masks.append(({"ratio": None, "span": SPAN}, span_mask(windows.shape)))
    rows = []
    for key, masked in masks:
        scores = {}
        for model in models:
            acc, nll = masked_scores(model, windows, masked)
            scores[model.name] = {"accuracy": acc, "nll": nll}
        base_acc, base_nll = unigram_baseline(counts, windows, masked)
        rows.append({**key, "positions": int(masked.sum()), "models": scores,
                     "unigram_accuracy": base_acc, "unigram_nll": base_nll})
    return rows


def heldout_sentences(n: int = 10) -> list[str]:
    """Short held-out sentences (at least four words) from prose sources (never trained on)."""
    out = []
    for doc in documents():
        if not doc.held_out or doc.source not in ("wiki", "fortunes"):
            continue
        first = re.split(r"(?<=[.!?])\s+", doc.text.strip())[0]
        if 60 <= len(first) <= 160 and "\n" not in first and len(words(first)) >= 4:
            out.append(first)
    step = max(1, len(out) // n)
    return out[::step][:n]


def words(sentence: str) -> list[str]:
    """A sentence's words as :func:`gapped` sees them: the non-empty pieces between spaces."""
    return [w for w in sentence.split(" ") if w]


def gapped(sentence: str, index: int, n_gaps: int | None = None, tokens: int = 4) -> tuple[str, list[str]]:
    """Replace words (chosen deterministically from ``index``; never the first) with ``[[gap:tokens]]`` markers:
    ``n_gaps`` of them (fewer where the sentence has fewer words to pick), by default one to three. Returns the
    text and the removed words, in order; the rest of the sentence, spaces included, is kept.

    A sentence needs two words at least (:func:`words`): a ``ValueError`` otherwise."""
    pieces = sentence.split(" ")
    candidates = [i for i, w in enumerate(pieces) if w][1:]  # every word but the first
    if not candidates:
        raise ValueError(f"a sentence to gap needs at least two words: {sentence!r}")
    n_gaps = 1 + index % 3 if n_gaps is None else n_gaps
    picks = sorted({candidates[(3 + 7 * k + index) % len(candidates)] for k in range(n_gaps)})
    removed = []
    for p in picks:
        removed.append(pieces[p])
        pieces[p] = f"[[gap:{tokens}]]"
    return " ".join(pieces), removed


def written_tokens(canvas: Canvas, token_ids: list[int], slot: int, dropped: set[int]) -> list[int]:
    """The ids a slot's rendered value is decoded from: its positions' tokens less the empty and special ones."""
    return [token_ids[p] for p in canvas.slot_positions(slot) if token_ids[p] not in dropped]


def _infill(model: Model, text: str, steps: int, seed: int = 0) -> tuple[Canvas, list[int]]:
    """``text`` through the service's infill path: canvas, adapter, sampler (its defaults: greedy)."""
    canvas = compile_infill(parse_text(text, DEFAULT_GAP_TOKENS, MAX_GAP_TOKENS), model.tokenizer, model.info)
    procs = [ForbidTokens(special_ids(model.info), model.info.vocab_size)]
    out = denoise(model.adapter.logits, torch.tensor([canvas.token_ids]), torch.tensor([canvas.fixed]),
                  model.info.mask_id, SamplerConfig(steps=steps), [torch.Generator().manual_seed(seed)], procs)
    return canvas, out.tokens[0].tolist()


def infill_examples(model_dir: Path, n: int = 10, steps: int = 8) -> list[dict]:
    model = load_model(model_dir)
    rows = []
    for i, sentence in enumerate(heldout_sentences(n)):
        text, removed = gapped(sentence, i)
        canvas, tokens = _infill(model, text, steps)
        filled, gaps = canvas.render(tokens, model.tokenizer, model.info)
        rows.append({"input": text, "original_words": removed, "model_gaps": gaps, "output": filled})
    return rows


def word_tokens(tokenizer: Tokenizer, word: str) -> int:
    """A removed word's length in tokens as the model would write it in the gap: with its leading space (the
    canvas leaves the space before a gap out of the fixed text, and byte-level tokens carry it)."""
    return len(tokenizer.encode(" " + word, add_special_tokens=False).ids)


def gap_length_table(model_dirs: list[Path], n: int = 10, steps: int = 8,
                     lengths: tuple[int, ...] = GAP_LENGTHS) -> list[dict]:
    """Per N: the held-out sentences with one word replaced by ``[[gap:N]]`` (the same word for every N), and per
    model the mean tokens written into the gap and the mean length of the removed word in tokens."""
    models = [load_model(d) for d in model_dirs]
    sentences = heldout_sentences(n)
    rows = []
    for size in lengths:
        cases = [gapped(s, i, n_gaps=1, tokens=size) for i, s in enumerate(sentences)]
        scores = {}
        for model in models:
            written, removed, dropped = [], [], model.dropped
            for text, (word,) in cases:
                canvas, tokens = _infill(model, text, steps)
                written.append(len(written_tokens(canvas, tokens, 0, dropped)))
                removed.append(word_tokens(model.tokenizer, word))
            scores[model.name] = {"written": statistics.fmean(written) if written else float("nan"),
                                  "removed": statistics.fmean(removed) if removed else float("nan")}
        rows.append({"gap": size, "sentences": len(cases), "models": scores})
    return rows


def machine() -> dict:
    return {"date": date.today().isoformat(), "processor": platform.processor() or "unknown",
            "machine": platform.machine() or "unknown", "threads": torch.get_num_threads()}


def latency_table(model_dirs: list[Path], runs: int = 5, text: str = QUICKSTART_TEXT, steps: int = QUICKSTART_STEPS,
                  seed: int = QUICKSTART_SEED) -> list[dict]:
    """Per model: the median wall time (ms) of ``text`` through the infill path on the CPU (compile, denoise,
    render), over ``runs`` runs after one warm-up. A report figure, for this machine only."""
    if runs < 1:
        raise ValueError(f"latency needs at least one timed run; got {runs}")
    rows = []
    for model in [load_model(d) for d in model_dirs]:
        times = []
        for i in range(runs + 1):
            started = time.perf_counter()
            canvas, tokens = _infill(model, text, steps, seed)
            canvas.render(tokens, model.tokenizer, model.info)
            if i:  # the first run warms up
                times.append(time.perf_counter() - started)
        rows.append({"model": model.name, "median_ms": 1000 * statistics.median(times), "runs": runs,
                     "text": text, "steps": steps, **machine()})
    return rows


def _names(rows: list[dict]) -> list[str]:
    return list(rows[0]["models"]) if rows else []


def markdown(table: list[dict], examples: dict[str, list[dict]], lengths: list[dict] | None = None,
             latency: list[dict] | None = None) -> str:
    names = _names(table)
    head = "".join(f" {m}: top-1 accuracy | {m}: NLL (nats) |" for m in names)
    lines = [f"| mask ratio | positions |{head} unigram accuracy | unigram NLL |",
             "| --- | --- |" + " --- | --- |" * len(names) + " --- | --- |"]
    for r in table:
        label = r["ratio"] if r.get("span") is None else f"{r['span']}-token span"
        cells = "".join(f" {r['models'][m]['accuracy']:.3f} | {r['models'][m]['nll']:.3f} |" for m in names)
        lines.append(f"| {label} | {r['positions']} |{cells} {r['unigram_accuracy']:.3f} | {r['unigram_nll']:.3f} |")
    if lengths:
        names = _names(lengths)
        lines += ["", "Mean written length vs N (one word of each held-out sentence replaced by `[[gap:N]]`; tokens):",
                  "", "| N | sentences |" + "".join(f" {m}: removed word | {m}: written |" for m in names),
                  "| --- | --- |" + " --- | --- |" * len(names)]
        for r in lengths:
            cells = "".join(f" {r['models'][m]['removed']:.2f} | {r['models'][m]['written']:.2f} |" for m in names)
            lines.append(f"| {r['gap']} | {r['sentences']} |{cells}")
    if latency:
        lines += ["", f"Latency of the README's first infill (`{latency[0]['text']}`, {latency[0]['steps']} steps) "
                  f"on the CPU: median of {latency[0]['runs']} runs after a warm-up:", "",
                  "| model | median (ms) | date | processor / machine | torch threads |",
                  "| --- | --- | --- | --- | --- |"]
        for r in latency:
            lines.append(f"| {r['model']} | {r['median_ms']:.1f} | {r['date']} | {r['processor']} / {r['machine']} "
                         f"| {r['threads']} |")
    lines += ["", "Held-out infills (greedy, 8 steps; `[[gap:4]]` = up to 4 tokens):", ""]
    models = list(examples)
    for i, first in enumerate(examples[models[0]] if models else [], 1):
        lines.append(f"{i}. input: `{first['input']}`  ")
        lines.append(f"   removed: {json.dumps(first['original_words'])}  ")
        for m in models:
            e = examples[m][i - 1]
            lines.append(f"   {m} wrote: {json.dumps(e['model_gaps'])} · output: `{e['output']}`  ")
    if lines[-1].endswith("  "):
        lines[-1] = lines[-1].rstrip()
    return "\n".join(lines)


def run_report(model_dirs: list[Path], build_dir: Path, n_windows: int = 512, seq_len: int = 128,
               n_examples: int = 10) -> str:
    model_dirs = [Path(d) for d in model_dirs]
    load_models(model_dirs, build_dir)  # refuses models that cannot be compared before any is measured
    table = accuracy_table(model_dirs, build_dir, n_windows, seq_len)
    lengths = gap_length_table(model_dirs, n_examples)
    latency = latency_table(model_dirs)
    examples = {model_name(d): infill_examples(d, n_examples) for d in model_dirs}
    return markdown(table, examples, lengths, latency)
