"""REDRAFT_TORCH_COMPILE: a masked model's forward pass under torch.compile keeps every sampler property, and a worker
whose compiler is missing runs as written instead of failing its jobs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.workers.adapters import get_adapter
from redraft.workers.engine import BatchEngine
from tests.workers.test_engine import drafting, job_params, run_together


@pytest.fixture(scope="module")
def compiled_adapter(tiny_model_dir):
    """The tiny random ModernBERT with its trunk under torch.compile (dynamic shapes, compiled when loaded)."""
    adapter = get_adapter("tiny-random", tiny_model_dir, "cpu", "default")
    assert adapter.net.compiled, "the compiler is on this machine: compiling must not have fallen back"
    return adapter


def fixed_parts(text: str) -> list[str]:
    """The text between a template's gaps, which an infill keeps byte for byte."""
    import re

    return [p for p in re.split(r"\[\[gap(?::\d+)?\]\]", text) if p.strip()]


@settings(max_examples=6, deadline=None)
@given(jobs=st.lists(job_params, min_size=2, max_size=4))
def test_compiled_a_jobs_text_does_not_depend_on_its_batch_mates(compiled_adapter, tiny_model, jobs):
    """Same seed, same text, alone or batched, through the compiled pass (batch sizes and lengths share one graph)."""
    _, tokenizer = tiny_model
    alone = [drafting(compiled_adapter, tokenizer, p).run("infill")[0] for p in jobs]
    engine = BatchEngine(compiled_adapter, max_batch=len(jobs), start=False)
    together = run_together(compiled_adapter, tokenizer, jobs, engine)
    assert [t[0] for t in together] == alone
    assert engine.rows_stepped > engine.steps, "the jobs really shared forward passes"
    for p, text in zip(jobs, alone):
        assert "[MASK]" not in text
        at = 0
        for part in fixed_parts(p["text"]):  # the fixed text, in order, unchanged
            at = text.index(part.strip(), at) + len(part.strip())


@settings(max_examples=10, deadline=None)
@given(rows=st.integers(1, 5), length=st.sampled_from([16, 48, 80]), density=st.floats(0, 1),
       seed=st.integers(0, 99))
def test_the_compiled_pass_is_the_model_to_rounding(compiled_adapter, rows, length, density, seed):
    """Whatever the shape, compiled logits at the masks are the model's as written, to float32 rounding."""
    a = compiled_adapter
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(5, a.info.vocab_size, (rows, length), generator=g)
    x[torch.rand(rows, length, generator=g) < density] = a.info.mask_id
    need = x == a.info.mask_id
    a._taken = 0
    compiled = a._logits_at_masks(x, None)[need]
    torch.testing.assert_close(compiled, a.logits(x)[need], atol=1e-4, rtol=1e-4)


def test_without_a_working_compiler_the_model_runs_as_written(tiny_model_dir, tmp_path):
    """A CPU worker asked to compile where no C++ compiler is (a slim image): a warning naming the setting, and the
    job's text comes from the model as written."""
    script = textwrap.dedent(f"""
        import logging, torch
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        from redraft.workers.adapters import get_adapter
        from redraft.workers.sampler import SamplerConfig, denoise
        a = get_adapter("tiny-random", {str(tiny_model_dir)!r}, "cpu", "default")
        x = torch.full((1, 32), a.info.mask_id); fixed = torch.zeros(1, 32, dtype=torch.bool)
        out = denoise(a, x, fixed, a.info.mask_id, SamplerConfig(steps=4), [torch.Generator().manual_seed(0)])
        print("compiled", a.net.compiled, "masks left", int((out.tokens == a.info.mask_id).sum()))
    """)
    env = {**os.environ, "CXX": str(tmp_path / "no-such-c++"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "compiled False masks left 0" in done.stdout
    assert "REDRAFT_TORCH_COMPILE=default" in done.stderr and "runs as written" in done.stderr


def test_diffusion_gemma_says_it_is_not_compiled(tiny_diffusion_gemma_dir, caplog):
    with caplog.at_level("WARNING", logger="redraft.workers.adapters"):
        adapter = get_adapter("tiny-dg-compile", tiny_diffusion_gemma_dir, "cpu", "default")
    assert not adapter.net.compiled
    assert any("applies to masked models" in r.getMessage() for r in caplog.records)

