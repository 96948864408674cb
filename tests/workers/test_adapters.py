"""Adapters: the HF masked-LM path on a real (tiny, random) model; LLaDA and Dream against small fakes
with the same interface as their remote code (forward(input_ids, attention_mask) -> .logits)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.errors import ModelError
from redraft.families import FAMILIES, load_model_info
from redraft.settings import DEFAULT_MODEL_DIR
from redraft.workers.adapters import DreamAdapter, LLaDAAdapter, MaskedLMAdapter


class FakeRemoteModel(torch.nn.Module):
    """Logits that encode the input: position i puts all its mass on token (input_ids[i] + 1) % V."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.seen_mask = None

    def forward(self, input_ids, attention_mask=None):
        self.seen_mask = attention_mask
        logits = torch.full((*input_ids.shape, self.vocab), -10.0)
        logits.scatter_(-1, ((input_ids + 1) % self.vocab).unsqueeze(-1), 10.0)
        return SimpleNamespace(logits=logits)


def fake_dir(tmp_path, model_type, mask_token):
    """A directory like LLaDA's or Dream's: config.json and a tokenizer holding the family's special tokens."""
    from tokenizers import Tokenizer

    d = tmp_path / model_type
    d.mkdir()
    tok = Tokenizer.from_file(str(DEFAULT_MODEL_DIR / "tokenizer.json"))
    tok.add_special_tokens([mask_token, "<|endoftext|>"])
    tok.save(str(d / "tokenizer.json"))
    (d / "config.json").write_text(json.dumps({"model_type": model_type, "vocab_size": tok.get_vocab_size(),
                                               "max_position_embeddings": 4096}))
    return d


@pytest.mark.parametrize("model_type,family", [("llada", "llada"), ("Dream", "dream")])
def test_family_constants_come_from_the_table(tmp_path, model_type, family):
    fam = FAMILIES[family]
    info = load_model_info(model_type, fake_dir(tmp_path, model_type.lower(), fam.mask_token))
    assert info.family == family and info.shift == fam.shift and info.trust_remote_code
    assert info.mask_token == fam.mask_token
    assert info.empty_id == info.eos_id  # both families pad answers with EOS


def test_llada_logits_are_position_aligned(tmp_path):
    info = load_model_info("llada", fake_dir(tmp_path, "llada", FAMILIES["llada"].mask_token))
    adapter = LLaDAAdapter(info, FakeRemoteModel(info.vocab_size), torch.device("cpu"))
    ids = torch.tensor([[10, 20, 30, 40]])
    assert adapter.logits(ids).argmax(-1).tolist() == [[11, 21, 31, 41]]


def test_dream_logits_are_shifted_by_one(tmp_path):
    """Dream predicts token i+1 at position i: after the adapter, position i holds raw position i-1."""
    info = load_model_info("dream", fake_dir(tmp_path, "dream", FAMILIES["dream"].mask_token))
    model = FakeRemoteModel(info.vocab_size)
    adapter = DreamAdapter(info, model, torch.device("cpu"))
    ids = torch.tensor([[10, 20, 30, 40]])
    assert adapter.logits(ids).argmax(-1).tolist() == [[11, 11, 21, 31]]
    adapter.logits(ids, torch.ones(1, 4, dtype=torch.bool))
    assert model.seen_mask is None  # no padding: Dream gets no mask
    pad = torch.tensor([[True, True, True, False]])
    adapter.logits(ids, pad)
    assert torch.equal(model.seen_mask, pad)


def test_masked_lm_loads_a_local_directory_and_returns_vocab_logits(tiny_model_dir):
    info = load_model_info("tiny-random", tiny_model_dir)
    adapter = MaskedLMAdapter.load(info, torch.device("cpu"))
    out = adapter.logits(torch.tensor([[2, 1, 1, 3]]))
    assert out.shape == (1, 4, info.vocab_size) and out.dtype == torch.float32
    assert not info.weights_present and info.public()["random_weights"]


def test_unknown_family_and_missing_directory_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model_info("nope", tmp_path / "nope")
    d = tmp_path / "gpt"
    d.mkdir()
    shutil.copy(DEFAULT_MODEL_DIR / "tokenizer.json", d / "tokenizer.json")
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ModelError, match="not a supported family"):
        load_model_info("gpt", d)


def test_remote_code_without_weights_is_refused(tmp_path):
    info = load_model_info("llada", fake_dir(tmp_path, "llada", FAMILIES["llada"].mask_token))
    with pytest.raises(ModelError, match="no weights"):
        LLaDAAdapter.load(replace(info, weights_present=False), torch.device("cpu"))


def test_one_name_given_another_directory_loads_that_directory(tiny_model_dir, tmp_path):
    from redraft.workers.adapters import get_adapter
    from tests.utils.models import make_tiny_random_model

    other = make_tiny_random_model(tmp_path / "other")
    first, second = get_adapter("same-name", tiny_model_dir, "cpu"), get_adapter("same-name", other, "cpu")
    assert first is not second and (first.info.path, second.info.path) == (tiny_model_dir, other)
    assert get_adapter("same-name", tiny_model_dir, "cpu") is first  # still loaded once per directory


# ------------------------------------------------------------------ DiffusionGemma's experts, row by row (CPU)


@pytest.fixture(scope="module")
def experts_layer(tiny_diffusion_gemma_dir):
    """A decoder MoE layer of the tiny DiffusionGemma as the CPU adapter loads it (router and experts)."""
    from redraft.workers.adapters import get_adapter

    adapter = get_adapter("tiny-diffusion-gemma", tiny_diffusion_gemma_dir, "cpu")
    return adapter.model.model.decoder.layers[0]


def test_the_cpu_adapter_runs_its_experts_row_by_row(experts_layer):
    assert experts_layer.experts.config._experts_implementation.startswith("redraft_rows_")


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(2, 6), width=st.integers(1, 16), seed=st.integers(0, 2**16), lone=st.booleans(),
       inner=st.sampled_from(["grouped_mm", "eager"]))
def test_a_rows_experts_output_is_its_output_alone(experts_layer, rows, width, seed, lone, inner):
    """Under ``rows_of(width)`` the flattened batch's experts give each row bit for bit what the row gives alone,
    whatever the routing; ``lone`` routes one token of every row to the first two experts, so that batched they
    would take one matmul over ``rows`` tokens where alone they take one over a single token (the shapes whose
    CPU kernels round differently)."""
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    from redraft.workers.adapters import experts_by_row, rows_of

    experts = experts_layer.experts
    fn = ALL_EXPERTS_FUNCTIONS[inner] if inner != "eager" else type(experts).forward.__wrapped__
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows * width, experts.hidden_dim, generator=g)  # (b * W, H)
    _, weights, index = experts_layer.router(hidden)  # (b * W, k) each
    if lone:
        others = torch.arange(2, experts.num_experts).repeat(2)[: index.shape[1]]
        index = torch.where(torch.arange(rows * width).unsqueeze(1) % width == 0, torch.arange(index.shape[1]),
                            others.expand_as(index))
    alone = torch.cat([fn(experts, h, i, w) for h, i, w in zip(hidden.split(width), index.split(width),
                                                                 weights.split(width))])
    with rows_of(width):
        batched = experts_by_row(fn)(experts, hidden, index, weights)
    assert torch.equal(batched, alone)
    assert torch.equal(experts_by_row(fn)(experts, hidden, index, weights), fn(experts, hidden, index, weights))


# ------------------------------------------------------------------ a masked model's LM head at the masks only


@pytest.fixture(scope="module", params=["tiny-random", "redraft-tiny"])
def masked_adapter(request, tiny_model_dir):
    """A ModernBERT 1 x 32 (random) and the shipped one, 4 x 256: two widths, two sets of CPU kernels."""
    from redraft.workers.adapters import get_adapter

    return get_adapter(request.param, tiny_model_dir if request.param == "tiny-random" else DEFAULT_MODEL_DIR, "cpu")


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 5), length=st.sampled_from([16, 32, 64]), density=st.floats(0, 1), seed=st.integers(0, 99))
def test_logits_at_the_masks_are_the_whole_passes_logits_there_bit_for_bit(masked_adapter, rows, length, density,
                                                                          seed):
    """However few masks a pass holds (one, two: the shapes whose matmuls round differently unpadded), each masked
    position's logits are exactly what the whole forward pass gives there, alone or beside other rows."""
    a = masked_adapter
    assert a.sparse_head
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(5, a.info.vocab_size, (rows, length), generator=g)
    x[torch.rand(rows, length, generator=g) < density] = a.info.mask_id
    need = x == a.info.mask_id
    a._taken = 0
    sparse = a._logits_at_masks(x, None)
    assert sparse.shape == (rows, length, a.info.vocab_size) and sparse.dtype == torch.float32
    assert torch.equal(sparse[need], a.logits(x)[need])
    kept = sparse.clone()
    for j in range(rows):  # each row alone: the same values at its masks as in the batch
        a._taken = 0
        assert torch.equal(a._logits_at_masks(x[j:j + 1], None)[0][need[j]], kept[j][need[j]])


def test_the_groups_of_a_step_get_their_own_buffers_and_the_next_step_reuses_them(masked_adapter):
    from redraft.workers.sampler import Row, SamplerConfig

    a = masked_adapter
    mask = a.info.mask_id

    def row(length: int, masks: int) -> Row:
        x = torch.full((length,), 7)
        x[:masks] = mask
        return Row(x, x != mask, SamplerConfig(steps=4), torch.Generator().manual_seed(0), mask)

    rows = [row(16, 3), row(32, 5), row(16, 2)]
    groups = a.forward_groups(rows)
    assert sorted(m for members, _ in groups for m in members) == [0, 1, 2] and len(groups) == 2
    ptrs = {raw.data_ptr() for _, raw in groups}
    assert len(ptrs) == 2  # two groups in one step never share memory
    for members, raw in groups:
        x = torch.stack([rows[i].x for i in members])
        assert torch.equal(raw[x == mask], a.logits(x)[x == mask])
    again = a.forward_groups(rows)
    assert {raw.data_ptr() for _, raw in again} == ptrs  # no new V-wide buffers step after step


def test_threads_stepping_rows_on_one_adapter_never_share_logits(masked_adapter):
    """The process-wide adapter may be stepped from two threads at once (an engine's loop and a caller of
    ``sampler.step``): each thread's logits live in its own buffers."""
    import threading

    a = masked_adapter
    mask = a.info.mask_id
    x = torch.full((2, 16), 7)
    x[:, :4] = mask
    ptrs, results = {}, {}

    def work(name: str, seed: int) -> None:
        xs = x.clone()
        xs[:, 5] = 100 + seed
        with torch.no_grad():
            a._taken = 0
            out = a._logits_at_masks(xs, None)
        ptrs[name] = out  # kept: a thread's buffer freed as it ends could be handed to the other at the same address
        results[name] = (xs, out[xs == mask].clone())

    threads = [threading.Thread(target=work, args=(f"t{i}", i)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ptrs["t0"].data_ptr() != ptrs["t1"].data_ptr()
    for xs, got in results.values():
        assert torch.equal(got, a.logits(xs)[xs == mask])
