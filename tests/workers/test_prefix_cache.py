"""The opt-in prefix cache (``cache: "prefix"``, workers/prefix_cache.py) on a ModernBERT with sliding and full
attention layers: its forward pass is the model's own, a cached read of an unchanged canvas is the whole read,
jobs keep every invariant and their batch-mates' independence, and the cache does read fewer positions."""

from __future__ import annotations

import json
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redraft.api.schemas import GenerateJobCreate, InfillJobCreate
from redraft.api.submit import compile_request, sampling_params
from redraft.errors import InvalidRequest
from redraft.families import load_tokenizer, special_ids
from redraft.settings import Settings
from redraft.workers import prefix_cache
from redraft.workers.adapters import MaskedLMAdapter, get_adapter
from redraft.workers.drafting import Drafting
from redraft.workers.processors.forbid_tokens import ForbidTokens
from redraft.workers.sampler import SamplerConfig, denoise
from redraft.workers.steps import MemorySink
from tests.utils.models import make_tiny_random_model

NAME = "windowed-modernbert"
MASK = 1


@pytest.fixture(scope="module")
def windowed_dir(tmp_path_factory):
    """A tiny random ModernBERT whose sliding layers see 8 positions each side, so canvases longer than that
    exercise the window; 3 layers (sliding, full, sliding)."""
    path = make_tiny_random_model(tmp_path_factory.mktemp("models") / NAME)
    config = json.loads((path / "config.json").read_text())
    config.update(num_hidden_layers=3, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                  local_attention=16)
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def adapter(windowed_dir):
    return get_adapter(NAME, windowed_dir, "cpu")


@pytest.fixture(scope="module")
def job_settings(windowed_dir):
    return Settings(models={NAME: windowed_dir}, default_model=NAME)


@st.composite
def batches(draw):
    """Random token ids (b, L) and an attention mask with trailing padding per row."""
    b, length = draw(st.integers(1, 3)), draw(st.integers(2, 48))
    ids = torch.tensor(draw(st.lists(st.lists(st.integers(5, 8191), min_size=length, max_size=length),
                                     min_size=b, max_size=b)))
    real = [draw(st.integers(1, length)) for _ in range(b)]
    mask = torch.arange(length).unsqueeze(0) < torch.tensor(real).unsqueeze(1)  # (b, L)
    return ids, mask


@settings(max_examples=25, deadline=None)
@given(batch=batches())
def test_the_forward_pass_is_modernberts_own(adapter, batch):
    """Without a cache, the cache's forward pass gives ModernBertForMaskedLM's logits at every real position."""
    ids, mask = batch
    with torch.no_grad():
        ours, _, _ = prefix_cache.forward(adapter.model, ids, 0, mask)
    torch.testing.assert_close(adapter.finish(ours)[mask], adapter.logits(ids, mask)[mask], rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(batch=batches(), data=st.data())
def test_a_cached_read_of_an_unchanged_canvas_is_the_whole_read(adapter, batch, data):
    """The cache is exact where nothing changed since it was filled: reading from ``start`` on with the kept keys
    and values gives the whole read's logits there."""
    ids, mask = batch
    start = data.draw(st.integers(0, ids.shape[1] - 1))
    with torch.no_grad():
        whole, keys, values = prefix_cache.forward(adapter.model, ids, 0, mask)
        tail, _, _ = prefix_cache.forward(adapter.model, ids[:, start:], start, mask,
                                          [k[:, :, :start] for k in keys], [v[:, :, :start] for v in values])
    real = mask[:, start:]
    torch.testing.assert_close(tail[real], whole[:, start:][real], rtol=1e-5, atol=1e-5)


@st.composite
def prompted(draw):
    """A fixed prompt (8-40 tokens) then masks, with a few fixed tokens among them; a block size or none."""
    n_prompt, n_answer = draw(st.integers(8, 40)), draw(st.integers(4, 32))
    prompt = draw(st.lists(st.integers(5, 8191), min_size=n_prompt, max_size=n_prompt))
    fixed_answer = draw(st.lists(st.booleans(), min_size=n_answer, max_size=n_answer))
    answer = [draw(st.integers(5, 8191)) if f else MASK for f in fixed_answer]
    x = torch.tensor([prompt + answer])
    fixed = torch.tensor([[True] * n_prompt + fixed_answer])
    return x, fixed, draw(st.one_of(st.none(), st.integers(2, 12)))


def run(model, x, fixed, cfg, seed):
    procs = [ForbidTokens(special_ids(model.info), model.info.vocab_size)]
    gens = [torch.Generator().manual_seed(seed + i) for i in range(x.shape[0])]
    return denoise(model, x, fixed, MASK, cfg, gens, procs)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=prompted(), seed=st.integers(0, 2**31), temperature=st.sampled_from([0.0, 0.8]),
       steps=st.integers(2, 10))
def test_cached_rows_keep_fixed_text_and_leave_no_mask(adapter, case, seed, temperature, steps):
    x, fixed, block_size = case
    cfg = SamplerConfig(steps=steps, block_size=block_size, temperature=temperature, cache="prefix")
    adapter.positions_read = 0
    out = run(adapter, x, fixed, cfg, seed)
    assert torch.equal(out.tokens[fixed], x[fixed])
    assert not (out.tokens == MASK).any()
    committed = sorted(p for rec in out.history[0] for p in rec.positions)
    assert committed == (~fixed[0]).nonzero().squeeze(1).tolist()
    # Every step after a block's first reads from the prefix's end on: fewer positions than whole reads.
    whole_reads = len(out.history[0]) * x.shape[1]
    assert adapter.positions_read <= whole_reads
    if len(out.history[0]) > len({p // (block_size or x.shape[1]) for p in committed}):
        assert adapter.positions_read < whole_reads


def test_cached_rows_do_not_depend_on_their_batch_mates(adapter):
    """Rows with different prompts (different prefix lengths, their own caches) and a row without the cache, in
    one denoise: each row's text is its text alone."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for n_prompt in (6, 6, 15, 22):
        x = torch.cat([torch.randint(5, 8000, (n_prompt,), generator=g), torch.full((30 - n_prompt,), MASK)])
        rows.append((x, torch.arange(30) < n_prompt))
    x, fixed = torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])
    cfg = SamplerConfig(steps=8, block_size=6, temperature=1.0, cache="prefix")
    batched = run(adapter, x, fixed, cfg, seed=3).tokens
    for i in range(len(rows)):
        alone = denoise(adapter, x[i:i + 1], fixed[i:i + 1], MASK, cfg, [torch.Generator().manual_seed(3 + i)],
                        [ForbidTokens(special_ids(adapter.info), adapter.info.vocab_size)]).tokens
        assert torch.equal(alone[0], batched[i]), i


@pytest.mark.parametrize("block_size", [None, 8])
def test_a_job_with_the_cache_meets_its_target_and_keeps_its_text(adapter, windowed_dir, job_settings, block_size):
    tokenizer = load_tokenizer(windowed_dir)
    prompt = "The date of the meeting, written as year-month-day, is "
    req = GenerateJobCreate(kind="generate", prompt=prompt, target={"regex": "[0-9]{4}-[0-9]{2}-[0-9]{2}"},
                            max_tokens=12, seed=1, steps=6, block_size=block_size, cache="prefix")
    canvas = compile_request(req, adapter.info, job_settings)
    params = sampling_params(req, job_settings, adapter.info)
    assert params.cache == "prefix"
    text, result, _, _ = Drafting(adapter, canvas, params, MemorySink(tokenizer), job_settings).run("generate")
    assert text.startswith(prompt)
    assert re.fullmatch("[0-9]{4}-[0-9]{2}-[0-9]{2}", result["slots"]["answer"])


def test_cache_is_refused_where_it_does_not_apply(adapter, job_settings, tiny_diffusion_gemma_dir):
    with pytest.raises(InvalidRequest, match="cache"):
        SamplerConfig(steps=4, cache="suffix")
    with pytest.raises(InvalidRequest, match="mask noise only"):
        SamplerConfig(steps=4, cache="prefix", noise="uniform", canvas_length=16, vocab_size=8192)
    from redraft.families import load_model_info

    dg = load_model_info("tiny-diffusion-gemma", tiny_diffusion_gemma_dir)
    req = InfillJobCreate(kind="infill", text="a [[gap:4]] b", cache="prefix")
    with pytest.raises(InvalidRequest, match="encoder's KV cache") as exc:
        sampling_params(req, Settings(models={"tiny-diffusion-gemma": tiny_diffusion_gemma_dir}, default_model="tiny-diffusion-gemma"), dg)
    assert exc.value.code == "cache_unsupported"
    with pytest.raises(Exception, match="cache"):  # pydantic: only "prefix"
        InfillJobCreate(kind="infill", text="a [[gap:4]] b", cache="dual")


def test_a_model_that_is_not_modernbert_has_no_prefix_cache(adapter):
    """The adapter refuses (a clear error, not a silent whole read) when the weights are not ModernBERT's."""
    other = MaskedLMAdapter(adapter.info, torch.nn.Linear(2, 2), adapter.device)
    x = torch.tensor([[5, 6, MASK, MASK]])
    with pytest.raises(Exception, match="no prefix cache"):
        run(other, x, x != MASK, SamplerConfig(steps=2, cache="prefix"), 0)
