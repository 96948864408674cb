"""Model registry: which local directories the service serves, and the one table of per-family constants.

No torch here: the API uses this to tokenise and validate requests; the workers' adapters
(``workers/adapters.py``) use the same ``ModelInfo`` to load weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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

    def public(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "context_length": self.context_length,
            "mask_token": self.mask_token,
            "vocab_size": self.vocab_size,
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
    return Tokenizer.from_file(str(file))


@lru_cache(maxsize=32)
def load_model_info(name: str, path: Path) -> ModelInfo:
    """Read a local model directory's config.json and tokenizer and resolve its constants."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.exists():
        raise ModelError(f"model {name!r}: {config_file} does not exist; a model is a local directory")
    config = json.loads(config_file.read_text())
    model_type = str(config.get("model_type", ""))
    family = _family_of(model_type)
    fam = FAMILIES[family]
    tokenizer = load_tokenizer(path)
    tok_config = {}
    if (path / "tokenizer_config.json").exists():
        tok_config = json.loads((path / "tokenizer_config.json").read_text())
    mask_token = fam.mask_token or tok_config.get("mask_token") or "[MASK]"
    if isinstance(mask_token, dict):
        mask_token = mask_token["content"]
    mask_id = config.get("mask_token_id") or _token_id(tokenizer, mask_token, "mask", path)
    if fam.empty_token is not None:
        empty_id = _token_id(tokenizer, fam.empty_token, "empty", path)
    elif tokenizer.token_to_id("[EMPTY]") is not None:
        empty_id = tokenizer.token_to_id("[EMPTY]")
    else:
        empty_id = config.get("pad_token_id")
        if empty_id is None:
            raise ModelError(f"{path}: no [EMPTY] token and no pad_token_id to fill unused gap positions")
    eos_id = tokenizer.token_to_id(fam.eos_token) if fam.eos_token else config.get("eos_token_id")
    bos_id = config.get("bos_token_id") if family == "masked_lm" else None
    context = config.get("max_position_embeddings") or config.get("max_sequence_length") or 512
    weights = any((path / f).exists() for f in ("model.safetensors", "model.safetensors.index.json",
                                                  "pytorch_model.bin", "pytorch_model.bin.index.json"))
    card = config.get("redraft", {}).get("description") if isinstance(config.get("redraft"), dict) else None
    return ModelInfo(
        name=name,
        path=path,
        family=family,
        model_type=model_type,
        context_length=int(context),
        vocab_size=int(config.get("vocab_size") or tokenizer.get_vocab_size()),
        mask_token=mask_token,
        mask_id=int(mask_id),
        empty_id=int(empty_id),
        eos_id=int(eos_id) if eos_id is not None else None,
        bos_id=int(bos_id) if bos_id is not None else None,
        shift=fam.shift,
        trust_remote_code=fam.trust_remote_code,
        weights_present=weights,
        description=card or ("randomly initialised weights (no trained checkpoint in the directory)"
                             if not weights else f"{model_type} masked diffusion model"),
    )


def registry(models: dict[str, Path]) -> dict[str, ModelInfo]:
    return {name: load_model_info(name, Path(path)) for name, path in models.items()}


def special_ids(info: ModelInfo) -> list[int]:
    """Ids never written at a free position: every special token (mask, pad, BOS, EOS, ...) but the empty one."""
    tokenizer = load_tokenizer(info.path)
    ids = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special} | {info.mask_id}
    ids.discard(info.empty_id)
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
