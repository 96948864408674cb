"""Training a tiny ModernBERT for a few steps on CPU: the loss, the schedule, resuming, warm starts and the export."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from tokenizers import Tokenizer

from redraft.families import load_model_info
from redraft.training.data import SpecialIds, mdlm_batch, prepare
from redraft.training.tokenizer import save_tokenizer, train_tokenizer
from redraft.training.train import (
    TrainConfig,
    build_model,
    export,
    lr_at,
    masked_accuracy,
    masked_loss,
    train,
    unigram_baseline,
)

SPECIAL = SpecialIds(pad=0, mask=1, bos=2, eos=3, empty=4)
TINY = {
    "hidden_size": 32,
    "num_layers": 1,
    "num_heads": 2,
    "intermediate_size": 64,
    "seq_len": 32,
    "batch_size": 4,
    "warmup_steps": 2,
    "eval_every": 1000,
    "gather_multiple": 16,
}  # evaluates at the last step only


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(TrainConfig(**TINY), 64, SPECIAL).eval()


def test_the_model_is_a_bidirectional_modernbert_with_tied_embeddings_and_redraft_ids(model):
    config = model.config
    assert type(model).__name__ == "ModernBertForMaskedLM" and config.layer_types == ["full_attention"]
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (64, 32, 1)
    assert (
        config.pad_token_id,
        config.mask_token_id,
        config.bos_token_id,
        config.eos_token_id,
        config.empty_token_id,
    ) == (0, 1, 2, 3, 4)
    assert model.decoder.weight.data_ptr() == model.model.embeddings.tok_embeddings.weight.data_ptr()


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from([1, 7, 16, 256]))
def test_masked_loss_is_the_weighted_cross_entropy_over_every_position(model, seed, gather_multiple):
    """Running the LM head on masked positions only, padded to a multiple, changes nothing in the loss."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(5, 64, (3, 32), generator=g)
    inputs, targets, weights = mdlm_batch(x, SPECIAL, g)
    with torch.no_grad():
        loss = masked_loss(model, inputs, targets, weights, gather_multiple)
        logits = model(input_ids=inputs).logits  # (B, L, V): the head on every position
    ce = F.cross_entropy(logits.reshape(-1, 64).float(), targets.reshape(-1), reduction="none")
    assert torch.allclose(loss, (ce * weights.reshape(-1)).sum() / weights.numel(), rtol=1e-5, atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 500), st.integers(0, 5000), st.integers(0, 5000))
def test_learning_rate_warms_up_linearly_then_decays_to_a_tenth(warmup, steps_after, step):
    cfg = TrainConfig(lr=1e-3, warmup_steps=warmup, steps=warmup + steps_after)
    rate = lr_at(step, cfg)
    if step < warmup:
        assert rate == pytest.approx(1e-3 * (step + 1) / warmup)
    else:
        assert 1e-4 - 1e-12 <= rate <= 1e-3 + 1e-12
        assert lr_at(step + 1, cfg) <= rate + 1e-12  # never rises again after the warm-up
    if steps_after > 0:
        assert lr_at(warmup, cfg) == pytest.approx(1e-3) and lr_at(cfg.steps, cfg) == pytest.approx(1e-4)


def test_unigram_baseline_on_a_hand_computed_case():
    counts = torch.tensor([3, 1, 0, 0])  # add-one smoothed: probabilities 4/8, 2/8, 1/8, 1/8
    windows = torch.tensor([[0, 0, 1, 3]])
    masked = torch.tensor([[True, True, True, False]])
    acc, nll = unigram_baseline(counts, windows, masked)
    assert acc == pytest.approx(2 / 3)
    assert nll == pytest.approx((2 * math.log(2) + math.log(4)) / 3)


def test_masked_accuracy_scores_the_masked_positions_whatever_the_batching(model):
    windows = torch.randint(5, 64, (10, 32), generator=torch.Generator().manual_seed(3))
    acc, nll, count, masked = masked_accuracy(model, windows, 0.5, SPECIAL)
    assert masked.shape == windows.shape and count == int(masked.sum()) and 0 < count < windows.numel()
    assert 0 <= acc <= 1 and nll > 0
    acc1, nll1, count1, masked1 = masked_accuracy(model, windows, 0.5, SPECIAL, batch=3)
    assert torch.equal(masked, masked1) and count1 == count
    assert acc1 == pytest.approx(acc) and nll1 == pytest.approx(nll, rel=1e-5)
    # the mask ratio is the fraction masked
    _, _, few, _ = masked_accuracy(model, windows, 0.1, SPECIAL)
    assert few < count


def read_log(build_dir) -> list[dict]:
    return [json.loads(line) for line in (build_dir / "train_log.jsonl").read_text().splitlines()]


def test_a_few_steps_write_a_checkpoint_a_log_and_an_exported_model(tiny_corpus, tmp_path):
    cfg = TrainConfig(**TINY, steps=4)
    ckpt_path = train(tmp_path / "build", cfg)
    # it flushed subnormals while it ran and keeps them again now: the setting is the whole process's
    assert torch.tensor(torch.finfo(torch.float32).tiny) / 2 > 0
    state = torch.load(ckpt_path, weights_only=False)
    assert state["step"] == 4 and state["config"] == asdict(cfg) and state["rewarm_from"] is None
    # a record per evaluation (the last step), with held-out accuracy and NLL at the three mask ratios
    log = read_log(tmp_path / "build")
    assert [r["step"] for r in log] == [4]
    for record in log:
        assert math.isfinite(record["loss"]) and record["loss"] > 0
        for ratio in (0.15, 0.5, 0.9):
            assert 0 <= record[f"acc@{ratio}"] <= 1 and record[f"nll@{ratio}"] > 0

    out = tmp_path / "model"
    export(tmp_path / "build", out)
    config = json.loads((out / "config.json").read_text())
    assert config["redraft"]["family"] == "masked_lm" and config["redraft"]["trained_steps"] == 4
    assert config["redraft"]["train_config"] == asdict(cfg)
    weights = load_file(out / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float16}
    for name, tensor in weights.items():
        assert torch.equal(tensor, state["model"][name].half())
    tokenizer = Tokenizer.from_file(str(tmp_path / "build" / "tokenizer" / "tokenizer.json"))
    info = load_model_info("trained-tiny", out)  # the service loads what was exported
    assert info.family == "masked_lm" and info.vocab_size == tokenizer.get_vocab_size()
    assert (info.mask_id, info.empty_id) == (1, 4)


def test_a_run_stopped_early_resumes_to_the_same_weights_as_an_uninterrupted_one(tiny_corpus, tmp_path):
    cfg = TrainConfig(**TINY, steps=4)
    prepare(tmp_path / "straight")
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")  # the same tokenizer and streams
    train(tmp_path / "straight", cfg)
    train(tmp_path / "resumed", cfg, max_minutes=0)  # stops after its first step
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["step"] == 1
    train(tmp_path / "resumed", cfg)
    straight = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    resumed = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert resumed["step"] == straight["step"] == 4
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert [r["loss"] for r in read_log(tmp_path / "resumed")] == [r["loss"] for r in read_log(tmp_path / "straight")]


def test_a_warm_start_keeps_the_exported_tokenizer_and_weights_and_counts_on(tiny_corpus, tmp_path):
    # the first model's tokenizer is not the one `prepare` would train on this corpus, so a second build that
    # retrained one would show
    own = train_tokenizer((d.text for d in tiny_corpus[:50]), vocab_size=400)
    save_tokenizer(own, tmp_path / "first" / "tokenizer")
    cfg = TrainConfig(**TINY, steps=2)
    train(tmp_path / "first", cfg)
    export(tmp_path / "first", tmp_path / "model")
    longer = TrainConfig(**TINY, steps=3)
    train(tmp_path / "second", longer, init_from=tmp_path / "model")
    first_vocab = Tokenizer.from_file(str(tmp_path / "model" / "tokenizer.json")).get_vocab()
    second_vocab = Tokenizer.from_file(str(tmp_path / "second" / "tokenizer" / "tokenizer.json")).get_vocab()
    assert second_vocab == first_vocab == own.get_vocab()
    state = torch.load(tmp_path / "second" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 3 and state["rewarm_from"] == 2  # one more step after the exported model's two
    # the one step moved the weights from the exported ones, not from the initialisation a cold start has
    exported = load_file(tmp_path / "model" / "model.safetensors")
    torch.manual_seed(longer.seed)
    fresh = build_model(longer, len(first_vocab), SPECIAL).state_dict()
    name = "model.embeddings.tok_embeddings.weight"
    moved = (state["model"][name] - exported[name].float()).abs().max()
    assert moved < (state["model"][name] - fresh[name]).abs().max()


# ------------------------------------------------------------------ sizes, budgets, devices and the train command


def test_redraft_small_is_sized_for_the_repository_and_its_gpu_run():
    from redraft.training.train import SIZES

    cfg, tiny = SIZES["small"], SIZES["tiny"]
    params = sum(p.numel() for p in build_model(cfg, 8192, SPECIAL).parameters())
    tiny_params = sum(p.numel() for p in build_model(tiny, 8192, SPECIAL).parameters())
    assert params >= 3 * tiny_params and params * 2 <= 60e6  # much larger than tiny, <= 60 MB in fp16
    assert cfg.num_layers <= tiny.num_layers  # depth is what the CPU latency goal pays for most (train.py SIZES)
    assert cfg.hidden_size % cfg.num_heads == 0 and cfg.warmup_steps < cfg.steps


@settings(max_examples=50, deadline=None)
@given(size=st.sampled_from(["tiny", "small"]), budget=st.integers(1, 10**10),
       batch=st.one_of(st.none(), st.integers(1, 1024)))
def test_a_token_budget_is_whole_steps_covering_it(size, budget, batch):
    from redraft.training.train import SIZES, config_for

    cfg = config_for(size, token_budget=budget, batch_size=batch)
    assert cfg.batch_size == (batch or SIZES[size].batch_size)  # the budget counts the batch it runs with
    assert cfg.steps * cfg.tokens_per_step >= budget > (cfg.steps - 1) * cfg.tokens_per_step
    assert 1 <= cfg.warmup_steps < cfg.steps or cfg.steps == 1


@pytest.mark.parametrize("amx, avx512_bf16", [(True, True), (True, False), (False, True), (False, False)])
def test_bf16_autocast_on_cuda_and_on_cpus_with_native_bf16_only(monkeypatch, amx, avx512_bf16):
    from redraft.training.train import autocast_bf16

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert autocast_bf16(torch.device("cpu")) == (amx or avx512_bf16)  # emulated bf16 is slower than float32
    assert autocast_bf16(torch.device("cuda"))


def test_sizes_budgets_and_devices_that_cannot_work_are_refused_with_what_to_give():
    from redraft.errors import TrainingError
    from redraft.training.train import config_for, resolve_training_device

    with pytest.raises(TrainingError, match="unknown model size 'huge'; choose one of tiny, small"):
        config_for("huge")
    with pytest.raises(TrainingError, match="--steps or --token-budget, not both"):
        config_for("small", steps=10, token_budget=1000)
    with pytest.raises(TrainingError, match="at least one step"):
        config_for("tiny", steps=0)
    with pytest.raises(TrainingError, match="--batch-size must be at least 1"):
        config_for("small", batch_size=0)
    with pytest.raises(TrainingError, match="auto, cpu or cuda"):
        resolve_training_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="no CUDA device is visible"):
            resolve_training_device("cuda")
    assert resolve_training_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("text, tokens", [("300M", 300_000_000), ("1.5G", 1_500_000_000), ("250k", 250_000),
                                          ("4096", 4096)])
def test_token_counts_read_with_their_suffix(text, tokens):
    from redraft.cli import _token_count

    assert _token_count(text) == tokens


@pytest.mark.parametrize("bad", ["lots", "0", "-5M", "M"])
def test_a_token_budget_that_is_not_a_count_is_a_usage_error(bad, capsys):
    from redraft.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "--token-budget", bad])
    assert exc.value.code == 2 and "token" in capsys.readouterr().err


def test_the_train_command_packs_a_build_and_fills_another_from_the_pack(tiny_corpus, tmp_path, capsys):
    """--prepare-only --pack here, then --from-pack on a host without the sources: the same streams train."""
    from redraft.cli import main

    tiny = tmp_path / "tiny-model"
    save_tokenizer(train_tokenizer([d.text for d in tiny_corpus if not d.held_out], vocab_size=400), tiny)
    assert main(["train", "--build-dir", str(tmp_path / "here"), "--tokenizer-from", str(tiny), "--prepare-only",
                 "--pack", str(tmp_path / "corpus.pack")]) == 0
    assert not (tmp_path / "here" / "checkpoint.pt").exists()
    here = Tokenizer.from_file(str(tmp_path / "here" / "tokenizer" / "tokenizer.json"))
    assert here.get_vocab() == Tokenizer.from_file(str(tiny / "tokenizer.json")).get_vocab()  # not retrained
    from redraft.training.data import unpack

    unpack(tmp_path / "corpus.pack", tmp_path / "there")
    for stream in sorted((tmp_path / "here").glob("*.pt")):
        assert torch.equal(torch.load(tmp_path / "there" / stream.name), torch.load(stream))
    capsys.readouterr()
    assert main(["train", "--build-dir", str(tmp_path / "x"), "--from-pack", str(tmp_path / "absent.pack"),
                 "--prepare-only"]) == 2
    assert "absent.pack does not exist" in capsys.readouterr().err
