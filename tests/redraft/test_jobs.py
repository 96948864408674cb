"""redraft.jobs: the job's parameters are built once, stored as JSON and read back the same; the status enum
is the one vocabulary of the job lifecycle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from redraft.api.schemas import InfillJobCreate
from redraft.api.submit import sampling_params
from redraft.errors import InvalidRequest
from redraft.families import ModelInfo
from redraft.jobs import ACTIVE, TERMINAL, JobParams, JobStatus
from redraft.settings import Settings
from redraft.storage.tables import Job
from redraft.workers.drafting import sampler_config
from redraft.workers.sampler import SamplerConfig

SETTINGS = Settings()
SAMPLING = ("steps", "seed", "temperature", "t_max", "t_min", "block_size", "remasking", "threshold",
            "entropy_bound", "stability", "confidence_stop", "remask_budget", "remask_below", "cache")  # the public shape


def model(noise: str, defaults: dict) -> ModelInfo:
    """A model's description as sampling_params reads it (no files: it only reads the family's rules)."""
    return ModelInfo(name="m", path=Path("."), family="masked_lm" if noise == "mask" else "diffusion_gemma",
                     model_type="modernbert" if noise == "mask" else "diffusion_gemma", context_length=512, vocab_size=100, mask_token="[MASK]", mask_id=1, empty_id=2,
                     eos_id=None, bos_id=None, shift=0, trust_remote_code=False, weights_present=False,
                     description="", noise=noise, canvas_length=None if noise == "mask" else 32, defaults=defaults)


def stored_before(req: InfillJobCreate, info: ModelInfo) -> dict:
    """``jobs.params`` as submission wrote it before JobParams (the frozen reference this module must match)."""
    defaults = info.defaults
    scheduled = req.temperature is None and req.t_max is None and "t_max" in defaults
    params = {
        "steps": req.steps if req.steps is not None else defaults.get("steps", SETTINGS.default_steps),
        "seed": req.seed,
        "temperature": None if (req.t_max is not None or scheduled) else (req.temperature or 0.0),
        "t_max": req.t_max if req.t_max is not None else (defaults["t_max"] if scheduled else None),
        "t_min": req.t_min if req.t_min is not None else (defaults["t_min"] if scheduled else None),
        "block_size": req.block_size, "remasking": req.remasking, "threshold": req.threshold,
        "entropy_bound": req.entropy_bound if req.entropy_bound is not None else (
            defaults.get("entropy_bound") if req.threshold is None else None),
        "stability": defaults.get("stability"), "confidence_stop": defaults.get("confidence_stop"),
        "remask_budget": req.remask_budget, "remask_below": req.remask_below,
        "cache": req.cache,  # added with the prefix cache (null: off)
    }
    if req.safety is not None:
        params["safety"] = req.safety.model_dump(mode="json")
    return params


unit = st.floats(0.05, 1.0)
schedule = st.one_of(st.just({}), st.tuples(unit, unit).map(lambda p: {"t_max": max(p), "t_min": min(p)}))
requests = st.fixed_dictionaries({
    "steps": st.none() | st.integers(1, 64),
    "seed": st.integers(0, 2**63 - 1),
    "temperature": st.none() | st.sampled_from([0.0, 0.7, 2]),
    "block_size": st.none() | st.integers(1, 16),
    "remasking": st.sampled_from(["low_confidence", "random"]),
    "threshold": st.none() | unit,
    "entropy_bound": st.none() | st.floats(0.1, 5.0),
    "remask_budget": st.sampled_from([0, 4]),
    "remask_below": unit,
    "cache": st.sampled_from([None, "prefix"]),
    "safety": st.none() | st.fixed_dictionaries({}, optional={
        "banned": st.just(["bomb"]), "pii": st.sampled_from([True, ["email"]]), "avoid": st.just(["war"]),
        "avoid_threshold": unit, "avoid_rounds": st.integers(1, 10)}),
}).flatmap(lambda fields: schedule.map(lambda s: {**fields, **s}))
models = st.one_of(
    st.builds(model, st.just("mask"), st.sampled_from([{}, {"steps": 12}])),
    st.builds(model, st.just("uniform"), st.just({"steps": 48, "t_max": 0.8, "t_min": 0.4, "entropy_bound": 0.1,
                                                  "stability": 2, "confidence_stop": 0.01})))


@settings(max_examples=300, deadline=None)
@given(fields=requests, info=models)
def test_params_are_stored_as_before_and_read_back_the_same(fields, info):
    try:
        req = InfillJobCreate(kind="infill", text="a [[gap]]", **fields)
    except ValidationError:
        assume(False)  # the request refuses it (e.g. a temperature beside a schedule): nothing is stored
    try:
        params = sampling_params(req, SETTINGS, info)
    except InvalidRequest:  # a field that does not apply to uniform noise, given: refused as before
        assert info.noise == "uniform" and (req.block_size is not None or req.remasking != "low_confidence"
                                            or req.remask_budget > 0 or req.cache is not None)
        return
    stored = params.to_json()
    assert stored == stored_before(req, info)
    assert list(stored)[:len(SAMPLING)] == list(SAMPLING) and ("safety" in stored) == (req.safety is not None)
    assert json.loads(json.dumps(stored)) == stored  # plain JSON, as the column holds it
    back = JobParams.from_json(stored)
    assert back.to_json() == stored
    assert sampler_config(back, info) == sampler_config(params, info)


def test_a_row_stored_before_loads_with_the_defaults():
    """A row written before a key existed (or by a version with keys since dropped) still runs."""
    old = {"steps": 8, "seed": 3, "temperature": 0.0, "remask_budget": 2, "retired_key": 1,
           "safety": {"avoid": ["weather"]},
           "revise": {"parent_id": "d1", "kept": [[0, 4]], "regions": [{"start": 4, "end": 9, "max_tokens": 3,
                                                                         "reason": "span", "target": None}]}}
    params = JobParams.from_json(old)
    defaults = JobParams(steps=8)
    assert params.remask_below == defaults.remask_below and params.remasking == defaults.remasking
    assert params.safety.avoid_threshold == 0.25 and params.safety.avoid_rounds == 3 and params.safety.banned == []
    assert params.revise.parent_id == "d1" and params.revise.kept == [[0, 4]]
    assert "retired_key" not in params.to_json()
    cfg = sampler_config(params, model("mask", {}))
    assert cfg == SamplerConfig(steps=8, remask_budget=2)  # the sampler's own defaults fill the rest
    with pytest.raises(ValidationError):  # a row cannot lose its steps: the sampler needs them
        JobParams.from_json({"seed": 1})


def test_each_default_is_the_one_jobparams_declares():
    """The request, the sampler and the stored job agree on every default they share (all read JobParams)."""
    request, job, cfg = InfillJobCreate(kind="infill", text="[[gap]]"), JobParams(steps=1), SamplerConfig(steps=1)
    for name in ("seed", "remasking", "remask_budget", "remask_below"):
        assert getattr(request, name) == getattr(job, name)
    for name in ("temperature", "remasking", "remask_budget", "remask_below"):
        assert getattr(cfg, name) == getattr(job, name)


def test_status_enum_is_the_one_lifecycle():
    assert set(ACTIVE) | set(TERMINAL) == set(JobStatus) and not set(ACTIVE) & set(TERMINAL)
    assert Job.__table__.c.status.default.arg == JobStatus.QUEUED  # a new row starts queued
    assert JobStatus("succeeded") is JobStatus.SUCCEEDED and json.dumps(JobStatus.FAILED) == '"failed"'
