"""The shipped model: loads offline through the service's adapter and beats a unigram baseline on a
held-out sample (a quality floor, not a timing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from redraft.families import load_model_info, load_tokenizer
from redraft.settings import DEFAULT_MODEL_DIR, get_settings
from redraft.workers.adapters import get_adapter

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "heldout_sample.jsonl"
INFO = load_model_info("redraft-tiny", DEFAULT_MODEL_DIR)


def test_default_model_is_the_shipped_one():
    settings = get_settings()
    assert settings.default_model == "redraft-tiny" and settings.models["redraft-tiny"] == DEFAULT_MODEL_DIR


def test_shipped_model_has_trained_weights_and_loads_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert INFO.weights_present, "models/redraft-tiny must ship model.safetensors"
    assert (DEFAULT_MODEL_DIR / "model.safetensors").stat().st_size < 50 * 2**20
    adapter = get_adapter("redraft-tiny", DEFAULT_MODEL_DIR, "cpu")
    assert type(adapter.model).__name__ == "ModernBertForMaskedLM"
    assert not INFO.public()["random_weights"]


@pytest.mark.parametrize("ratio", [0.15, 0.5])
def test_beats_the_unigram_baseline_on_held_out_text(ratio):
    """Top-1 accuracy on masked held-out tokens vs always guessing the sample's most frequent token
    (a baseline that has even seen the test set's frequencies)."""
    tokenizer = load_tokenizer(DEFAULT_MODEL_DIR)
    adapter = get_adapter("redraft-tiny", DEFAULT_MODEL_DIR, "cpu")
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    g = torch.Generator().manual_seed(0)
    correct = total = 0
    targets_all = []
    for row in rows:
        ids = [INFO.bos_id] + tokenizer.encode(row["text"], add_special_tokens=False).ids[:126] + [INFO.eos_id]
        x = torch.tensor([ids])  # (1, L)
        masked = torch.rand(x.shape, generator=g) < ratio
        masked[:, 0] = masked[:, -1] = False
        logits = adapter.logits(torch.where(masked, INFO.mask_id, x))  # (1, L, V)
        correct += int((logits.argmax(-1) == x)[masked].sum())
        total += int(masked.sum())
        targets_all.append(x[masked])
    targets = torch.cat(targets_all)
    baseline = targets.bincount().max().item() / total
    model_acc = correct / total
    assert model_acc > baseline + 0.05, f"model {model_acc:.3f} vs unigram {baseline:.3f}"
