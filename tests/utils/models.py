"""A tiny randomly initialised ModernBERT directory built in code, with Redraft's tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from redraft.settings import DEFAULT_MODEL_DIR


def make_tiny_random_model(dest: Path, context_length: int = 256) -> Path:
    """config.json + tokenizer files, no weights: the adapter initialises it randomly (seed 0)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(DEFAULT_MODEL_DIR / name, dest / name)
    vocab = json.loads((DEFAULT_MODEL_DIR / "tokenizer.json").read_text())["model"]["vocab"]
    config = {
        "model_type": "modernbert",
        "architectures": ["ModernBertForMaskedLM"],
        "vocab_size": 8192,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": context_length,
        "layer_types": ["full_attention"],
        "pad_token_id": vocab["[PAD]"],
        "bos_token_id": vocab["[BOS]"],
        "eos_token_id": vocab["[EOS]"],
        "cls_token_id": vocab["[BOS]"],
        "sep_token_id": vocab["[EOS]"],
        "mask_token_id": vocab["[MASK]"],
        "redraft": {"description": "tiny random ModernBERT for tests (random weights)"},
    }
    (dest / "config.json").write_text(json.dumps(config))
    return dest
