"""Train Redraft's own masked-diffusion models (``redraft train``): ``redraft-tiny`` (CPU-sized) and
``redraft-small`` (sized for a GPU run of a few minutes; ``SIZES``).

Resumable: every ``checkpoint_minutes`` the model, optimiser, step and RNG state go to
``<build>/checkpoint.pt``; running the same command again continues from there. On CUDA, and on a CPU with
native bf16 units (``autocast_bf16``), the forward and backward passes run under bf16 autocast (the master weights
and the optimiser stay float32).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from tqdm import tqdm
from transformers import ModernBertConfig, ModernBertForMaskedLM, PreTrainedTokenizerFast

from redraft.errors import TrainingError
from redraft.training.data import SOURCE_WEIGHTS, SpecialIds, Streams, mdlm_batch, prepare
from redraft.training.tokenizer import save_tokenizer


@dataclass
class TrainConfig:
    hidden_size: int = 256  # 4k tokens/s at 4 x 256 on 2 CPU cores; wider costs throughput quadratically
    num_layers: int = 4  # measured: 5 layers cost 1.6x the step time of 4; more steps beat more depth here
    num_heads: int = 4  # 64-dim heads
    intermediate_size: int = 640  # GeGLU width (2.5 x hidden)
    seq_len: int = 128  # windows of 128 tokens: long enough for a paragraph with gaps
    batch_size: int = 32
    steps: int = 4800  # ~1.0-1.3 s/step on 2 cores: about 90-100 minutes; the cosine decays over these
    lr: float = 1.5e-3  # small pre-norm models tolerate a high peak rate
    warmup_steps: int = 300
    weight_decay: float = 0.01
    eval_every: int = 500
    checkpoint_minutes: float = 5.0
    seed: int = 0
    gather_multiple: int = 256  # masked positions are padded to a multiple of this (flat CPU memory)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


# The model sizes `redraft train --size` knows. "small": ModernBERT 4 x 512, 16.5M parameters (33 MB in fp16); the
# step count is set from a token budget (`--token-budget`), the rest is the recipe of redraft-tiny scaled up. Its
# depth is set by issue 16's CPU latency goal (the README's first job at most 2x redraft-tiny's), measured on the
# project's 2-core machine with random weights of each shape (`report.latency_table`, 2026-12-02, median of 7):
# 8 x 512 (28.6M) 3.1x, 6 x 512 2.4x, 8 x 384 2.2x, 5 x 512 2.8x, 4 x 576 2.3-3.1x, 4 x 512 1.9-2.2x.
SIZES = {
    "tiny": TrainConfig(),
    "small": TrainConfig(hidden_size=512, num_layers=4, num_heads=8, intermediate_size=1280, batch_size=256,
                         steps=10_000, lr=1e-3, warmup_steps=500, eval_every=1000, checkpoint_minutes=2.0,
                         gather_multiple=4096),
}
DEFAULT_SIZE = "tiny"


def config_for(size: str, steps: int | None = None, token_budget: int | None = None,
               batch_size: int | None = None) -> TrainConfig:
    """The training config of a named size; ``steps`` or a ``token_budget`` (training tokens, rounded up to whole
    steps) overrides its step count, ``batch_size`` its windows a step (a CPU's caches favour smaller batches:
    redraft-small's step of 64 windows ran at twice the tokens a second of its 256 on the project's 2-core CPU)."""
    from dataclasses import replace

    if size not in SIZES:
        raise TrainingError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
    if steps is not None and token_budget is not None:
        raise TrainingError("give --steps or --token-budget, not both")
    cfg = SIZES[size]
    if batch_size is not None:
        if batch_size < 1:
            raise TrainingError(f"--batch-size must be at least 1; got {batch_size}")
        cfg = replace(cfg, batch_size=batch_size)
    if token_budget is not None:
        steps = math.ceil(token_budget / cfg.tokens_per_step)
    if steps is not None:
        if steps < 1:
            raise TrainingError(f"a run needs at least one step; got {steps}")
        cfg = replace(cfg, steps=steps, warmup_steps=min(cfg.warmup_steps, max(1, steps // 10)))
    return cfg


def machine_name(device: torch.device) -> str:
    """What a run trained on, for the model card: the GPU's name, or the CPU's architecture and threads."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA, torch {torch.__version__})"
    import platform

    return f"CPU {platform.machine()}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def resolve_training_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda: no CUDA device is visible to torch here; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise TrainingError(f"--device must be auto, cpu or cuda; got {name!r}")
    return torch.device(name)


def autocast_bf16(device: torch.device) -> bool:
    """Whether the forward and backward passes run under bf16 autocast: on CUDA, and on a CPU with native bf16
    matrix units (AMX or AVX-512 BF16: 3.5x fp32's matmul rate on the project's Xeon); elsewhere a CPU would
    emulate bf16, slower than float32, and stays in float32."""
    if device.type == "cuda":
        return True
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return device.type == "cpu" and any(check is not None and check() for check in checks)  # older torch: neither


def build_model(cfg: TrainConfig, vocab_size: int, special: SpecialIds) -> ModernBertForMaskedLM:
    config = ModernBertConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        max_position_embeddings=512,
        layer_types=["full_attention"] * cfg.num_layers,  # bidirectional everywhere; canvases are short
        pad_token_id=special.pad,
        bos_token_id=special.bos,
        eos_token_id=special.eos,
        cls_token_id=special.bos,
        sep_token_id=special.eos,
        tie_word_embeddings=True,
    )
    config.mask_token_id = special.mask
    config.empty_token_id = special.empty
    return ModernBertForMaskedLM(config)


def masked_loss(model: ModernBertForMaskedLM, inputs, targets, weights, gather_multiple: int) -> torch.Tensor:
    """Weighted cross-entropy on masked positions only.

    The LM head costs as much as the encoder at this size, so it runs on masked positions only;
    their number is padded up to a multiple of ``gather_multiple`` (weight 0 on the padding) so that
    the allocator sees a few shapes, not a new one each step.
    """
    hidden = model.model(input_ids=inputs).last_hidden_state  # (B, L, H)
    flat_h = hidden.reshape(-1, hidden.shape[-1])  # (B*L, H)
    flat_w = weights.reshape(-1)  # (B*L,)
    idx = flat_w.nonzero().squeeze(1)  # (M,)
    m = idx.numel()
    padded = max(gather_multiple, math.ceil(m / gather_multiple) * gather_multiple)
    idx = torch.cat([idx, idx.new_zeros(padded - m)])  # (M',)
    w = torch.cat([flat_w[idx[:m]], flat_w.new_zeros(padded - m)])  # (M',)
    logits = model.decoder(model.head(flat_h[idx]))  # (M', V)
    ce = F.cross_entropy(logits.float(), targets.reshape(-1)[idx], reduction="none")  # (M',)
    return (ce * w).sum() / flat_w.numel()


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def masked_accuracy(model, windows: torch.Tensor, ratio: float, special: SpecialIds, seed: int = 1234, batch: int = 64):
    """Top-1 accuracy and mean NLL (nats) of the model on positions masked at ``ratio``.

    Returns (accuracy, nll, positions, masked) where ``masked`` is the (N, L) bool mask used, so a
    baseline can be scored on exactly the same positions.
    """
    g = torch.Generator().manual_seed(seed)
    masked = torch.rand(windows.shape, generator=g) < ratio  # (N, L)
    device = next(model.parameters()).device
    correct, nll, count = 0, 0.0, 0
    for i in range(0, len(windows), batch):
        x = windows[i : i + batch].to(device)
        m = masked[i : i + batch].to(device)
        logits = model(input_ids=torch.where(m, special.mask, x)).logits.float()  # (b, L, V)
        logp = logits.log_softmax(-1)
        correct += int((logits.argmax(-1) == x)[m].sum())
        nll -= float(logp.gather(-1, x.unsqueeze(-1)).squeeze(-1)[m].sum())
        count += int(m.sum())
    return correct / count, nll / count, count, masked


def unigram_baseline(train_counts: torch.Tensor, windows: torch.Tensor, masked: torch.Tensor) -> tuple[float, float]:
    """Accuracy and NLL of always predicting from training-set token frequencies, on the same positions."""
    probs = (train_counts.float() + 1) / (train_counts.sum() + len(train_counts))  # (V,) add-one smoothed
    targets = windows[masked]
    acc = float((targets == probs.argmax()).float().mean())
    nll = float(-probs.log()[targets].mean())
    return acc, nll


def heldout_windows(build_dir: Path, n: int, length: int, seed: int = 99) -> torch.Tensor:
    return Streams(build_dir, "heldout").windows(n, length, torch.Generator().manual_seed(seed))


def train(build_dir: Path, cfg: TrainConfig, max_minutes: float | None = None, init_from: Path | None = None,
          device: str = "auto", tokenizer_from: Path | None = None) -> Path:
    """Train (or resume from ``<build>/checkpoint.pt``). ``init_from``: a previously exported model
    directory to warm-start from when there is no checkpoint (weights only; a fresh optimiser).
    ``tokenizer_from``: a model directory whose tokenizer a new build directory uses instead of training one
    (redraft-small uses redraft-tiny's, so that the two are scored on the same tokens).

    Subnormal floats are flushed to zero while it runs (without that, CPU steps slow 4-5x once weights get small)
    and kept again when it returns: the setting is the whole process's, and torch's default keeps them."""
    dev = resolve_training_device(device)
    torch.set_flush_denormal(True)
    try:
        return _train(build_dir, cfg, max_minutes, init_from, dev, tokenizer_from)
    finally:
        torch.set_flush_denormal(False)


def prepare_build(build_dir: Path, init_from: Path | None = None, tokenizer_from: Path | None = None) -> None:
    """The build directory's tokenizer and tokenised corpus, made once (a tokenizer already there is kept)."""
    build_dir.mkdir(parents=True, exist_ok=True)
    tok_dir = build_dir / "tokenizer"
    source = init_from if init_from is not None else tokenizer_from
    if source is not None and not (tok_dir / "tokenizer.json").exists():
        # A warm start must keep the exported model's token ids: reuse its tokenizer, never retrain one.
        save_tokenizer(Tokenizer.from_file(str(Path(source) / "tokenizer.json")), tok_dir)
    if not (build_dir / "train_wiki.pt").exists():
        prepare(build_dir)


def _train(build_dir: Path, cfg: TrainConfig, max_minutes: float | None, init_from: Path | None,
           device: torch.device, tokenizer_from: Path | None) -> Path:
    prepare_build(build_dir, init_from, tokenizer_from)
    tokenizer = Tokenizer.from_file(str(build_dir / "tokenizer" / "tokenizer.json"))
    special = SpecialIds.from_tokenizer(tokenizer)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, tokenizer.get_vocab_size(), special).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    rewarm_from = None  # a warm start's fresh optimiser ramps its rate up again from this step
    earlier_runs: list[dict] = []  # a resumed checkpoint's earlier runs: where, how many steps, how long
    ckpt_path = build_dir / "checkpoint.pt"
    log_path = build_dir / "train_log.jsonl"
    if ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        step = state["step"]
        rewarm_from = state.get("rewarm_from")
        earlier_runs = state.get("runs", [])
        print(f"resumed from step {step}")
    elif init_from is not None:
        exported = ModernBertForMaskedLM.from_pretrained(init_from, local_files_only=True, dtype=torch.float32)
        model.load_state_dict(exported.state_dict())
        meta = getattr(exported.config, "redraft", None)
        step = int(meta.get("trained_steps", 0)) if isinstance(meta, dict) else 0
        earlier_runs = list(meta.get("runs", [])) if isinstance(meta, dict) else []
        rewarm_from = step
        print(f"warm start from {init_from} (trained {step} steps); optimiser state starts fresh")
    train_streams = Streams(build_dir, "train")
    evals = heldout_windows(build_dir, 256, cfg.seq_len)

    def save() -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        run = {"machine": machine_name(device), "from_step": first_step, "to_step": step,
               "seconds": round(time.monotonic() - started, 1), "date": time.strftime("%Y-%m-%d")}
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                    "step": step, "config": asdict(cfg), "rewarm_from": rewarm_from,
                    "runs": [*earlier_runs, run]}, tmp)
        tmp.replace(ckpt_path)

    bf16 = autocast_bf16(device)
    print(f"training on {machine_name(device)}, {'bf16 autocast' if bf16 else 'float32'}, "
          f"{cfg.batch_size} x {cfg.seq_len} tokens a step")
    first_step = step
    started = time.monotonic()
    last_ckpt = started
    bar = tqdm(total=cfg.steps, initial=step, desc="train", dynamic_ncols=True)
    model.train()
    while step < cfg.steps:
        lr = lr_at(step, cfg)
        if rewarm_from is not None and step - rewarm_from < cfg.warmup_steps // 3:
            lr *= (step - rewarm_from + 1) / (cfg.warmup_steps // 3)
        for group in opt.param_groups:
            group["lr"] = lr
        x = train_streams.windows(cfg.batch_size, cfg.seq_len, gen)
        inputs, targets, weights = mdlm_batch(x, special, gen)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = masked_loss(model, inputs.to(device), targets.to(device), weights.to(device), cfg.gather_multiple)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
        record = {"step": step, "loss": round(loss.item(), 4), "elapsed_s": round(time.monotonic() - started, 1),
                  "tokens": step * cfg.tokens_per_step}
        if step % cfg.eval_every == 0 or step == cfg.steps:
            model.eval()
            for ratio in (0.15, 0.5, 0.9):
                acc, nll, _, _ = masked_accuracy(model, evals, ratio, special)
                record[f"acc@{ratio}"], record[f"nll@{ratio}"] = round(acc, 4), round(nll, 4)
            model.train()
            tqdm.write(json.dumps(record))
        if step % 50 == 0 or "acc@0.15" in record:
            with log_path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
        if time.monotonic() - last_ckpt > cfg.checkpoint_minutes * 60:
            save()
            last_ckpt = time.monotonic()
        if max_minutes is not None and time.monotonic() - started > max_minutes * 60:
            tqdm.write(f"stopping at step {step}: --max-minutes {max_minutes} reached; run again to resume")
            break
    save()
    bar.close()
    return ckpt_path


def export(build_dir: Path, out_dir: Path, max_shard_size: str = "15MB") -> None:
    """Write the trained model in the Hugging Face layout: config.json, fp16 safetensors, tokenizer. Weights over
    ``max_shard_size`` are sharded (with ``model.safetensors.index.json``; ``from_pretrained`` reads either), so
    that each file fits what a device run can bring back."""
    state = torch.load(build_dir / "checkpoint.pt", weights_only=False)
    cfg = TrainConfig(**state["config"])
    tokenizer = Tokenizer.from_file(str(build_dir / "tokenizer" / "tokenizer.json"))
    special = SpecialIds.from_tokenizer(tokenizer)
    model = build_model(cfg, tokenizer.get_vocab_size(), special)
    model.load_state_dict(state["model"])
    model = model.half()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.config.redraft = {
        "family": "masked_lm",
        "description": f"Redraft's own small masked-diffusion model ({state['step']} training steps; see README.md)",
        "trained_steps": state["step"],
        "train_config": asdict(cfg),
        "runs": state.get("runs", []),  # each run (or resumed run) of the training: machine, steps, seconds, date
        # what it was trained on: documents and tokens per split and source, and the weights windows were drawn with
        "corpus": json.loads(stats.read_text()) if (stats := build_dir / "corpus_stats.json").exists() else None,
        "source_weights": dict(SOURCE_WEIGHTS),
    }
    model.save_pretrained(out_dir, safe_serialization=True, max_shard_size=max_shard_size)
    fast = PreTrainedTokenizerFast.from_pretrained(build_dir / "tokenizer", local_files_only=True)
    fast.save_pretrained(out_dir)
