"""Model adapters: one per family, all with one contract.

``adapter.logits(input_ids (B, L), attention_mask (B, L) bool) -> (B, L, V) float32`` where row
``[:, i]`` is the distribution for the token *at* position ``i`` (families whose raw logits are
shifted, like Dream, are re-aligned here, so the sampler never knows).
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from redraft.errors import ModelError
from redraft.models import ModelInfo, load_model_info


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Adapter:
    """Base adapter: wraps a loaded ``torch.nn.Module`` whose forward returns ``.logits``."""

    def __init__(self, info: ModelInfo, model: torch.nn.Module, device: torch.device) -> None:
        self.info = info
        self.model = model.eval()
        self.device = device

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        raw = self._forward(input_ids, attention_mask).float()  # (B, L, V)
        if self.info.shift:
            # raw[:, i] predicts token i + shift; realign so that out[:, i] predicts token i.
            s = self.info.shift
            raw = torch.cat([raw[:, :s], raw[:, :-s]], dim=1)  # (B, L, V)
        return raw[..., : self.info.vocab_size]


class MaskedLMAdapter(Adapter):
    """Hugging Face ``AutoModelForMaskedLM`` (BERT, RoBERTa, ModernBERT and Redraft's own models)."""

    @classmethod
    def load(cls, info: ModelInfo, device: torch.device) -> MaskedLMAdapter:
        from transformers import AutoConfig, AutoModelForMaskedLM

        dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
        if info.weights_present:
            model = AutoModelForMaskedLM.from_pretrained(info.path, local_files_only=True, dtype=dtype)
        else:
            # A config without weights: deterministic random init (test and demo models only;
            # /v1/models labels it "random_weights").
            torch.manual_seed(0)
            config = AutoConfig.from_pretrained(info.path, local_files_only=True)
            model = AutoModelForMaskedLM.from_config(config, dtype=dtype)
        return cls(info, model.to(device), device)


class RemoteCodeAdapter(Adapter):
    """LLaDA and Dream: ``AutoModel`` with ``trust_remote_code`` from a local directory (GPU hosts)."""

    @classmethod
    def load(cls, info: ModelInfo, device: torch.device) -> RemoteCodeAdapter:
        from transformers import AutoModel

        if not info.weights_present:
            raise ModelError(f"model {info.name!r}: {info.path} has no weights")
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        model = AutoModel.from_pretrained(info.path, trust_remote_code=True, local_files_only=True, dtype=dtype)
        return cls(info, model.to(device), device)


class LLaDAAdapter(RemoteCodeAdapter):
    """LLaDA: logits aligned with positions (shift 0); mask id from the family table."""


class DreamAdapter(RemoteCodeAdapter):
    """Dream: predicts the token at i+1 from position i (shift 1, applied by ``Adapter.logits``)."""

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        # Dream's remote code wants an additive-style mask or "full"; with no padding pass none.
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


ADAPTERS: dict[str, type[Adapter]] = {"masked_lm": MaskedLMAdapter, "llada": LLaDAAdapter, "dream": DreamAdapter}

_cache: dict[tuple[str, str], Adapter] = {}
_lock = threading.Lock()


def get_adapter(name: str, path: Path, device: str = "auto") -> Adapter:
    """The process-wide adapter for a model: loaded once per worker process, on first use."""
    dev = resolve_device(device)
    key = (name, str(dev))
    with _lock:
        if key not in _cache:
            info = load_model_info(name, Path(path))
            _cache[key] = ADAPTERS[info.family].load(info, dev)
        return _cache[key]
