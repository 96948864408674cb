"""Model registry: which local directories the service serves, and the one table of per-family constants.

No torch here: the API uses this to tokenise and validate requests; the workers' adapters
(``workers/adapters.py``) use the same ``ModelInfo`` to load weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer

from redraft.errors import ModelError


@dataclass(frozen=True)
class FamilyConstants:
    """Per-family constants. A value of None means "read it from the tokenizer / config"."""

    adapter: str  # which adapter class loads it
    model_types: tuple[str, ...]  # config.json "model_type" values that belong to this family
    mask_token: str | None  # the mask token's text
    empty_token: str | None  # fills unused gap positions, dropped from the text
    eos_token: str | None
    shift: int  # logits at position i predict the token at i + shift (Dream: 1)
    trust_remote_code: bool
    # What an undecided position holds: "mask" (absorbing diffusion: the mask token, until committed) or
    # "uniform" (uniform-state block diffusion: random tokens, renoised every step; workers/policies/).
    noise: str = "mask"
    add_bos: bool = False  # the canvas starts with the BOS token
    eos_ends_slot: bool = False  # an EOS the model writes ends its slot: the rest of the slot is dropped


# DiffusionGemma's sampling defaults when a checkpoint's generation_config.json leaves one out: the values of
# transformers' DiffusionGemmaGenerationConfig._get_default_generation_params (the released model's too).
BLOCK_DIFFUSION_DEFAULTS = {"steps": 48, "entropy_bound": 0.1, "t_max": 0.8, "t_min": 0.4, "stability": 1,
                            "confidence_stop": 0.005}


# The one table. LLaDA and Dream values are from their public model cards and configs.
FAMILIES: dict[str, FamilyConstants] = {
    "masked_lm": FamilyConstants(
        adapter="masked_lm",
        model_types=("bert", "roberta", "modernbert", "distilbert", "xlm-roberta", "deberta-v2", "electra"),
        mask_token=None,  # tokenizer's mask token ([MASK] / <mask>)
        empty_token=None,  # "[EMPTY]" when the tokenizer has it (Redraft's models), else the pad token
        eos_token=None,
        shift=0,
        trust_remote_code=False,
    ),
    "llada": FamilyConstants(
        adapter="llada",
        model_types=("llada",),
        mask_token="<|mdm_mask|>",  # id 126336 in LLaDA-8B
        empty_token="<|endoftext|>",  # LLaDA pads answers with EOS
        eos_token="<|endoftext|>",
        shift=0,
        trust_remote_code=True,
    ),
    "dream": FamilyConstants(
        adapter="dream",
        model_types=("dream",),
        mask_token="<|mask|>",  # id 151666 in Dream-v0
        empty_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        shift=1,  # Dream predicts token i+1 from position i
        trust_remote_code=True,
    ),
    # Google's DiffusionGemma (transformers' DiffusionGemmaForBlockDiffusion): a causal encoder caches the
    # context, a bidirectional decoder denoises canvases of `canvas_length` tokens that start as uniform noise.
    "diffusion_gemma": FamilyConstants(
        adapter="diffusion_gemma",
        model_types=("diffusion_gemma",),
        mask_token=None,  # no mask token: undecided positions are marked with id vocab_size, never a token
        empty_token=None,  # the pad token fills unused gap positions (as the reference pads after EOS)
        eos_token=None,  # config eos_token_id (a list: the released model has three)
        shift=0,
        trust_remote_code=False,
        noise="uniform",
        add_bos=True,
        eos_ends_slot=True,
    ),
}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: Path
    family: str
    model_type: str
    context_length: int
    vocab_size: int
    mask_token: str
    mask_id: int
    empty_id: int
    eos_id: int | None
    bos_id: int | None
    shift: int
    trust_remote_code: bool
    weights_present: bool  # False: a tokenizer and config only; the adapter initialises random weights
    description: str
    noise: str = "mask"  # FamilyConstants.noise
    canvas_length: int | None = None  # block diffusion: tokens per canvas; None: the whole canvas at once
    eos_ids: tuple[int, ...] = ()  # every end-of-sequence id (DiffusionGemma has three)
    eos_ends_slot: bool = False
    # Sampling defaults from the model directory (generation_config.json); the server's fill the rest.
    defaults: dict = field(default_factory=dict)

    def public(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "context_length": self.context_length,
            "mask_token": self.mask_token,
            "vocab_size": self.vocab_size,
            "noise": self.noise,
            "canvas_length": self.canvas_length,
            "defaults": self.defaults,
            "random_weights": not self.weights_present,
            "description": self.description,
        }


def _family_of(model_type: str) -> str:
    for name, fam in FAMILIES.items():
        if model_type.lower() in fam.model_types:
            return name
    raise ModelError(
        f"model_type {model_type!r} is not a supported family; supported: "
        + ", ".join(t for f in FAMILIES.values() for t in f.model_types)
    )


def _token_id(tokenizer: Tokenizer, token: str | None, what: str, path: Path) -> int:
    if token is None or tokenizer.token_to_id(token) is None:
        raise ModelError(f"{path}: the tokenizer has no {what} token {token!r}")
    return tokenizer.token_to_id(token)


@lru_cache(maxsize=32)
def load_tokenizer(path: Path) -> Tokenizer:
    file = Path(path) / "tokenizer.json"
    if not file.exists():
        raise ModelError(f"{path} has no tokenizer.json; a model is a local Hugging Face directory")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises a bare Exception for a file it cannot parse
        raise ModelError(f"{file} is not a tokenizer the tokenizers library can read: {exc}") from exc


@lru_cache(maxsize=32)
def load_model_info(name: str, path: Path) -> ModelInfo:
    """Read a local model directory's config.json and tokenizer and resolve its constants."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.exists():
        raise ModelError(f"model {name!r}: {config_file} does not exist; a model is a local directory")
    try:
        config = json.loads(config_file.read_text())
    except ValueError as exc:
        raise ModelError(f"model {name!r}: {config_file} is not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelError(f"model {name!r}: {config_file} is not a JSON object")
    model_type = str(config.get("model_type", ""))
    family = _family_of(model_type)
    fam = FAMILIES[family]
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config  # multimodal configs
    tokenizer = load_tokenizer(path)
    tok_config = {}
    if (path / "tokenizer_config.json").exists():
        tok_config = json.loads((path / "tokenizer_config.json").read_text())
    vocab_size = int(text.get("vocab_size") or tokenizer.get_vocab_size())
    if fam.noise == "uniform":
        # Undecided positions are marked with an id past the vocabulary: the model never reads it (the noise
        # policy puts random tokens there) and can never write it.
        mask_token, mask_id = "(undecided: uniform noise)", vocab_size
    else:
        mask_token = fam.mask_token or tok_config.get("mask_token") or "[MASK]"
        if isinstance(mask_token, dict):
            mask_token = mask_token["content"]
        mask_id = config.get("mask_token_id")
        if mask_id is None:
            mask_id = _token_id(tokenizer, mask_token, "mask", path)
    if fam.empty_token is not None:
        empty_id = _token_id(tokenizer, fam.empty_token, "empty", path)
    elif fam.noise == "mask" and tokenizer.token_to_id("[EMPTY]") is not None:
        empty_id = tokenizer.token_to_id("[EMPTY]")
    else:
        empty_id = text.get("pad_token_id")
        if empty_id is None:
            raise ModelError(f"{path}: no [EMPTY] token and no pad_token_id to fill unused gap positions")
    eos = tokenizer.token_to_id(fam.eos_token) if fam.eos_token else text.get("eos_token_id")
    eos_ids = tuple(int(e) for e in (eos if isinstance(eos, list) else [eos] if eos is not None else []))
    bos_id = text.get("bos_token_id") if family == "masked_lm" or fam.add_bos else None
    context = text.get("max_position_embeddings") or text.get("max_sequence_length") or 512
    weights = any((path / f).exists() for f in ("model.safetensors", "model.safetensors.index.json",
                                                  "pytorch_model.bin", "pytorch_model.bin.index.json"))
    card = config.get("redraft", {}).get("description") if isinstance(config.get("redraft"), dict) else None
    canvas_length = None
    if fam.noise == "uniform":
        if not isinstance(config.get("canvas_length"), int):
            raise ModelError(f"model {name!r}: {config_file} has no canvas_length (the number of positions "
                             f"{model_type} denoises at once); a uniform-noise model's config must say it")
        canvas_length = config["canvas_length"]
    return ModelInfo(
        name=name,
        path=path,
        family=family,
        model_type=model_type,
        context_length=int(context),
        vocab_size=vocab_size,
        mask_token=mask_token,
        mask_id=int(mask_id),
        empty_id=int(empty_id),
        eos_id=eos_ids[0] if eos_ids else None,
        bos_id=int(bos_id) if bos_id is not None else None,
        shift=fam.shift,
        trust_remote_code=fam.trust_remote_code,
        weights_present=weights,
        description=card or ("randomly initialised weights (no trained checkpoint in the directory)"
                             if not weights else f"{model_type} diffusion model"),
        noise=fam.noise,
        canvas_length=canvas_length,
        eos_ids=eos_ids,
        eos_ends_slot=fam.eos_ends_slot,
        defaults=sampling_defaults(path) if fam.noise == "uniform" else {},
    )


def sampling_defaults(path: Path) -> dict:
    """A block-diffusion checkpoint's own sampling defaults (its generation_config.json), filled in from
    ``BLOCK_DIFFUSION_DEFAULTS`` where it says nothing."""
    file = Path(path) / "generation_config.json"
    gen = json.loads(file.read_text()) if file.exists() else {}
    sampler = gen.get("sampler_config") if isinstance(gen.get("sampler_config"), dict) else {}
    found = {"steps": gen.get("max_denoising_steps"), "entropy_bound": sampler.get("entropy_bound"),
             "t_max": gen.get("t_max"), "t_min": gen.get("t_min"), "stability": gen.get("stability_threshold"),
             "confidence_stop": gen.get("confidence_threshold")}
    return {k: (found[k] if found[k] is not None else v) for k, v in BLOCK_DIFFUSION_DEFAULTS.items()}


def registry(models: dict[str, Path]) -> dict[str, ModelInfo]:
    return {name: load_model_info(name, Path(path)) for name, path in models.items()}


def special_ids(info: ModelInfo) -> list[int]:
    """Ids never written at a free position: every special token (mask, pad, BOS, EOS, ...) but the empty one."""
    tokenizer = load_tokenizer(info.path)
    ids = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special} | {info.mask_id}
    ids.discard(info.empty_id)
    if info.eos_ends_slot:  # the model may end a slot with any of its EOS tokens
        ids -= set(info.eos_ids)
    return sorted(ids)


@lru_cache(maxsize=1)
def _byte_level_table() -> dict[str, int]:
    """GPT-2 byte-level alphabet: printable bytes stand for themselves, the rest map above U+0100."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


@lru_cache(maxsize=65536)
def token_text(tokenizer: Tokenizer, token_id: int) -> str:
    """One token decoded on its own, special tokens kept: how steps show each committed token."""
    return tokenizer.decode([token_id], skip_special_tokens=False)


def token_bytes(tokenizer: Tokenizer, token_id: int) -> bytes:
    """The exact bytes a byte-level BPE token stands for (partial UTF-8 sequences included)."""
    table = _byte_level_table()
    return bytes(table[c] for c in tokenizer.id_to_token(token_id))
