"""The model report on tiny models trained for two and three steps on the tiny corpus: the accuracy table (every
model on the same positions, beside the unigram baseline, with a 16-token span row), the written length vs N, the
latency of the README's first job, the held-out infills through the service's own path, and the markdown they make;
the `redraft model-report` command."""

from __future__ import annotations

import json
import re
import shutil
from datetime import date
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from redraft import cli
from redraft.constraints.infill import compile_infill, parse_text
from redraft.errors import TrainingError
from redraft.training import report
from redraft.training.corpus import Document
from redraft.training.data import SpecialIds
from redraft.training.report import (
    GAP_LENGTHS,
    QUICKSTART_SEED,
    QUICKSTART_STEPS,
    QUICKSTART_TEXT,
    RATIOS,
    SPAN,
    accuracy_table,
    gap_length_table,
    gapped,
    heldout_sentences,
    infill_examples,
    latency_table,
    load_model,
    markdown,
    masked_scores,
    run_report,
    span_mask,
    train_counts,
    word_tokens,
    written_tokens,
)
from redraft.training.train import heldout_windows, masked_accuracy

GAP = "[[gap:4]]"
README = Path(__file__).resolve().parents[3] / "README.md"


@pytest.fixture(scope="module")
def twin(trained):
    """The two-step model again, copied under another directory name."""
    _, model = trained
    return Path(shutil.copytree(model, model.parent / "twin"))


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
    table = accuracy_table([model], build, n_windows=16, seq_len=32)
    ratio_rows, span_row = table[:-1], table[-1]
    assert [row["ratio"] for row in ratio_rows] == list(RATIOS)
    positions = [row["positions"] for row in ratio_rows]
    assert positions == sorted(positions) and positions[0] > 0
    for row in ratio_rows:
        # the ratio is the fraction of the 16 x 32 positions that were masked (a uniform draw per position)
        assert abs(row["positions"] / (16 * 32) - row["ratio"]) < 0.1
    for row in table:
        assert list(row["models"]) == ["model"]  # the model is named by its directory
        scores = row["models"]["model"]
        assert 0 <= scores["accuracy"] <= 1 and 0 <= row["unigram_accuracy"] <= 1
        assert scores["nll"] > 0 and row["unigram_nll"] > 0
    assert span_row["span"] == SPAN and span_row["positions"] == 16 * SPAN  # one 16-token span per window
    assert accuracy_table([model], build, n_windows=16, seq_len=32) == table  # seeded: the same numbers each time


def test_the_ratio_rows_are_the_training_logs_evaluation(trained):
    """The report's ratio rows score exactly the positions (and so the numbers) train.masked_accuracy does."""
    build, model = trained
    table = accuracy_table([model], build, n_windows=16, seq_len=32)
    windows = heldout_windows(build, 16, 32)
    special = SpecialIds.from_tokenizer(Tokenizer.from_file(str(build / "tokenizer" / "tokenizer.json")))
    net = load_model(model).adapter.model
    for row in table[:-1]:
        acc, nll, n, _ = masked_accuracy(net, windows, row["ratio"], special)
        assert row["positions"] == n
        assert row["models"]["model"]["accuracy"] == pytest.approx(acc, abs=1e-9)
        assert row["models"]["model"]["nll"] == pytest.approx(nll, rel=1e-5)


def test_every_model_is_measured_on_the_same_windows_and_positions(trained, twin, later):
    build, model = trained
    table = accuracy_table([model, twin, later], build, n_windows=16, seq_len=32)
    for row in table:
        assert list(row["models"]) == ["model", "twin", "later"]
        # the same weights under another name score the same, to the bit: same windows, same masked positions
        assert row["models"]["twin"] == row["models"]["model"]
    # a model's numbers do not depend on the models beside it, nor on their order
    alone = accuracy_table([later], build, n_windows=16, seq_len=32)
    assert [r["models"]["later"] for r in alone] == [r["models"]["later"] for r in table]
    assert [{k: v for k, v in r.items() if k != "models"} for r in alone] == [
        {k: v for k, v in r.items() if k != "models"} for r in table
    ]


def test_the_span_row_scores_the_span_positions_in_one_forward_pass(trained):
    build, model = trained
    span_row = accuracy_table([model], build, n_windows=16, seq_len=32)[-1]
    windows = heldout_windows(build, 16, 32)
    masked = span_mask(windows.shape)
    acc, nll = masked_scores(load_model(model), windows, masked)
    assert span_row["models"]["model"] == {"accuracy": acc, "nll": nll}
    # the baseline stands on the same positions: the unigram argmax's hit rate among the span's targets
    probs_argmax = int(train_counts(build, load_model(model).info.vocab_size).argmax())
    assert span_row["unigram_accuracy"] == pytest.approx(float((windows[masked] == probs_argmax).float().mean()))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 12), st.integers(SPAN, 80), st.integers(0, 2**31))
def test_span_mask_masks_one_contiguous_span_per_window(n, length, seed):
    masked = span_mask((n, length), seed=seed)
    assert masked.shape == (n, length) and masked.dtype == torch.bool
    for row in masked.tolist():
        ones = [i for i, m in enumerate(row) if m]
        assert len(ones) == SPAN and ones == list(range(ones[0], ones[0] + SPAN))
    assert torch.equal(span_mask((n, length), seed=seed), masked)  # seeded: the same spans for every model


def test_span_mask_refuses_windows_shorter_than_the_span():
    with pytest.raises(TrainingError, match="15 tokens"):
        span_mask((4, SPAN - 1))


def test_a_model_with_another_vocabulary_is_refused(trained, tmp_path):
    build, model = trained
    other = Path(shutil.copytree(model, tmp_path / "bigger"))
    config = json.loads((other / "config.json").read_text())
    size = config["vocab_size"]
    config["vocab_size"] = size + 8
    (other / "config.json").write_text(json.dumps(config))
    message = rf"model 'bigger' .*vocabulary of {size + 8} tokens.* has {size}"
    with pytest.raises(TrainingError, match=message):
        accuracy_table([model, other], build, n_windows=4, seq_len=32)
    with pytest.raises(TrainingError, match=message):
        run_report([model, other], build, n_windows=4, seq_len=32, n_examples=1)


def test_two_directories_with_one_name_are_refused(trained, tmp_path):
    build, model = trained
    same = Path(shutil.copytree(model, tmp_path / "model"))
    with pytest.raises(TrainingError, match="two model directories are named 'model'"):
        accuracy_table([model, same], build, n_windows=4, seq_len=32)


def test_heldout_sentences_are_first_sentences_of_held_out_prose(module_corpus):
    held_out = [d.text for d in module_corpus if d.held_out and d.source in ("wiki", "fortunes")]
    sentences = heldout_sentences(5)
    assert len(sentences) == 5 and len(set(sentences)) == 5
    for s in sentences:
        assert 60 <= len(s) <= 160 and "\n" not in s
        assert len(report.words(s)) >= 4
        assert any(
            text == s or (text.startswith(s) and re.match(r"[.!?]\s", text[len(s) - 1 : len(s) + 1]))
            for text in held_out
        )


def _held_out_indices(source: str, n: int) -> list[int]:
    return [i for i in range(10_000) if Document(source, i, "").held_out][:n]


def test_heldout_sentences_need_four_words(monkeypatch):
    texts = [
        "Pneumonoultramicroscopicsilicovolcanoconiosis_is_one_very_long_word_without_any_spaces.",
        "Threewordsentencesaretoo shortforagapreport eventhoughtheyarelongenough.",
        "Four words are enough for a held-out sentence of sixty characters or more.",
    ]
    docs = [Document("wiki", i, t) for i, t in zip(_held_out_indices("wiki", 3), texts, strict=True)]
    assert all(d.held_out and 60 <= len(d.text) <= 160 for d in docs)
    monkeypatch.setattr(report, "documents", lambda: iter(docs))
    assert heldout_sentences(10) == [texts[2]]


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


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text("abc.,", min_size=1, max_size=6), min_size=2, max_size=20),
    st.lists(st.integers(1, 3), min_size=21, max_size=21),
    st.booleans(),
    st.integers(0, 100),
    st.integers(1, 4),
    st.sampled_from(GAP_LENGTHS),
)
def test_gapped_takes_any_sentence_of_two_words_or_more(words, runs, lead, index, n_gaps, tokens):
    """Runs of spaces, a leading space: never an IndexError, never an empty piece or the first word gapped, and the
    sentence comes back when the removed words are put back."""
    sentence = (" " if lead else "") + "".join(w + " " * runs[i] for i, w in enumerate(words)).rstrip(" ")
    marker = f"[[gap:{tokens}]]"
    text, removed = gapped(sentence, index, n_gaps=n_gaps, tokens=tokens)
    assert 1 <= len(removed) <= n_gaps and text.count(marker) == len(removed)
    assert all(removed) and report.words(text)[0] == words[0]
    assert gapped(sentence, index, n_gaps=n_gaps, tokens=tokens) == (text, removed)
    pieces = text.split(marker)
    assert "".join(p + w for p, w in zip(pieces, [*removed, ""], strict=True)) == sentence


@given(st.text(st.characters(exclude_characters=" "), max_size=40), st.integers(0, 100))
def test_gapped_refuses_a_sentence_of_one_word(word, index):
    with pytest.raises(ValueError, match="at least two words"):
        gapped(word, index)
    with pytest.raises(ValueError, match="at least two words"):
        gapped(f"  {word}   ", index)


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


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_written_tokens_are_the_tokens_the_rendered_gap_is_decoded_from(trained, data):
    _, model = trained
    m = load_model(model)
    canvas = compile_infill(parse_text("The old [[gap:8]] was built.", 16, 64), m.tokenizer, m.info)
    dropped = m.dropped
    ordinary = [i for i in range(m.info.vocab_size) if i not in dropped]
    specials = sorted(dropped)
    tokens = list(canvas.token_ids)
    for p in canvas.slot_positions(0):
        tokens[p] = data.draw(st.one_of(st.sampled_from(ordinary), st.sampled_from(specials)))
    written = written_tokens(canvas, tokens, 0, dropped)
    assert written == [tokens[p] for p in canvas.slot_positions(0) if tokens[p] in ordinary]
    _, (value,) = canvas.render(tokens, m.tokenizer, m.info)
    decoded = m.tokenizer.decode(written, skip_special_tokens=True)
    assert value in (decoded, decoded[1:]) and (value == decoded or decoded.startswith(" "))


def test_gap_length_table_counts_the_tokens_written_into_one_gap_of_n(trained, twin):
    _, model = trained
    rows = gap_length_table([model, twin], n=3, steps=2)
    sentences = heldout_sentences(3)
    assert [r["gap"] for r in rows] == list(GAP_LENGTHS)
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    for row in rows:
        assert row["sentences"] == len(sentences) == 3
        assert row["models"]["twin"] == row["models"]["model"]
        scores = row["models"]["model"]
        assert 0 <= scores["written"] <= row["gap"]
        # the same word of each sentence is removed for every N: its length does not change with N
        removed = [gapped(s, i, n_gaps=1)[1][0] for i, s in enumerate(sentences)]
        assert scores["removed"] == pytest.approx(sum(word_tokens(tokenizer, w) for w in removed) / 3)
    assert len({r["models"]["model"]["removed"] for r in rows}) == 1


def test_quickstart_is_the_readmes_first_job():
    body = f'"text": "{QUICKSTART_TEXT}", "steps": {QUICKSTART_STEPS}, "seed": {QUICKSTART_SEED}'
    assert body in README.read_text()


def test_latency_table_has_a_row_per_model_with_a_positive_time(trained, twin):
    _, model = trained
    rows = latency_table([model, twin], runs=2)
    assert [r["model"] for r in rows] == ["model", "twin"]
    for r in rows:
        assert r["median_ms"] > 0 and r["runs"] == 2 and r["text"] == QUICKSTART_TEXT
        assert r["threads"] == torch.get_num_threads() and r["date"] == date.today().isoformat()
    with pytest.raises(ValueError):
        latency_table([model], runs=0)


def test_markdown_tables_the_numbers_and_lists_the_infills_verbatim():
    table = [
        {
            "ratio": 0.15,
            "positions": 120,
            "models": {"tiny": {"accuracy": 0.12345, "nll": 4.56789}},
            "unigram_accuracy": 0.05,
            "unigram_nll": 6.0,
        },
        {
            "ratio": None,
            "span": 16,
            "positions": 64,
            "models": {"tiny": {"accuracy": 0.25, "nll": 3.0}},
            "unigram_accuracy": 0.0625,
            "unigram_nll": 7.0,
        },
    ]
    examples = {
        "tiny": [
            {"input": "The [[gap:4]] sat.", "original_words": ["cat"], "model_gaps": ["dog"], "output": "The dog sat."}
        ]
    }
    lines = markdown(table, examples).splitlines()
    assert lines[0].startswith("| mask ratio | positions | tiny: top-1 accuracy |") and lines[1].startswith("| --- |")
    assert lines[2] == "| 0.15 | 120 | 0.123 | 4.568 | 0.050 | 6.000 |"
    assert lines[3] == "| 16-token span | 64 | 0.250 | 3.000 | 0.062 | 7.000 |"
    assert "1. input: `The [[gap:4]] sat.`  " in lines
    assert '   removed: ["cat"]  ' in lines
    assert lines[-1] == '   tiny wrote: ["dog"] · output: `The dog sat.`'


def test_markdown_gives_each_model_a_column_group_and_tables_lengths_and_latency():
    scores = {"a": {"accuracy": 0.5, "nll": 2.0}, "b": {"accuracy": 0.25, "nll": 3.0}}
    table = [{"ratio": 0.5, "positions": 10, "models": scores, "unigram_accuracy": 0.1, "unigram_nll": 5.0}]
    lengths = [{"gap": 8, "sentences": 10, "models": {"a": {"removed": 1.5, "written": 3.25},
                                                      "b": {"removed": 1.5, "written": 8.0}}}]
    latency = [{"model": m, "median_ms": ms, "runs": 5, "text": QUICKSTART_TEXT, "steps": 16, "date": "2025-01-02",
                "processor": "x86_64", "machine": "x86_64", "threads": 4} for m, ms in (("a", 12.34), ("b", 56.0))]
    row = {"input": "A [[gap:4]] c.", "original_words": ["b"], "model_gaps": ["x"], "output": "A x c."}
    lines = markdown(table, {"a": [row], "b": [{**row, "model_gaps": ["y"], "output": "A y c."}]}, lengths, latency)
    text = lines.splitlines()
    assert text[0] == ("| mask ratio | positions | a: top-1 accuracy | a: NLL (nats) | b: top-1 accuracy | "
                       "b: NLL (nats) | unigram accuracy | unigram NLL |")
    assert text[1] == "| --- |" * 1 + " --- |" * 7
    assert text[2] == "| 0.5 | 10 | 0.500 | 2.000 | 0.250 | 3.000 | 0.100 | 5.000 |"
    assert "| N | sentences | a: removed word | a: written | b: removed word | b: written |" in text
    assert "| 8 | 10 | 1.50 | 3.25 | 1.50 | 8.00 |" in text
    assert "| a | 12.3 | 2025-01-02 | x86_64 / x86_64 | 4 |" in text
    assert "| b | 56.0 | 2025-01-02 | x86_64 / x86_64 | 4 |" in text
    assert text[-2:] == ['   a wrote: ["x"] · output: `A x c.`  ', '   b wrote: ["y"] · output: `A y c.`']


def test_run_report_compares_the_models_in_one_markdown(trained, twin, later):
    build, model = trained
    out = run_report([model, twin, later], build, n_windows=16, seq_len=32, n_examples=3).splitlines()
    header = next(line for line in out if line.startswith("| mask ratio"))
    assert [m for m in ("model", "twin", "later") if f"| {m}: top-1 accuracy |" in header] == ["model", "twin", "later"]
    assert sum(line.startswith("| 16-token span |") for line in out) == 1
    assert [line.split(" | ")[0] for line in out if re.match(r"\| (4|8|16) \| 3 \|", line)] == ["| 4", "| 8", "| 16"]
    latency = [line for line in out if re.match(r"\| (model|twin|later) \| [0-9.]+ \|", line)]
    assert [line.split(" | ")[0] for line in latency] == ["| model", "| twin", "| later"]
    assert all(float(line.split(" | ")[1]) > 0 for line in latency)
    assert sum(line.startswith("   later wrote: ") for line in out) == 3


def test_cli_model_report_takes_model_dir_more_than_once(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(report, "run_report", lambda dirs, build: calls.append((dirs, build)) or "REPORT")
    assert cli.main(["model-report", "--model-dir", "m/a", "--model-dir", "m/b", "--build-dir", "b"]) == 0
    assert cli.main(["model-report"]) == 0
    assert calls == [([Path("m/a"), Path("m/b")], Path("b")), ([Path("models/redraft-tiny")], Path("build/train"))]
    assert capsys.readouterr().out == "REPORT\nREPORT\n"


def test_cli_model_report_prints_the_refusal(trained, tmp_path, capsys):
    build, model = trained
    other = Path(shutil.copytree(model, tmp_path / "wider"))
    config = json.loads((other / "config.json").read_text())
    config["vocab_size"] += 1
    (other / "config.json").write_text(json.dumps(config))
    assert cli.main(["model-report", "--model-dir", str(model), "--model-dir", str(other),
                     "--build-dir", str(build)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and re.match(r"redraft: model 'wider' .* has a vocabulary of", captured.err)


def test_cli_model_report_prints_the_whole_report(trained, twin, capsys):
    build, model = trained
    assert cli.main(["model-report", "--model-dir", str(model), "--model-dir", str(twin),
                     "--build-dir", str(build)]) == 0
    out = capsys.readouterr().out
    assert "| model: top-1 accuracy |" in out and "| twin: top-1 accuracy |" in out
    assert "| 16-token span |" in out and "Mean written length vs N" in out and "Latency of the README" in out
    assert out.count(" wrote: ") == 2 * len(heldout_sentences(10))
