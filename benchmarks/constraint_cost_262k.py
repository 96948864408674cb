"""Structure-target cost at DiffusionGemma's vocabulary size, V = 262,144 (not a test).

Measures, on a real-size byte-level BPE vocabulary built here (nothing is downloaded):

1. compile time of each structure target (``redraft.constraints.automaton.compile_target``: outlines-core's
   ``Index`` over every token's bytes, then the dense ``(S, V)`` int32 table), cold: each target is
   compiled in a fresh process, so neither the per-spec automaton cache nor the per-tokenizer
   outlines-core vocabulary is warm (the vocabulary build is timed on its own, as it is paid once per
   tokenizer and process);
2. the per-step cost of the slot decoder (``redraft.workers.slot_decoder.best_path``: Viterbi over slot
   position x automaton state) on random float32 log-probabilities of shape ``(n, V)``, for each slot
   length n, with no position committed and with every other position committed (from the first
   path), median of ``--repeats`` runs; the first uncommitted call at each n is reported separately
   (at the first n it also copies the automaton's tables to torch, cached per automaton afterwards);
3. one ``redraft.workers.processors.slot_targets.SlotTargets`` call on ``(1, n, V)`` logits (``best_path`` on the logits themselves
   + masking the slot's positions), no position committed;
4. for scale, a bare ``(n, V)`` log_softmax and argmax, which the sampler does every step anyway.

Each target runs in a child process watched by this one: a compile that runs past
``--compile-limit`` seconds, a measurement past ``--step-limit`` seconds, or a child whose resident
memory passes ``--mem-limit-gb`` is stopped and reported as not finished; a ``best_path`` call whose budgeted
peak (``redraft.constraints.budget.dp_step_bytes``) with its (S, V) table and the logits would pass the memory limit is
not started.

The vocabulary: ``tokenizers``' BpeTrainer (ByteLevel pre-tokenizer and decoder, as
``redraft/training/tokenizer.py``; tokens of at most 16 bytes) trained on text found offline on this
machine (gettext catalogues in ~100 languages, man pages, Python sources, package docs); if training
stops short of V, the vocabulary is topped up with the corpus's most frequent words that are not yet
tokens, then with synthetic multi-script subwords. Special tokens: <pad> (the EMPTY token, as
DiffusionGemma pads unused positions), <eos>, <bos>, <mask>. Built once and cached under var/bench/.

    python benchmarks/constraint_cost_262k.py [--vocab-size 262144] [--lengths 64,256] [--repeats 3]
                                              [--out report.md]
"""

from __future__ import annotations

import argparse
import gettext
import gzip
import json
import os
import platform
import random
import re
import select
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SPECIALS = ["<pad>", "<eos>", "<bos>", "<mask>"]  # ids 0..3; <pad> doubles as EMPTY (DiffusionGemma)
MAX_TOKEN_BYTES = 16
CORPUS_CAPS = {  # bytes of text per source
    "gettext catalogues (/usr/share/locale/*/LC_MESSAGES/*.mo, msgstr)": 60_000_000,
    "man pages (/usr/share/man, groff stripped)": 45_000_000,
    "Python sources (/usr/lib/python3*, .venv site-packages)": 40_000_000,
    "package docs (/usr/share/doc: copyright, changelogs, READMEs)": 25_000_000,
}

TARGETS: list[tuple[str, str, tuple[str, str]]] = [  # (short label, description, target)
    ("date", "date regex `\\d{4}-\\d{2}-\\d{2}`", ("regex", r"\d{4}-\d{2}-\d{2}")),
    ("choices", "choices (5 words)",
     ("choices", json.dumps(["approved", "rejected", "pending", "escalated", "withdrawn"]))),
    ("email", "email regex `[a-z0-9._%+-]+@[a-z0-9-]+(\\.[a-z0-9-]+)*\\.[a-z]{2,}`",
     ("regex", r"[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}")),
    ("json-small", "JSON {name: string maxLength 20, age: integer}", ("json_schema", json.dumps(
        {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
         "required": ["name", "age"]}))),
    ("json-45", "JSON {summary: string maxLength 45}", ("json_schema", json.dumps(
        {"type": "object", "properties": {"summary": {"type": "string", "maxLength": 45}}, "required": ["summary"]}))),
    ("json-optional", "JSON {id: integer, 4 optional: enum, boolean, number, string maxLength 12}",
     ("json_schema", json.dumps(
        {"type": "object", "properties": {"id": {"type": "integer"}, "status": {"enum": ["open", "closed", "pending"]},
                                          "done": {"type": "boolean"}, "score": {"type": "number"},
                                          "tag": {"type": "string", "maxLength": 12}},
         "required": ["id"]}))),
]


# ---------------------------------------------------------------------------------------------- vocabulary


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map (the ByteLevel alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_B2U = _bytes_to_unicode()


def _byte_level(text: str) -> str:
    return "".join(_B2U[b] for b in text.encode("utf-8"))


def _files(roots: list[Path], pattern: str) -> list[Path]:
    out: list[Path] = []
    for root in roots:
        if root.is_dir():
            out.extend(p for p in root.rglob(pattern) if p.is_file() and not p.is_symlink())
    return sorted(out)


def _mo_texts():
    for path in _files([Path("/usr/share/locale"), Path("/usr/share/locale-langpack")], "*.mo"):
        if path.parents[1].name.startswith("en"):  # English (en, en_GB, en@quot): the msgids again
            continue
        try:
            with path.open("rb") as fp:
                catalog = gettext.GNUTranslations(fp)._catalog  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - a broken catalogue is skipped
            continue
        texts = [v for k, v in catalog.items() if k and isinstance(v, str)]
        if texts:
            yield "\n".join(texts)


_GROFF_ESCAPE = re.compile(r"\\f[BIRP]|\\f\(..|\\\(..|\\\*.|\\[&|^ ]|\\s[-+]?\d")


def _man_texts():
    for path in _files([Path("/usr/share/man")], "*.gz"):
        try:
            raw = gzip.open(path).read().decode("utf-8", errors="replace")
        except Exception:  # noqa: BLE001
            continue
        lines = []
        for line in raw.splitlines():
            if line.startswith(('.\\"', "'\\\"")):
                continue
            if line.startswith((".", "'")):
                line = line.partition(" ")[2]
            line = _GROFF_ESCAPE.sub("", line).replace("\\-", "-").replace("\\e", "\\")
            if line.strip():
                lines.append(line)
        yield "\n".join(lines)


def _py_texts():
    roots = sorted(Path("/usr/lib").glob("python3*")) + sorted((REPO / ".venv" / "lib").glob("python3*/site-packages"))
    for path in _files(roots, "*.py"):
        try:
            yield path.read_text(encoding="utf-8")
        except Exception:  # noqa: BLE001
            continue


def _doc_texts():
    for path in _files([Path("/usr/share/doc")], "*"):
        name = path.name.lower()
        try:
            if name.endswith(".gz"):
                yield gzip.open(path).read().decode("utf-8", errors="replace")
            elif name in ("copyright", "readme", "news", "authors") or name.endswith((".txt", ".md", ".rst")):
                yield path.read_text(encoding="utf-8", errors="replace")
        except Exception:  # noqa: BLE001
            continue


def corpus(stats: dict[str, int]):
    """Documents (str) from every offline source, each up to its cap; ``stats`` gets bytes per source."""
    for (name, cap), gen in zip(CORPUS_CAPS.items(), (_mo_texts, _man_texts, _py_texts, _doc_texts)):
        stats[name] = 0
        for doc in gen():
            n = len(doc.encode("utf-8", errors="replace"))
            if stats[name] + n > cap:
                continue
            stats[name] += n
            yield doc
            if stats[name] >= cap * 0.999:
                break


def _synthetic_tokens(taken: set[str], need: int, rng: random.Random) -> list[str]:
    """Distinct plausible subwords in several scripts, digits and punctuation, 1-16 bytes, with and
    without a leading space (byte-level spelled)."""
    scripts = [
        ("latin", list("bcdfghjklmnprstvwz"), list("aeiouy") + ["ä", "é", "ö", "ü", "ã", "ø"]),
        ("cyrillic", list("бвгджзклмнпрстфхцчшщ"), list("аеиоуыэюяё")),
        ("greek", list("βγδζθκλμνξπρστφχψ"), list("αεηιουω")),
        ("devanagari", list("कखगघचजटडतदनपबमयरलवसह"), ["", "ा", "ि", "ी", "ु", "े", "ो"]),
        ("arabic", list("بتثجحخدذرزسشصضطظعغفقكلمنهوي"), ["", "ا", "و", "ي"]),
    ]
    cjk = [chr(c) for c in range(0x4E00, 0x9FFF)] + [chr(c) for c in range(0xAC00, 0xD7A3)]
    hira = [chr(c) for c in range(0x3041, 0x3097)]
    punct = list(".,;:!?-_()[]{}<>/\\\"'`~@#$%^&*+=|")
    out: list[str] = []
    seen = set(taken)

    def add(text: str) -> None:
        if 1 <= len(text.encode("utf-8")) <= MAX_TOKEN_BYTES:
            tok = _byte_level(text)
            if tok not in seen:
                seen.add(tok)
                out.append(tok)

    while len(out) < need:
        kind = rng.random()
        if kind < 0.6:
            _, cons, vows = rng.choice(scripts)
            word = "".join(rng.choice(cons) + rng.choice(vows) for _ in range(rng.randint(1, 5)))
            if rng.random() < 0.3:
                word = word[: rng.randint(1, len(word))]
        elif kind < 0.8:
            pool = cjk if rng.random() < 0.7 else hira
            word = "".join(rng.choice(pool) for _ in range(rng.randint(1, 5)))
        elif kind < 0.9:
            word = str(rng.randint(0, 10 ** rng.randint(1, 8)))
        else:
            word = "".join(rng.choice(punct) for _ in range(rng.randint(1, 4)))
        if rng.random() < 0.15:
            word = word.capitalize()
        add((" " + word) if rng.random() < 0.5 else word)
    return out[:need]


def build_tokenizer(vocab_size: int, cache_dir: Path, rebuild: bool = False):
    """The cached benchmark tokenizer (a ``tokenizers.Tokenizer``) and a dict saying how it was built."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    path, info_path = cache_dir / "tokenizer.json", cache_dir / "build.json"
    if path.exists() and info_path.exists() and not rebuild:
        tokenizer = Tokenizer.from_file(str(path))
        if tokenizer.get_vocab_size(with_added_tokens=True) == vocab_size:
            info = json.loads(info_path.read_text())
            info["cached"] = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
            return tokenizer, info
    t0 = time.perf_counter()
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2,
                                  max_token_length=MAX_TOKEN_BYTES, show_progress=False)
    stats: dict[str, int] = {}
    print(f"building a {vocab_size:,}-token byte-level BPE vocabulary from offline text (once; cached in {cache_dir})",
          file=sys.stderr, flush=True)
    tokenizer.train_from_iterator(corpus(stats), trainer=trainer)
    trained = tokenizer.get_vocab_size(with_added_tokens=True)
    train_s = time.perf_counter() - t0
    print(f"  trained: {trained:,} tokens in {train_s:.0f} s", file=sys.stderr, flush=True)

    spec = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    taken = set(vocab) | set(SPECIALS)
    need = vocab_size - trained
    words: list[str] = []
    if need > 0:  # the corpus's most frequent pre-tokenized words that are not tokens yet
        counts: Counter[str] = Counter()
        sample: dict[str, int] = {}
        for doc in corpus(sample):
            counts.update(w for w, _ in tokenizer.pre_tokenizer.pre_tokenize_str(doc))
        words = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                 if w not in taken and 2 <= len(w) <= MAX_TOKEN_BYTES][:need]
        taken.update(words)
    synthetic = _synthetic_tokens(taken, need - len(words), random.Random(0)) if need > len(words) else []
    next_id = max(vocab.values()) + 1
    for tok in words + synthetic:
        vocab[tok] = next_id
        next_id += 1
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    total = tokenizer.get_vocab_size(with_added_tokens=True)
    if total != vocab_size:
        raise RuntimeError(f"built {total} tokens, wanted {vocab_size}")
    lengths = Counter(min(len(t), MAX_TOKEN_BYTES) for t in vocab)  # byte-level chars == bytes
    info = {
        "vocab_size": total,
        "corpus_bytes": stats,
        "trained_tokens": trained,
        "topup_corpus_words": len(words),
        "topup_synthetic": len(synthetic),
        "build_seconds": round(time.perf_counter() - t0, 1),
        "token_bytes_histogram": {str(k): lengths[k] for k in sorted(lengths)},
        "specials": {s: tokenizer.token_to_id(s) for s in SPECIALS},
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    info_path.write_text(json.dumps(info, indent=1))
    info["cached"] = None
    return tokenizer, info


def describe_build(info: dict) -> str:
    corpus_mb = sum(info["corpus_bytes"].values()) / 1e6
    sources = "; ".join(f"{k}: {v / 1e6:.1f} MB" for k, v in info["corpus_bytes"].items())
    hist = info["token_bytes_histogram"]
    mean = sum(int(k) * v for k, v in hist.items()) / max(1, sum(hist.values()))
    text = (f"Vocabulary: {info['vocab_size']:,} tokens, byte-level BPE trained with `tokenizers`' BpeTrainer "
            f"(ByteLevel pre-tokenizer/decoder, tokens <= {MAX_TOKEN_BYTES} bytes, min_frequency 2) on "
            f"{corpus_mb:.0f} MB of offline text ({sources}): {info['trained_tokens']:,} trained tokens")
    if info["topup_corpus_words"] or info["topup_synthetic"]:
        text += (f", topped up with {info['topup_corpus_words']:,} frequent corpus words that were not yet tokens"
                 f" and {info['topup_synthetic']:,} synthetic multi-script subwords/digits/punctuation")
    text += (f"; mean token length {mean:.1f} bytes; specials {', '.join(info['specials'])} "
             f"(ids {', '.join(str(v) for v in info['specials'].values())}; <pad> is the EMPTY token); "
             f"built in {info['build_seconds']:.0f} s")
    text += f", loaded from the cache {info['cached']}." if info.get("cached") else " (this run)."
    return text


# ---------------------------------------------------------------------------------------------- child


def _emit(**event) -> None:
    print(json.dumps(event), flush=True)


def worker(args: argparse.Namespace) -> None:
    """One target, in a fresh process: emits JSON lines ({"begin": key} before each measurement)."""
    import torch
    from tokenizers import Tokenizer

    from redraft.constraints import automaton as am
    from redraft.constraints import budget
    from redraft.workers.processors.slot_targets import ConstrainedSlot, SlotTargets
    from redraft.workers.slot_decoder import best_path

    torch.set_num_threads(args.threads)
    tokenizer = Tokenizer.from_file(args.tokenizer)
    V = tokenizer.get_vocab_size(with_added_tokens=True)
    ids = {s: tokenizer.token_to_id(s) for s in SPECIALS}
    eos, empty = ids["<eos>"], ids["<pad>"]
    special = {ids["<bos>"], ids["<mask>"]}  # as the workers: the specials less EMPTY
    target = TARGETS[args.worker][2]

    _emit(begin="vocabulary")
    t0 = time.perf_counter()
    am._vocabulary(tokenizer, eos, frozenset(special))
    _emit(key="vocabulary", s=time.perf_counter() - t0)

    _emit(begin="compile")
    t0 = time.perf_counter()
    try:
        auto = am.compile_target(target, tokenizer, eos, special)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        states = re.search(r"compiles to (\d+) states", str(exc))
        _emit(key="compile", s=time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}",
              states=int(states.group(1)) if states else None)
        return
    compile_s = time.perf_counter() - t0
    E, c = auto.n_edges, auto.classes
    _emit(key="compile", s=compile_s, states=auto.n_states, edges=E, table_mib=auto.nbytes / 2**20,
          pairs=c.n_pairs, class_tokens=c.n_class_tokens)

    g = torch.Generator().manual_seed(0)
    limit_bytes = args.mem_limit_gb * 1e9
    for n in args.lengths:
        logp = (torch.randn(n, V, generator=g) * 3).log_softmax(-1)  # (n, V) float32
        # best_path's own peak (constraints.budget.dp_step_bytes), its (S, V) table on torch, and logp itself.
        need = budget.dp_step_bytes(n, c.n_class_tokens, c.n_pairs, auto.n_states, auto.max_committed_moves) + 4 * auto.n_states * V + 8 * n * V
        path = None
        for mode in ("none", "half"):
            key = f"best_path n={n} {mode}"
            if need > limit_bytes:
                _emit(key=key, skipped=f"needs ~{need / 1e9:.0f} GB (> {args.mem_limit_gb:g} GB limit)")
                continue
            if mode == "half" and path is None:
                _emit(key=key, skipped="no path from the uncommitted run")
                continue
            committed = [None] * n if mode == "none" else [t if i % 2 == 0 else None for i, t in enumerate(path)]
            _emit(begin=key)
            times = []
            calls = args.repeats + (mode == "none")  # the first call (at the first n, it builds the torch tables)
            while len(times) < calls and sum(times) + (times[-1] if times else 0) < args.step_limit * 0.8:
                t0 = time.perf_counter()
                out = best_path(auto, logp, committed, empty, 0)
                times.append(time.perf_counter() - t0)
                if mode == "none" and path is None:
                    path = out
            first = times[0]
            if mode == "none" and len(times) > 1:  # reported apart as "first call"
                times = times[1:]
            _emit(key=key, s=statistics.median(times), runs=len(times), first=first,
                  found=out is not None, wanted=args.repeats)
        key = f"SlotTargets n={n}"
        if need + 4 * n * V > limit_bytes:
            _emit(key=key, skipped=f"needs ~{(need + 4 * n * V) / 1e9:.0f} GB (> {args.mem_limit_gb:g} GB limit)")
            continue
        proc = SlotTargets({0: [ConstrainedSlot("slot", list(range(n)), auto, 0)]}, empty)
        logits = torch.randn(1, n, V, generator=g) * 3  # (1, n, V)
        x = torch.full((1, n), ids["<mask>"], dtype=torch.long)
        free = torch.ones(1, n, dtype=torch.bool)
        _emit(begin=key)
        times = []
        while len(times) < args.repeats and sum(times) + (times[-1] if times else 0) < args.step_limit * 0.8:
            batch = logits.clone()
            t0 = time.perf_counter()
            proc(batch, x, free, [0])
            times.append(time.perf_counter() - t0)
        _emit(key=key, s=statistics.median(times), runs=len(times), wanted=args.repeats)


# ---------------------------------------------------------------------------------------------- parent


def _rss_gb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return 0.0


def run_target(index: int, args: argparse.Namespace, tokenizer_path: Path) -> dict:
    """Run one target's child; returns {key: result dict}, with a "stopped" entry if it was stopped."""
    cmd = [sys.executable, __file__, "--worker", str(index), "--tokenizer", str(tokenizer_path),
           "--lengths", ",".join(map(str, args.lengths)), "--repeats", str(args.repeats),
           "--threads", str(args.threads), "--step-limit", str(args.step_limit),
           "--mem-limit-gb", str(args.mem_limit_gb)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            start_new_session=True)
    results: dict[str, dict] = {}
    current, started, peak = "start", time.monotonic(), 0.0
    buf = ""
    while True:
        limit = args.compile_limit if current == "compile" else args.step_limit
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        peak = max(peak, _rss_gb(proc.pid))
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536).decode()
            if not chunk:
                break
            buf += chunk
            while "\n" in buf:
                line, buf = buf.split("\n", 1)
                event = json.loads(line)
                if "begin" in event:
                    current, started = event["begin"], time.monotonic()
                else:
                    results[event.pop("key")] = event
                    current, started = "between", time.monotonic()
        elapsed = time.monotonic() - started
        reason = None
        if elapsed > limit:
            reason = f"> {limit:.0f} s (not finished)"
        elif peak > args.mem_limit_gb:
            reason = f"stopped: resident memory passed {args.mem_limit_gb:g} GB after {elapsed:.0f} s"
        if reason:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            results[current] = {"stopped": reason}
            results["_stopped_at"] = {"key": current}
            break
    proc.wait()
    err = proc.stderr.read()
    if proc.returncode not in (0, -signal.SIGKILL) and "_stopped_at" not in results:
        results[current] = {"stopped": f"child failed (rc {proc.returncode}): {err.strip().splitlines()[-1:]}"}
        results["_stopped_at"] = {"key": current}
    results["_peak_rss_gb"] = {"value": peak}
    return results


def _fmt_s(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def _cell(results: dict, key: str) -> str:
    r = results.get(key)
    if r is None:
        return "not run (stopped earlier)" if "_stopped_at" in results else "—"
    if "stopped" in r:
        return r["stopped"]
    if "skipped" in r:
        return f"not run: {r['skipped']}"
    if "error" in r:
        cap = re.search(r"\((\d+) x (\d+) tokens, (\d+) MiB\) exceeds the cap of (\d+) entries", r["error"])
        if cap:
            return (f"rejected after {_fmt_s(r['s'])}: {cap.group(1)} x {int(cap.group(2)):,} table "
                    f"({cap.group(3)} MiB) over the {int(cap.group(4)) // 2**20} Mi-entry cap")
        return f"error after {_fmt_s(r['s'])}: {r['error'][:200]}"
    text = _fmt_s(r["s"])
    if r.get("runs", 1) < r.get("wanted", 1):
        text += f" ({r['runs']} of {r['wanted']} runs: time limit)"
    if r.get("found") is False:
        text += " (no path)"
    return text


def scale_rows(lengths: list[int], V: int, repeats: int) -> list[tuple[int, float, float]]:
    import torch

    g = torch.Generator().manual_seed(1)
    rows = []
    for n in lengths:
        x = torch.randn(n, V, generator=g) * 3
        ls, am = [], []
        for _ in range(max(3, repeats)):
            t0 = time.perf_counter()
            x.log_softmax(-1)
            ls.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            x.argmax(-1)
            am.append(time.perf_counter() - t0)
        rows.append((n, statistics.median(ls), statistics.median(am)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab-size", type=int, default=262_144)
    parser.add_argument("--lengths", default="64,256", help="slot lengths n, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="runs per step measurement (median reported)")
    parser.add_argument("--out", help="also write the markdown report to this file")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--compile-limit", type=float, default=120, help="seconds before a compile is stopped")
    parser.add_argument("--step-limit", type=float, default=120,
                        help="seconds before one step measurement (all its repeats) is stopped")
    parser.add_argument("--mem-limit-gb", type=float, default=8, help="memory a target's child may use")
    parser.add_argument("--cache-dir", default=None, help="tokenizer cache (default var/bench/bpe-<V>)")
    parser.add_argument("--rebuild-tokenizer", action="store_true")
    parser.add_argument("--note", default="", help="a line about the machine's state, added to the report")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.lengths = [int(x) for x in str(args.lengths).split(",") if x]
    if args.worker is not None:
        worker(args)
        return

    import torch

    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, REPO), *sys.argv[1:]])
    began = time.perf_counter()
    cache_dir = Path(args.cache_dir) if args.cache_dir else REPO / "var" / "bench" / f"bpe-{args.vocab_size}"
    tokenizer, build = build_tokenizer(args.vocab_size, cache_dir, args.rebuild_tokenizer)
    print(describe_build(build), file=sys.stderr, flush=True)
    V = tokenizer.get_vocab_size(with_added_tokens=True)
    torch.set_num_threads(args.threads)
    scale = scale_rows(args.lengths, V, args.repeats)

    per_target = []
    load_before = os.getloadavg()
    for i, (label, _, _) in enumerate(TARGETS):
        print(f"measuring {label} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        res = run_target(i, args, cache_dir / "tokenizer.json")
        print(f"  done in {time.perf_counter() - t0:.0f} s: "
              f"{ {k: v for k, v in res.items() if not k.startswith('_')} }", file=sys.stderr, flush=True)
        per_target.append(res)
    load_after = os.getloadavg()

    lines = [
        f"Measured {datetime.now().strftime('%Y-%m-%d %H:%M')} on {platform.platform()} ({platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}), torch {torch.__version__}, "
        f"{args.threads} torch thread(s); 1-minute load average {load_before[0]:.1f} before the targets, "
        f"{load_after[0]:.1f} after. Command: `{command}`",
    ]
    if args.note:
        lines += ["", args.note]
    lines += ["", describe_build(build), ""]
    head = ["target", "states S", "edges E", "pairs P / class tokens M", "kept (classes)", "compile (cold)"]
    for n in args.lengths:
        head += [f"best_path n={n}: first call", f"n={n}: none committed", f"n={n}: half committed",
                 f"SlotTargets n={n}"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    vocab_times, errors = [], []
    for (label, desc, _), res in zip(TARGETS, per_target):
        comp = res.get("compile", {})
        if "s" in res.get("vocabulary", {}):
            vocab_times.append(res["vocabulary"]["s"])
        if "error" in comp:
            errors.append(f"{label}: {comp['error']}")
        ok = "edges" in comp
        states = str(comp["states"]) if comp.get("states") is not None else "—"
        row = [desc, states, f"{comp['edges']:,}" if ok else "—",
               f"{comp['pairs']:,} / {comp['class_tokens']:,}" if ok else "—",
               f"{comp['table_mib']:.0f} MiB" if ok else "—",
               _cell(res, "compile")]
        for n in args.lengths:
            first = res.get(f"best_path n={n} none", {})
            none_cell = _cell(res, f"best_path n={n} none") if ok else "—"
            row += [_fmt_s(first["first"]) if "first" in first else none_cell, none_cell,
                    _cell(res, f"best_path n={n} half") if ok else "—",
                    _cell(res, f"SlotTargets n={n}") if ok else "—"]
        lines.append("| " + " | ".join(row) + " |")
    peaks = ", ".join(f"{label} {res['_peak_rss_gb']['value']:.1f} GB"
                      for (label, _, _), res in zip(TARGETS, per_target))
    lines += [
        "",
        f"Compile: one cold `compile_target` in a fresh process; the tokenizer's outlines-core vocabulary, "
        f"built once per tokenizer and process, is timed apart: "
        f"{_fmt_s(statistics.median(vocab_times)) if vocab_times else 'not measured'} (median of "
        f"{len(vocab_times)} processes). best_path: median of {args.repeats} calls (fewer when the next would pass "
        f"the time limit: then the count is shown) on random float32 (n, V) log-probabilities, min_tokens 0; "
        f"the first call at each n is shown apart and left out of the median (at the first n it also copies "
        f"the automaton's tables to torch, cached afterwards); half committed = every other position fixed "
        f"to the uncommitted best path's token. "
        f"SlotTargets: one call on (1, n, V) float32 logits, the whole canvas one slot, nothing committed "
        f"(best_path on the logits + masking), tables already cached. Limits: {args.compile_limit:.0f} s per "
        f"compile, {args.step_limit:.0f} s per measurement, {args.mem_limit_gb:g} GB per process "
        f"(a best_path call is not started when its budgeted peak, constraints.budget.dp_step_bytes, with its "
        f"(S, V) table and the logits would pass it). "
        f"Peak resident memory per process: {peaks}.",
    ]
    if errors:
        lines += ["", "Compile errors, verbatim: " + "; ".join(f"{e}" for e in errors)]
    lines += [
        "",
        "| for scale, per step | " + " | ".join(f"n={n}" for n, _, _ in scale) + " |",
        "|---|" + "---|" * len(scale),
        f"| bare log_softmax of (n, {V:,}) float32 | " + " | ".join(_fmt_s(x) for _, x, _ in scale) + " |",
        f"| bare argmax of (n, {V:,}) float32 | " + " | ".join(_fmt_s(a) for _, _, a in scale) + " |",
        "",
        f"Whole run: {time.perf_counter() - began:.0f} s "
        f"(tokenizer {'loaded from the cache' if build.get('cached') else 'built in this run'}).",
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")


if __name__ == "__main__":
    main()
