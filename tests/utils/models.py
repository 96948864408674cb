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


# A tiny DiffusionGemma: the real architecture (causal encoder + bidirectional decoder sharing weights, MoE
# layers, sliding and full attention, self-conditioning), random weights, Redraft's 8k tokenizer.
TINY_VISION = {"model_type": "gemma4_vision", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
               "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 8, "position_embedding_size": 64}
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|turn|>{{ m['role'] }}\n{{ m['content'] | trim }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|turn|>assistant\n{% endif %}"
)


def make_tiny_diffusion_gemma(dest: Path, canvas_length: int = 16, layers: int = 2, hidden: int = 32,
                              experts: int = 4, steps: int = 6, chat_template: bool = True) -> Path:
    """config.json + generation_config.json + tokenizer (+ chat_template.jinja), no weights: the adapter
    initialises it randomly (seed 0), as it does for a masked model without weights."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(DEFAULT_MODEL_DIR / name, dest / name)
    vocab = json.loads((DEFAULT_MODEL_DIR / "tokenizer.json").read_text())["model"]["vocab"]
    eos = [vocab["[EOS]"]]
    text = {
        "model_type": "diffusion_gemma_text", "vocab_size": 8192, "hidden_size": hidden, "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
        "global_head_dim": 16, "num_experts": experts, "top_k_experts": 2, "moe_intermediate_size": hidden,
        "sliding_window": 32, "layer_types": ["sliding_attention"] * (layers - 1) + ["full_attention"],
        "max_position_embeddings": 2048, "pad_token_id": vocab["[PAD]"], "eos_token_id": eos,
        "bos_token_id": vocab["[BOS]"],
    }
    config = {"model_type": "diffusion_gemma", "architectures": ["DiffusionGemmaForBlockDiffusion"],
              "text_config": text, "vision_config": TINY_VISION, "canvas_length": canvas_length,
              "redraft": {"description": "tiny random DiffusionGemma for tests (random weights)"}}
    (dest / "config.json").write_text(json.dumps(config))
    generation = {"max_denoising_steps": steps, "sampler_config": {"entropy_bound": 0.1, "_cls_name": "EntropyBoundSamplerConfig"},
                  "t_min": 0.4, "t_max": 0.8, "stability_threshold": 1, "confidence_threshold": 0.005,
                  "eos_token_id": eos, "pad_token_id": vocab["[PAD]"], "bos_token_id": vocab["[BOS]"]}
    (dest / "generation_config.json").write_text(json.dumps(generation))
    if chat_template:
        (dest / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return dest
