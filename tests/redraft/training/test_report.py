"""The model report on a tiny model trained for two steps on the tiny corpus: its accuracy table against the
unigram baseline, its held-out infills through the service's own path, and the markdown they make."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from redraft.training.report import (
    RATIOS,
    accuracy_table,
    gapped,
    heldout_sentences,
    infill_examples,
    markdown,
    train_counts,
)
from redraft.training.train import TrainConfig, export, train

GAP = "[[gap:4]]"


@pytest.fixture(scope="module")
def trained(module_corpus, tmp_path_factory):
    """(build dir, exported model dir) of a tiny ModernBERT trained for two steps on the tiny corpus, which stays
    installed for the module (the report reads held-out sentences from it)."""
    root = tmp_path_factory.mktemp("report")
    cfg = TrainConfig(
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
        seq_len=32,
        batch_size=4,
        steps=2,
        warmup_steps=1,
        eval_every=1000,
        gather_multiple=16,
    )
    train(root / "build", cfg)
    export(root / "build", root / "model")
    return root / "build", root / "model"


def test_train_counts_count_the_training_streams_only(trained, held_out_mark):
    build, model = trained
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    counts = train_counts(build, tokenizer.get_vocab_size())
    stats = json.loads((build / "corpus_stats.json").read_text())
    assert counts.shape == (tokenizer.get_vocab_size(),)
    assert int(counts.sum()) == sum(v["tokens"] for k, v in stats.items() if k.startswith("train_"))
    assert int(counts[tokenizer.token_to_id("[BOS]")]) == sum(
        v["documents"] for k, v in stats.items() if k.startswith("train_")
    )
    # the held-out mark's bytes occur in held-out documents only
    mark_ids = tokenizer.encode(held_out_mark, add_special_tokens=False).ids
    assert mark_ids and all(int(counts[i]) == 0 for i in mark_ids)


def test_accuracy_table_has_a_row_per_mask_ratio_beside_the_unigram_baseline(trained):
    build, model = trained
    table = accuracy_table(model, build, n_windows=16, seq_len=32)
    assert [row["ratio"] for row in table] == list(RATIOS)
    positions = [row["positions"] for row in table]
    assert positions == sorted(positions) and positions[0] > 0
    for row in table:
        # the ratio is the fraction of the 16 x 32 positions that were masked (a uniform draw per position)
        assert abs(row["positions"] / (16 * 32) - row["ratio"]) < 0.1
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["unigram_accuracy"] <= 1
        assert row["nll"] > 0 and row["unigram_nll"] > 0
    assert accuracy_table(model, build, n_windows=16, seq_len=32) == table  # seeded: the same numbers each time


def test_heldout_sentences_are_first_sentences_of_held_out_prose(module_corpus):
    held_out = [d.text for d in module_corpus if d.held_out and d.source in ("wiki", "fortunes")]
    sentences = heldout_sentences(5)
    assert len(sentences) == 5 and len(set(sentences)) == 5
    for s in sentences:
        assert 60 <= len(s) <= 160 and "\n" not in s
        assert any(
            text == s or (text.startswith(s) and re.match(r"[.!?]\s", text[len(s) - 1 : len(s) + 1]))
            for text in held_out
        )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text("abcdefghij.,", min_size=1, max_size=8), min_size=2, max_size=30), st.integers(0, 100))
def test_gapped_replaces_one_to_three_words_and_the_words_put_back_restore_the_sentence(words, index):
    sentence = " ".join(words)
    text, removed = gapped(sentence, index)
    out = text.split(" ")
    picks = [i for i, w in enumerate(out) if w == GAP]
    assert len(out) == len(words) and 1 <= len(picks) == len(removed) <= 1 + index % 3
    assert 0 not in picks  # the sentence keeps its first word
    assert removed == [words[i] for i in picks]
    assert [w for i, w in enumerate(out) if i not in picks] == [w for i, w in enumerate(words) if i not in picks]
    assert gapped(sentence, index) == (text, removed)  # deterministic


def test_infill_examples_fill_the_gaps_and_keep_the_rest_of_the_sentence(trained):
    _, model = trained
    rows = infill_examples(model, n=3, steps=2)
    assert [r["input"] for r in rows] == [gapped(s, i)[0] for i, s in enumerate(heldout_sentences(3))]
    for row in rows:
        assert row["input"].count(GAP) == len(row["original_words"]) == len(row["model_gaps"])
        # the fixed text never changes: the output is the input with each gap replaced by what the model wrote
        pieces = row["input"].split(GAP)
        rebuilt = pieces[0] + "".join(gap + piece for gap, piece in zip(row["model_gaps"], pieces[1:], strict=True))
        assert row["output"] == rebuilt


def test_markdown_tables_the_numbers_and_lists_the_infills_verbatim():
    table = [
        {
            "ratio": 0.15,
            "positions": 120,
            "accuracy": 0.12345,
            "nll": 4.56789,
            "unigram_accuracy": 0.05,
            "unigram_nll": 6.0,
        }
    ]
    examples = [
        {"input": "The [[gap:4]] sat.", "original_words": ["cat"], "model_gaps": ["dog"], "output": "The dog sat."}
    ]
    lines = markdown(table, examples).splitlines()
    assert lines[0].startswith("| mask ratio | positions | top-1 accuracy |") and lines[1].startswith("| --- |")
    assert lines[2] == "| 0.15 | 120 | 0.123 | 4.568 | 0.050 | 6.000 |"
    assert "1. input: `The [[gap:4]] sat.`  " in lines
    assert '   removed: ["cat"] · model wrote: ["dog"]  ' in lines
    assert lines[-1] == "   output: `The dog sat.`"
