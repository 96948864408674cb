"""The model card (``redraft model-report --card``): every figure in it is read from the model, its build directory
and the report, none typed by hand."""

from __future__ import annotations

import json
import re

import pytest

from redraft import cli
from redraft.errors import TrainingError
from redraft.training.card import (
    ATTRIBUTION,
    architecture,
    command_for,
    corpus_stats,
    corpus_table,
    model_card,
    training_section,
)
from redraft.training.corpus import SOURCES
from redraft.training.data import SOURCE_WEIGHTS, SPLITS
from redraft.training.train import SIZES


def test_the_corpus_table_has_every_source_with_its_licence_weight_and_counts(trained):
    build, model = trained
    stats = json.loads((build / "corpus_stats.json").read_text())
    assert corpus_stats(model, build) == (stats, SOURCE_WEIGHTS)  # as the export recorded it
    table = corpus_table(stats, SOURCE_WEIGHTS)
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    assert [r[0] for r in rows] == [*SOURCES, "all"]
    for row, (source, (origin, licence)) in zip(rows, SOURCES.items(), strict=False):
        docs = " / ".join(f"{stats[f'{split}_{source}']['documents']:,}" for split in SPLITS)
        tokens = " / ".join(f"{stats[f'{split}_{source}']['tokens']:,}" for split in SPLITS)
        assert row[1:6] == [origin, licence, docs, tokens, f"{SOURCE_WEIGHTS[source]:.2f}"]
    total = " / ".join(f"{sum(v['tokens'] for k, v in stats.items() if k.startswith(split)):,}" for split in SPLITS)
    assert rows[-1][4] == total


def test_the_training_section_counts_the_tokens_and_tables_the_runs_and_evaluations(trained):
    build, model = trained
    meta = json.loads((model / "config.json").read_text())["redraft"]
    text = training_section(model, build)
    cfg = meta["train_config"]
    assert f"**{meta['trained_steps']:,} steps**" in text
    assert f"{meta['trained_steps'] * cfg['batch_size'] * cfg['seq_len'] / 1e6:.1f}M training tokens" in text
    (run,) = meta["runs"]  # one run, on this machine's CPU, from step 0
    assert run["from_step"] == 0 and run["to_step"] == meta["trained_steps"] and run["machine"].startswith("CPU ")
    assert re.search(rf"\| 1 \| {run['date']} \| {re.escape(run['machine'])} \| 0 → {run['to_step']} \|", text)
    evals = [json.loads(line) for line in (build / "train_log.jsonl").read_text().splitlines()]
    for r in (r for r in evals if "acc@0.15" in r):
        assert f"| {r['step']:,} | {r['loss']:.3f} | {r['acc@0.15']:.3f} |" in text


def test_a_resumed_run_is_a_second_run_of_the_later_model(trained, later):
    import json as _json

    runs = _json.loads((later / "config.json").read_text())["redraft"]["runs"]
    assert [(r["from_step"], r["to_step"]) for r in runs] == [(0, 2), (2, 3)]


def test_the_architecture_line_is_the_config_and_parameter_count(trained):
    _, model = trained
    config = json.loads((model / "config.json").read_text())
    line = architecture(model, 123_456)
    assert f"{config['num_hidden_layers']} layers, hidden {config['hidden_size']}" in line
    assert "0.12M parameters, 0 MB in fp16" in line and f"{config['vocab_size']:,} tokens" in line


def test_the_command_is_the_recipe_of_the_models_size(trained, tmp_path):
    _, model = trained
    assert "--size" not in command_for(model)  # the test model's shape is neither size's
    small = tmp_path / "small"
    small.mkdir()
    cfg = {k: getattr(SIZES["small"], k) for k in ("hidden_size", "num_layers", "num_heads", "intermediate_size")}
    (small / "config.json").write_text(json.dumps({"redraft": {"train_config": cfg}}))
    assert "scripts/train-redraft-small.sh gpu" in command_for(small)
    on_cpu = {**cfg, "batch_size": 64, "seq_len": 128, "steps": 2930}  # a run as far as the CPU goes
    (small / "config.json").write_text(json.dumps({"redraft": {"train_config": on_cpu, "runs": [
        {"machine": "CPU x86_64, 2 threads (torch 2.13.0+cpu)", "from_step": 0, "to_step": 2930}]}}))
    assert "BATCH=64 TOKENS=24.0026M bash scripts/train-redraft-small.sh cpu" in command_for(small)
    with pytest.raises(TrainingError, match="config.json does not exist"):
        command_for(tmp_path / "absent")


def test_the_card_holds_the_report_verbatim_and_the_attributions(trained):
    build, model = trained
    card = model_card(model, build, "REPORT MARKDOWN", 1000)
    assert card.startswith(f"# {model.name}\n") and "REPORT MARKDOWN" in card
    assert all(text in card for text in ATTRIBUTION.values())
    assert corpus_table(*corpus_stats(model, build)) in card and training_section(model, build) in card


def test_a_model_exported_without_its_corpus_record_is_described_by_the_build_directorys(trained, tmp_path):
    """An export older than the corpus record (redraft-tiny's): the build directory's statistics, and only the
    sources that corpus had (a model trained on four sources is not credited with nine)."""
    import shutil

    build, model = trained
    old = tmp_path / "old"
    shutil.copytree(model, old)
    config = json.loads((old / "config.json").read_text())
    del config["redraft"]["corpus"]
    (old / "config.json").write_text(json.dumps(config))
    stats = json.loads((build / "corpus_stats.json").read_text())
    assert corpus_stats(old, build) == (stats, SOURCE_WEIGHTS)
    four = {k: v for k, v in stats.items() if k.split("_", 1)[1] in ("wiki", "chitchat", "wordnet", "fortunes")}
    rows = corpus_table(four, SOURCE_WEIGHTS).splitlines()[2:]
    assert [r.split("|")[1].strip() for r in rows] == ["wiki", "chitchat", "wordnet", "fortunes", "all"]
    with pytest.raises(TrainingError, match="corpus_stats.json does not exist"):
        model_card(old, build / "absent", "", 1)


def test_model_report_writes_the_card_of_the_last_model(trained, later, tmp_path, capsys):
    build, model = trained
    card = tmp_path / "README.md"
    assert cli.main(["model-report", "--model-dir", str(model), "--model-dir", str(later), "--build-dir", str(build),
                     "--card", str(card)]) == 0
    out = capsys.readouterr()
    text = card.read_text()
    assert text.startswith("# later\n") and "wrote the model card" in out.err
    assert out.out.strip() in text  # the report it printed is the card's quality section
