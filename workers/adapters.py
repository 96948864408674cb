"""Model adapters: one per family, all with one contract.

``adapter.logits(input_ids (B, L), attention_mask (B, L) bool) -> (B, L, V) float32`` where row
``[:, i]`` is the distribution for the token *at* position ``i`` (families whose raw logits are
shifted, like Dream, are re-aligned here, so the sampler never knows).
"""

from __future__ import annotations

import copy
import logging
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import torch

from redraft.errors import ModelError
from redraft.families import ModelInfo, load_model_info
from redraft.workers import prefix_cache

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Forward:
    """A module's forward pass as the step loop calls it, ``(input_ids (b, L), attention_mask (b, L) bool | None) ->
    tensor``: the output's ``output`` field (``logits``, or a trunk's ``last_hidden_state``), run as written or
    under ``torch.compile`` (``mode``, the setting REDRAFT_TORCH_COMPILE).

    Compiled, shapes are dynamic (past a first graph and one for a single row, every batch size and canvas length
    share one graph: canvases come in many lengths) and an attention mask is always passed (all true where the
    rows have none, unless ``fill_mask`` is false: a family whose code wants none then), so a row reads the same graph
    alone or batched. Under "reduce-overhead" on a GPU each shape's
    graph is also recorded as a CUDA graph, whose outputs the next replay overwrites: they are copied out. If
    compiling fails (no C++ compiler for a CPU build, an unsupported operation) the pass runs as written, with a
    warning: a worker that was asked to be faster must not fail its jobs instead."""

    def __init__(self, module: torch.nn.Module, output: str, mode: str = "off", device: torch.device | None = None,
                 warm_up: tuple[int, int] | None = None, fill_mask: bool = True) -> None:
        self.module, self.output, self.mode, self.fill_mask = module, output, mode, fill_mask
        self.cuda_graphs = mode == "reduce-overhead" and device is not None and device.type == "cuda"
        self._run = module if mode == "off" else torch.compile(module, mode=mode, dynamic=True)
        if mode != "off" and warm_up is not None:
            self.warm_up(device, *warm_up)

    @property
    def compiled(self) -> bool:
        return self._run is not self.module

    @torch.no_grad()  # always: a graph compiled without gradients is not reused with them
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if self.compiled and attention_mask is None and self.fill_mask:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        out = getattr(self._run(input_ids=input_ids, attention_mask=attention_mask), self.output)
        return out.clone() if self.cuda_graphs else out

    @torch.no_grad()
    def warm_up(self, device: torch.device, token: int, length: int) -> None:
        """Compile now (one row, then two: the two graphs every later shape reuses), not during a job's first step;
        on failure fall back to the module as written, with a warning that says why."""
        try:
            for rows in (1, 2):
                self(torch.full((rows, length), token, device=device), None)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: run as written instead
            log.warning("torch.compile (REDRAFT_TORCH_COMPILE=%s) failed; the model runs as written: %s: %s",
                        self.mode, type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "")
            self._run, self.cuda_graphs = self.module, False


class Adapter:
    """Base adapter: wraps a loaded ``torch.nn.Module`` whose forward returns ``.logits``."""

    def __init__(self, info: ModelInfo, model: torch.nn.Module, device: torch.device, torch_compile: str = "off") -> None:
        self.info = info
        self.model = model.eval()
        self.device = device
        self.positions_read = 0  # canvas positions the model has read, over all forward passes (a prefix cache reads fewer)
        self.net = self._net(torch_compile)

    def _net(self, torch_compile: str) -> Forward:
        """The forward pass ``_forward`` runs (compiled or not: :class:`Forward`)."""
        return Forward(self.model, "logits", torch_compile, self.device, (self.info.mask_id, 16))

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.net(input_ids, attention_mask)

    def forward_groups(self, rows) -> list[tuple[list[int], torch.Tensor]]:
        """The sampler's rows' logits, one forward pass (b, L, V) per group of rows of equal length."""
        from redraft.workers.sampler import forward_groups

        return forward_groups(self.logits, rows)

    def forward_rows(self, rows) -> list[torch.Tensor]:
        """Each row's logits over its window (W, V), from ``forward_groups``."""
        from redraft.workers.sampler import per_row

        return per_row(self.forward_groups(rows), len(rows))

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.positions_read += input_ids.numel()
        return self.finish(self._forward(input_ids, attention_mask))

    def finish(self, raw: torch.Tensor) -> torch.Tensor:
        """The model's raw logits (B, L, V') as the sampler takes them: float32, aligned, the vocabulary's columns."""
        raw = raw.float()  # (B, L, V')
        if self.info.shift:
            # raw[:, i] predicts token i + shift; realign so that out[:, i] predicts token i.
            s = self.info.shift
            raw = torch.cat([raw[:, :s], raw[:, :-s]], dim=1)  # (B, L, V')
        return raw[..., : self.info.vocab_size]


# The sampler's rows read logits only where the canvas is undecided (a mask): proposals, confidences, the slot
# decoder's free positions, the processors' masks. A ModernBERT's LM head (dense, norm, vocabulary projection) is
# then run at those positions only, and its rows padded to at least HEAD_MIN_ROWS: a CPU matmul of fewer rows
# takes another kernel that rounds differently, and a position's logits must not depend on how many masks its
# batch-mates have left (same seed, same text, alone or batched). For Redraft's own models the head is ~40% of a
# forward pass, so this takes a fifth to a third off a step; for a model with a 4096-wide trunk it is a few percent.
HEAD_MIN_ROWS = 16


class MaskedLMAdapter(Adapter):
    """Hugging Face ``AutoModelForMaskedLM`` (BERT, RoBERTa, ModernBERT and Redraft's own models). Rows of jobs
    that ask for ``cache: "prefix"`` (ModernBERT only) read through ``redraft.workers.prefix_cache``. For the
    sampler's rows a ModernBERT computes its LM head at undecided positions only (``HEAD_MIN_ROWS``); the other
    positions of the logits it returns hold whatever an earlier step left there, which nothing reads."""

    def __init__(self, info: ModelInfo, model: torch.nn.Module, device: torch.device, torch_compile: str = "off") -> None:
        self.sparse_head = type(model).__name__ == "ModernBertForMaskedLM" and all(
            hasattr(model, a) for a in ("model", "head", "decoder"))
        super().__init__(info, model, device, torch_compile)
        # Per thread (an engine's step loop, or a caller stepping rows itself), the (b, L, V) logits of a step's
        # groups, reused from step to step, and how many of them the current step has handed out.
        self._local = threading.local()

    def _net(self, torch_compile: str) -> Forward:
        """With the head at the masks only, the trunk's pass (the one that is compiled); else the whole model's."""
        if not self.sparse_head:
            return super()._net(torch_compile)
        return Forward(self.model.model, "last_hidden_state", torch_compile, self.device, (self.info.mask_id, 16))

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if self.sparse_head:  # the net is the trunk: the whole logits, for callers outside the sampler's rows
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return self.net(input_ids, attention_mask)

    @torch.no_grad()
    def _logits_at_masks(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """``logits`` where ``input_ids`` holds the mask token; elsewhere stale values (a reused buffer)."""
        self.positions_read += input_ids.numel()
        m = self.model
        hidden = self.net(input_ids, attention_mask)  # (b, L, H)
        need = input_ids == self.info.mask_id  # (b, L)
        picked = hidden[need]  # (N, H)
        n = picked.shape[0]
        rows = max(HEAD_MIN_ROWS, -(-n // HEAD_MIN_ROWS) * HEAD_MIN_ROWS)
        if rows > n:
            picked = torch.cat([picked, picked.new_zeros(rows - n, picked.shape[1])])  # (rows, H)
        head = m.decoder(m.head(picked))[:n, : self.info.vocab_size].float()  # (N, V)
        b, length = input_ids.shape
        out = self._buffer(b * length * self.info.vocab_size).view(b, length, self.info.vocab_size)  # (b, L, V)
        out[need] = head
        return out

    @property
    def _taken(self) -> int:
        return getattr(self._local, "taken", 0)

    @_taken.setter
    def _taken(self, n: int) -> None:
        self._local.taken = n

    def _buffer(self, numel: int) -> torch.Tensor:
        """The step's next (numel,) float32 buffer: one per group of a step, kept (and grown) for later steps."""
        buffers = self._local.__dict__.setdefault("buffers", [])
        if self._taken == len(buffers):
            buffers.append(torch.empty(0, device=self.device))
        if buffers[self._taken].numel() < numel:
            buffers[self._taken] = torch.empty(numel, device=self.device)
        self._taken += 1
        return buffers[self._taken - 1][:numel]

    @torch.no_grad()
    def forward_groups(self, rows) -> list[tuple[list[int], torch.Tensor]]:
        from redraft.workers.prefix_cache import cached_groups
        from redraft.workers.sampler import forward_groups

        self._taken = 0  # the previous step's logits are read no more: their buffers serve this step
        logits = self._logits_at_masks if self.sparse_head else self.logits
        cached = [i for i, r in enumerate(rows) if r.cfg.cache == "prefix"]
        if not cached:
            return forward_groups(logits, rows)
        if not prefix_cache.supports(self.model):
            raise ModelError(f"model {self.info.name!r} ({self.info.model_type}) has no prefix cache: it is "
                             "ModernBERT's; run the job without `cache`")
        plain = [i for i in range(len(rows)) if i not in set(cached)]
        out = [([plain[j] for j in members], raw) for members, raw in forward_groups(logits, [rows[i] for i in plain])]
        out += [([cached[j] for j in members], raw) for members, raw in cached_groups(self, [rows[i] for i in cached])]
        return out

    @classmethod
    def load(cls, info: ModelInfo, device: torch.device, torch_compile: str = "off") -> MaskedLMAdapter:
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
        return cls(info, model.to(device), device, torch_compile)


class RemoteCodeAdapter(Adapter):
    """LLaDA and Dream: ``AutoModel`` with ``trust_remote_code`` from a local directory (GPU hosts)."""

    @classmethod
    def load(cls, info: ModelInfo, device: torch.device, torch_compile: str = "off") -> RemoteCodeAdapter:
        from transformers import AutoModel

        if not info.weights_present:
            raise ModelError(f"model {info.name!r}: {info.path} has no weights")
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        model = AutoModel.from_pretrained(info.path, trust_remote_code=True, local_files_only=True, dtype=dtype)
        return cls(info, model.to(device), device, torch_compile)


class LLaDAAdapter(RemoteCodeAdapter):
    """LLaDA: logits aligned with positions (shift 0); mask id from the family table."""


class DreamAdapter(RemoteCodeAdapter):
    """Dream: predicts the token at i+1 from position i (shift 1, applied by ``Adapter.logits``)."""

    def _net(self, torch_compile: str) -> Forward:
        return Forward(self.model, "logits", torch_compile, self.device, None, fill_mask=False)

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        # Dream's remote code wants an additive-style mask or "full"; with no padding pass none.
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        return self.net(input_ids, attention_mask)


# What stands in for DiffusionGemma's vision tower when only text is served: a one-layer, 8-wide Gemma-4 vision
# config. The checkpoint's vision weights do not fit it and are skipped at load time (never read into memory);
# the tower is never run, since Redraft sends no images.
TEXT_ONLY_VISION = {"model_type": "gemma4_vision", "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
                    "num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 8, "position_embedding_size": 8}


# The MoE experts of a batched decoder pass, one row at a time (CPU): transformers' experts run one matmul per expert
# over the tokens routed to it, and how many tokens that is changes which CPU kernel runs and so the rounding. A row
# of a batch then read logits a few ulps off its own pass alone, enough to flip a near-tie and change a job's text
# (seen on one machine, not on another). Run per row, each expert sees exactly the tokens it sees alone: the same
# shapes, the same kernels, bit-identical logits, while attention and every dense layer stay batched. Not on a GPU,
# where reading each expert's weights once per row would multiply a memory-bound pass's traffic by the batch size.
_ROW_TOKENS: ContextVar[int | None] = ContextVar("redraft_moe_row_tokens", default=None)


def experts_by_row(inner):
    """An experts forward (transformers' ``ExpertsInterface`` signature) that runs ``inner`` on each row's
    ``_ROW_TOKENS`` tokens of the flattened batch in turn, or on all of them outside :func:`rows_of`."""

    def forward(module, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor):
        n = _ROW_TOKENS.get()
        if n is None or hidden_states.shape[0] <= n:
            return inner(module, hidden_states, top_k_index, top_k_weights)
        return torch.cat([inner(module, h, i, w) for h, i, w in zip(hidden_states.split(n), top_k_index.split(n),
                                                                      top_k_weights.split(n))])  # (b * n, H)

    return forward


@contextmanager
def rows_of(tokens: int):
    """Within: experts wrapped by :func:`experts_by_row` take the flattened batch as rows of ``tokens`` each."""
    reset = _ROW_TOKENS.set(tokens)
    try:
        yield
    finally:
        _ROW_TOKENS.reset(reset)


def split_experts_by_row(model: torch.nn.Module) -> None:
    """Switch ``model``'s MoE experts to :func:`experts_by_row` around the implementation it already uses."""
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS, ExpertsInterface

    current = model.config.get_text_config()._experts_implementation
    name = f"redraft_rows_{current}"
    if name not in ALL_EXPERTS_FUNCTIONS:
        experts = next(m for m in model.modules() if hasattr(m, "gate_up_proj"))
        inner = ALL_EXPERTS_FUNCTIONS[current] if current != "eager" else type(experts).forward.__wrapped__
        ExpertsInterface.register(name, experts_by_row(inner))
    model.set_experts_implementation(name)


@dataclass(eq=False)
class EncoderContext:
    """A row's context in the encoder's KV cache: everything left of its current window, encoded once."""

    cache: object  # a transformers DynamicCache
    encoded: int = 0  # canvas positions [0, encoded) are in the cache
    group: GroupCache | None = None  # the stack of the group it was last read in, shared with the group's rows


@dataclass(eq=False)
class GroupCache:
    """A group's encoder caches stacked along the batch (``DiffusionGemmaAdapter._group_cache``), held by its rows'
    contexts only: it goes when they do."""

    members: tuple[int, ...]  # the rows' contexts (ids), in the batch's order
    lengths: tuple[int, ...]  # their cached lengths when stacked
    cache: object


class DiffusionGemmaAdapter(Adapter):
    """Google's DiffusionGemma (``DiffusionGemmaForBlockDiffusion``, native in transformers), text only.

    ``forward_groups`` runs one decoder pass per group of rows whose windows have the same shape (same cached
    context length, same window width), with the rows' encoder caches stacked along the batch (once a window:
    ``_group_cache``) and last step's logits fed back without a copy where it can (``_self_conditioning``). Before a
    row's window is read, whatever lies left of it and is not cached yet (the prompt, a finished canvas, fixed
    text between canvases) is encoded into the row's cache, as ``generate`` encodes each finished canvas.
    The decoder also takes the row's previous step's logits (self-conditioning); the first step of a window
    takes none. Same calls, masks and position ids as ``DiffusionGemmaGenerationMixin.generate``. On the CPU the
    pass's MoE experts run row by row (:func:`experts_by_row`), so that a row's logits are bit-identical alone or
    batched; on a GPU they run batched, as transformers runs them, and agree to rounding.
    """

    def __init__(self, info: ModelInfo, model: torch.nn.Module, device: torch.device, torch_compile: str = "off") -> None:
        super().__init__(info, model, device, torch_compile)
        self._local = threading.local()  # per thread: the self-conditioning buffer (``_self_conditioning``)

    @classmethod
    def load(cls, info: ModelInfo, device: torch.device, torch_compile: str = "off") -> DiffusionGemmaAdapter:
        from transformers import AutoConfig, DiffusionGemmaForBlockDiffusion
        from transformers.models.diffusion_gemma.generation_diffusion_gemma import DiffusionGemmaGenerationConfig

        dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
        config = AutoConfig.from_pretrained(info.path, local_files_only=True)
        config.vision_config = type(config.vision_config)(**TEXT_ONLY_VISION) if config.vision_config is not None \
            else None
        if info.weights_present:
            model = DiffusionGemmaForBlockDiffusion.from_pretrained(info.path, local_files_only=True,  # a directory
                                                                    config=config, dtype=dtype,
                                                                    ignore_mismatched_sizes=True)
        else:
            torch.manual_seed(0)  # a config without weights: deterministic random init (tests and demos)
            model = DiffusionGemmaForBlockDiffusion(config).to(dtype)
            if (info.path / "generation_config.json").exists():
                model.generation_config = DiffusionGemmaGenerationConfig.from_pretrained(info.path, local_files_only=True)
        if device.type == "cpu":
            split_experts_by_row(model)
        return cls(info, model.to(device), device, torch_compile)

    def _net(self, torch_compile: str) -> Forward:
        # Not compiled: each step's decoder pass reads a cache built per row and stacked per group, of a length that
        # grows canvas by canvas (new shapes all the time) and, on the CPU, its experts split row by row.
        if torch_compile != "off":
            log.warning("REDRAFT_TORCH_COMPILE=%s applies to masked models; %s (DiffusionGemma) runs as written",
                        torch_compile, self.info.name)
        return Forward(self.model, "logits")

    def _encode(self, row) -> EncoderContext:
        model = self.model
        ctx = row.context
        if ctx is None:
            from transformers import DynamicCache

            ctx = row.context = EncoderContext(DynamicCache(config=model.config.get_text_config(decoder=True)))
        lo, _ = row.window()
        if ctx.encoded < lo:
            ids = row.x[ctx.encoded:lo].unsqueeze(0).to(self.device)  # (1, n) all decided: left of the window
            positions = torch.arange(ctx.encoded, lo, dtype=torch.int32, device=self.device).unsqueeze(0)  # (1, n)
            masks = model.model.encoder.create_masks_for_generate(
                config=model.config, inputs_embeds=torch.empty((1, ids.shape[1], 0), dtype=model.dtype, device=self.device),
                attention_mask=torch.ones((1, lo), dtype=torch.bool, device=self.device), cache=ctx.cache,
                position_ids=positions)
            before = [copy.copy(layer) for layer in ctx.cache.layers]  # a layer's update replaces its tensors
            try:
                out = model.model.encoder(input_ids=ids, attention_mask=masks, cache=ctx.cache, position_ids=positions)
            except BaseException:  # failed part way (out of memory, say): the layers that took the tokens give
                ctx.cache.layers[:] = before  # them back, so that a retry encodes them once, not twice
                raise
            ctx.cache, ctx.encoded = out.cache, lo
            _leave_group(ctx)  # the layers it wrote to are its own now (concatenated), and any other is copied
        return ctx

    @torch.no_grad()
    def forward_groups(self, rows) -> list[tuple[list[int], torch.Tensor]]:
        """The rows' decoder logits over their current windows, (b, W, V) per group of rows of one shape."""
        model = self.model
        groups: dict[tuple[int, int], list[int]] = {}
        for i, row in enumerate(rows):
            ctx = self._encode(row)
            groups.setdefault((ctx.encoded, row.model_input().numel()), []).append(i)
        out = []
        dtype = model.model.decoder.embed_tokens.weight.dtype
        for (encoded, width), members in groups.items():
            canvas = torch.stack([rows[i].model_input() for i in members]).to(self.device)  # (b, W)
            cache = self._group_cache([rows[i].context for i in members])
            sc, sc_mask = self._self_conditioning([rows[i].noise.logits for i in members], width, dtype)
            positions = torch.arange(encoded, encoded + width, dtype=torch.int32, device=self.device).unsqueeze(0)
            masks = model.model.decoder.create_diffusion_decoder_attention_mask(
                config=model.config, inputs_embeds=canvas.unsqueeze(-1), cache=cache,
                decoder_attention_mask=torch.ones((len(members), encoded + width), dtype=torch.bool, device=self.device))
            with rows_of(width):
                logits = model(decoder_input_ids=canvas, self_conditioning_logits=sc, self_conditioning_mask=sc_mask,
                               decoder_attention_mask=masks, cache=cache,
                               decoder_position_ids=positions).logits  # (b, W, V)
            out.append((members, logits.float()))
        return out

    @staticmethod
    def _group_cache(contexts: list[EncoderContext]):
        """The encoder cache of a group's decoder pass: the rows' key/value tensors stacked along the batch. The rows'
        own caches then become views of the stack (it takes no memory beyond theirs), and while the group's rows
        and their cached lengths stay as they were (every step of their windows but the first) the same stack
        serves again, as it is: no per-step copy of the context. The stack is held by the rows' contexts
        (``EncoderContext.group``), so it goes with them."""
        if len(contexts) == 1:
            _leave_group(contexts[0])
            return contexts[0].cache
        members, lengths = tuple(id(c) for c in contexts), tuple(c.encoded for c in contexts)
        group = contexts[0].group
        if group is not None and group.members == members and group.lengths == lengths and all(
                c.group is group for c in contexts):  # contexts that hold it are the ones it was made of
            return group.cache
        cache = stack_caches([c.cache for c in contexts])
        group = GroupCache(members, lengths, cache)
        for j, c in enumerate(contexts):
            for own, layer in zip(c.cache.layers, cache.layers):
                own.keys, own.values = layer.keys[j:j + 1], layer.values[j:j + 1]
            c.group = group
        return cache

    def _self_conditioning(self, feedback: list[torch.Tensor | None], width: int,
                           dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The decoder's self-conditioning input (b, W, V) in the embeddings' ``dtype`` (as ``generate`` converts it)
        and its mask (b,) (None: every row has one), from each row's previous step's logits (W, V) (None: the
        window's first step). No (b, W, V) tensor is made per step: where the feedback is the rows of one earlier
        pass, in order and already in ``dtype`` (the CPU, once a group steps on), it is that pass's logits; otherwise
        it is written into this thread's buffer, kept from step to step and grown as needed (zeros for a row without
        feedback, which the mask then ignores)."""
        if all(f is None for f in feedback):
            return None, None
        b, vocab = len(feedback), self.model.config.text_config.vocab_size
        whole = all(f is not None for f in feedback)
        mask = None if whole else torch.tensor([f is not None for f in feedback], device=self.device)  # (b,)
        base = feedback[0]._base if whole else None
        one_pass = base is not None and base.shape == (b, width, vocab) and base.is_contiguous() and all(
            f.shape == (width, vocab) and f.data_ptr() == base[j].data_ptr() for j, f in enumerate(feedback))
        if one_pass and base.dtype == dtype:
            return base, None
        buf = getattr(self._local, "feedback", None)
        if buf is None or buf.dtype != dtype or buf.numel() < b * width * vocab:
            buf = self._local.feedback = torch.empty(b * width * vocab, dtype=dtype, device=self.device)
        sc = buf[: b * width * vocab].view(b, width, vocab)
        if one_pass:
            sc.copy_(base)
        else:
            for j, f in enumerate(feedback):
                if f is None:
                    sc[j].zero_()
                else:
                    sc[j].copy_(f)
        return sc, mask

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        raise ModelError(f"model {self.info.name!r} ({self.info.family}) denoises canvases with an encoder cache; "
                         "run it through the sampler's rows (forward_groups), not a whole-sequence logits call")


def _leave_group(ctx: EncoderContext) -> None:
    """A row that reads alone, or has a new cached length: whatever of its cache is still a view of its group's stack
    becomes its own copy, so that the stack goes once the rest of the group moves on."""
    group, ctx.group = ctx.group, None
    if group is None:
        return
    for own, layer in zip(ctx.cache.layers, group.cache.layers):
        for name in ("keys", "values"):
            mine = getattr(own, name)
            if mine.untyped_storage().data_ptr() == getattr(layer, name).untyped_storage().data_ptr():
                setattr(own, name, mine.clone())


def stack_caches(caches: list):
    """One cache for a batch: the rows' key/value tensors stacked along the batch (same lengths), read-only."""
    if len(caches) == 1:
        return caches[0]
    out = copy.copy(caches[0])
    out.layers = []
    for layers in zip(*(c.layers for c in caches)):
        layer = copy.copy(layers[0])
        layer.keys = torch.cat([lay.keys for lay in layers], dim=0)
        layer.values = torch.cat([lay.values for lay in layers], dim=0)
        out.layers.append(layer)
    return out


ADAPTERS: dict[str, type[Adapter]] = {"masked_lm": MaskedLMAdapter, "llada": LLaDAAdapter, "dream": DreamAdapter,
                                      "diffusion_gemma": DiffusionGemmaAdapter}

_cache: dict[tuple[str, str, str, str], Adapter] = {}
_lock = threading.Lock()


def get_adapter(name: str, path: Path, device: str = "auto", torch_compile: str = "off") -> Adapter:
    """The process-wide adapter for a model: loaded once per worker process, on first use (per name, directory,
    device and ``torch_compile`` mode (:class:`Forward`): the same name given another directory loads that one)."""
    dev = resolve_device(device)
    key = (name, str(Path(path).resolve()), str(dev), torch_compile)
    with _lock:
        if key not in _cache:
            info = load_model_info(name, Path(path))
            _cache[key] = ADAPTERS[info.family].load(info, dev, torch_compile)
        return _cache[key]
