"""Job submission (api/submit.py): the model is resolved or refused with the list of models, the sampling fields
that do not apply to a model are refused by name, every string of a request is checked for what no database can
hold (with the path of the bad one), requests compile to the canvas they describe, a revision keeps exactly what
it does not rewrite, and submit_job writes nothing for a bad request and, for a good one, commits the row and sends
it to the queue. Real models (tiny, from transformers' classes), real databases, real Redis."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redraft.api.schemas import GenerateJobCreate, InfillJobCreate, ReviseJobCreate
from redraft.api.submit import (
    check_text,
    compile_request,
    resolve_model,
    revision_canvas,
    safety_targets,
    sampling_params,
    submit_job,
)
from redraft.errors import InvalidRequest
from redraft.families import ModelInfo
from redraft.jobs import job_default
from redraft.queue import broker_client, queue_depth
from redraft.settings import Settings
from redraft.storage import repo
from tests.utils.service import running_service

FUNCTION_FIXTURES = [HealthCheck.function_scoped_fixture]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tiny_diffusion_gemma_dir) -> Settings:
    """A server's settings with a masked model (the default) and a block-diffusion one."""
    return Settings(
        models={"tiny-random": tiny_model_dir, "tiny-dg": tiny_diffusion_gemma_dir}, default_model="tiny-random"
    )


@pytest.fixture(scope="module")
def masked(server) -> ModelInfo:
    return resolve_model(None, server)


@pytest.fixture(scope="module")
def uniform(server) -> ModelInfo:
    return resolve_model("tiny-dg", server)


def infill(**fields: Any) -> InfillJobCreate:
    return InfillJobCreate(kind="infill", text=fields.pop("text", "Hello [[gap:2]]."), **fields)


# ---- resolve_model


def test_no_model_is_the_default_and_a_named_one_is_that_one(server, masked, uniform):
    assert masked.name == "tiny-random" and masked.noise == "mask"
    assert uniform.name == "tiny-dg" and uniform.noise == "uniform"


@settings(max_examples=30, deadline=None)
@given(name=st.text(min_size=1, max_size=12))
def test_an_unknown_model_is_refused_with_the_models_there_are(server, name):
    if name in server.models:
        return
    with pytest.raises(InvalidRequest) as refused:
        resolve_model(name, server)
    assert refused.value.code == "unknown_model" and refused.value.status_code == 422
    assert refused.value.message == (f"unknown model {name!r}; available: tiny-dg, tiny-random (see GET /v1/models)")


# ---- sampling_params


@settings(max_examples=40, deadline=None)
@given(steps=st.integers(-3, 40), max_steps=st.integers(1, 36))
def test_steps_are_between_one_and_max_steps(tiny_model_dir, steps, max_steps):
    server = Settings(
        models={"tiny-random": tiny_model_dir}, default_model="tiny-random", max_steps=max_steps, default_steps=1
    )
    info = resolve_model(None, server)
    if 1 <= steps <= max_steps:
        assert sampling_params(infill(steps=steps), server, info).steps == steps
    else:
        with pytest.raises(InvalidRequest) as refused:
            sampling_params(infill(steps=steps), server, info)
        assert refused.value.message == f"steps must be between 1 and {max_steps}; got {steps}"


def test_no_steps_is_the_models_default_else_the_servers(server, masked, uniform):
    assert "steps" not in masked.defaults and "steps" in uniform.defaults
    assert sampling_params(infill(), server, masked).steps == server.default_steps
    assert sampling_params(infill(), server, uniform).steps == uniform.defaults["steps"]
    # the model's default is held to the same bound as a request's
    low = Settings(
        models=server.models, default_model="tiny-random", default_steps=1, max_steps=uniform.defaults["steps"] - 1
    )
    with pytest.raises(InvalidRequest, match=f"got {uniform.defaults['steps']}"):
        sampling_params(infill(), low, uniform)


MASKED_ONLY = {"block_size": 4, "remasking": "random", "remask_budget": 2}  # each differs from its default


@settings(max_examples=20, deadline=None)
@given(names=st.sets(st.sampled_from(sorted(MASKED_ONLY))))
def test_block_diffusion_refuses_exactly_the_masked_only_fields_given(server, masked, uniform, names):
    assert all(MASKED_ONLY[n] != job_default(n) for n in MASKED_ONLY)
    req = infill(**{n: MASKED_ONLY[n] for n in names})
    params = sampling_params(req, server, masked)  # a masked model takes them all
    assert {n: getattr(params, n) for n in names} == {n: MASKED_ONLY[n] for n in names}
    if not names:
        sampling_params(req, server, uniform)
        return
    with pytest.raises(InvalidRequest) as refused:
        sampling_params(req, server, uniform)
    named = [n for n in ("block_size", "remasking", "remask_budget") if n in names]
    assert refused.value.message.startswith(f"{', '.join(named)} do not apply to model 'tiny-dg' (diffusion_gemma")
    assert f"canvases of {uniform.canvas_length} tokens" in refused.value.message


def test_the_prefix_cache_is_for_modernbert_masked_models_only(server, masked, uniform):
    assert sampling_params(infill(cache="prefix"), server, masked).cache == "prefix"
    with pytest.raises(InvalidRequest) as refused:
        sampling_params(infill(cache="prefix"), server, uniform)
    assert refused.value.code == "cache_unsupported" and "encoder's KV cache" in refused.value.message
    other = dataclasses.replace(masked, name="bert-like", model_type="bert")
    with pytest.raises(InvalidRequest) as refused:
        sampling_params(infill(cache="prefix"), server, other)
    assert refused.value.code == "cache_unsupported" and "this is 'bert'" in refused.value.message


def test_the_temperature_is_the_requests_else_the_models_schedule_else_greedy(server, masked, uniform):
    schedule = {"temperature": None, "t_max": uniform.defaults["t_max"], "t_min": uniform.defaults["t_min"]}
    picks = [
        (masked, {}, {"temperature": 0.0, "t_max": None, "t_min": None}),
        (uniform, {}, schedule),
        (uniform, {"temperature": 0.5}, {"temperature": 0.5, "t_max": None, "t_min": None}),
        (uniform, {"t_max": 2.0, "t_min": 1.0}, {"temperature": None, "t_max": 2.0, "t_min": 1.0}),
        (masked, {"t_max": 2.0, "t_min": 1.0}, {"temperature": None, "t_max": 2.0, "t_min": 1.0}),
    ]
    for info, fields, expected in picks:
        params = sampling_params(infill(**fields), server, info)
        assert {k: getattr(params, k) for k in expected} == expected, (info.name, fields)


def test_a_threshold_replaces_the_models_entropy_bound(server, uniform):
    assert sampling_params(infill(), server, uniform).entropy_bound == uniform.defaults["entropy_bound"]
    with_threshold = sampling_params(infill(threshold=0.9), server, uniform)
    assert with_threshold.threshold == 0.9 and with_threshold.entropy_bound is None
    assert sampling_params(infill(entropy_bound=0.5), server, uniform).entropy_bound == 0.5


# ---- safety_targets


def test_safety_targets_are_the_hard_ones_validated():
    assert safety_targets(infill()) is None
    assert safety_targets(infill(safety={"avoid": ["war"]})) is None  # avoid is the workers' (it needs a model)
    targets = safety_targets(infill(safety={"banned": ["Bomb", "bomb"], "pii": ["email"]}))
    assert targets is not None and len(targets.banned) == 1 and targets.pii
    with pytest.raises(InvalidRequest, match=r"safety\.banned\[0\]"):
        safety_targets(infill(safety={"banned": ["   "]}))


# ---- check_text

clean_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)
clean = st.recursive(
    st.none() | st.integers() | st.booleans() | clean_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(clean_text, inner, max_size=3),
    max_leaves=12,
)
keys = st.text(alphabet="abxyz", min_size=1, max_size=3)  # path keys: plain, so the named path reads back
steps_down = st.lists(
    st.one_of(st.tuples(st.just("key"), keys), st.tuples(st.just("index"), st.integers(0, 2))), max_size=5
)
bad_chars = st.sampled_from(["\x00", "\ud800", "\udfff", "\udc00"])


def plant(path: list[tuple[str, Any]], leaf: Any, siblings: Any) -> Any:
    """A value holding ``leaf`` down ``path``, with clean ``siblings`` around it at every level."""
    value = leaf
    for kind, at in reversed(path):
        if kind == "key":
            value = {**(siblings if isinstance(siblings, dict) else {}), at: value}
        else:
            around = siblings if isinstance(siblings, list) else []
            value = [*around[:at], value, *around[at:]]
    return value


@settings(max_examples=100, deadline=None)
@given(value=clean)
def test_storable_text_passes_unchanged(value):
    before = json.dumps(value)
    check_text(value)
    assert json.dumps(value) == before


@settings(max_examples=100, deadline=None)
@given(path=steps_down, siblings=clean, head=clean_text, bad=bad_chars, tail=clean_text)
def test_a_nul_or_a_lone_surrogate_anywhere_is_refused_naming_where(path, siblings, head, bad, tail):
    value = plant(path, head + bad + tail, siblings)
    with pytest.raises(InvalidRequest) as refused:
        check_text(value, "request")
    assert refused.value.code == "bad_text"
    where = refused.value.message.split(" contains ")[0]
    assert where.startswith("request")
    # following the named path from the top reaches the bad string
    node: Any = value
    for part in where.removeprefix("request").replace("[", ".[").split(".")[1:]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    assert isinstance(node, str) and bad in node
    says = "a NUL character" if bad == "\x00" else f"a lone surrogate ({bad!a})"
    assert f" contains {says}" in refused.value.message


def test_a_bad_key_is_named_as_a_key_and_a_deep_value_does_not_exhaust_the_stack():
    with pytest.raises(InvalidRequest, match=r"^request\.variables key contains a NUL"):
        check_text({"variables": {"a\x00b": 1}})
    deep: Any = "\ud800"
    for _ in range(50_000):
        deep = [deep]
    with pytest.raises(InvalidRequest, match=r"^template\[0\]\[0\].*lone surrogate"):
        check_text(deep, "template")


# ---- compile_request

words = st.text(st.characters(whitelist_categories=("L", "N", "Zs"), max_codepoint=0x2FF), max_size=12)


@settings(max_examples=40, deadline=None)
@given(parts=st.lists(st.tuples(words, st.one_of(st.none(), st.integers(1, 8))), min_size=1, max_size=4), tail=words)
def test_an_infill_text_compiles_to_its_fixed_text_and_gaps(server, masked, parts, tail):
    text = "".join(w + ("[[gap]]" if n is None else f"[[gap:{n}]]") for w, n in parts) + tail
    canvas = compile_request(InfillJobCreate(kind="infill", text=text), masked, server)
    sizes = [server.default_gap_tokens if n is None else n for _, n in parts]
    assert [s.max_tokens for s in canvas.slots] == sizes
    assert [p for p in canvas.pieces if isinstance(p, int)] == list(range(len(parts)))
    assert "".join(p for p in canvas.pieces if isinstance(p, str)) == "".join(w for w, _ in parts) + tail
    assert sum(not f for f in canvas.fixed) == sum(sizes)
    # the segments form of the same request compiles to the same canvas
    segments = [
        s for w, n in parts for s in ([{"text": w}] if w else []) + [{"gap": {} if n is None else {"max_tokens": n}}]
    ]
    same = compile_request(
        InfillJobCreate(kind="infill", segments=segments + ([{"text": tail}] if tail else [])), masked, server
    )
    assert same.to_json() == canvas.to_json()


def test_segments_without_a_gap_are_refused(server, masked):
    with pytest.raises(InvalidRequest, match="the segments have no gap"):
        compile_request(InfillJobCreate(kind="infill", segments=[{"text": "no gap"}]), masked, server)
    with pytest.raises(InvalidRequest, match="a gap holds"):
        compile_request(InfillJobCreate(kind="infill", segments=[{"gap": {"max_tokens": 10**6}}]), masked, server)


def test_the_prompt_form_is_the_prompt_then_one_answer_slot(server, masked):
    canvas = compile_request(GenerateJobCreate(kind="generate", prompt="Q: why?\nA: "), masked, server)
    assert canvas.pieces == ["Q: why?\nA: ", 0] and [s.name for s in canvas.slots] == ["answer"]
    assert canvas.slots[0].max_tokens == server.default_gap_tokens and canvas.slots[0].target is None
    sized = compile_request(
        GenerateJobCreate(kind="generate", prompt="Q: ", max_tokens=5, min_tokens=2, target={"choices": ["yes", "no"]}),
        masked,
        server,
    )
    assert (sized.slots[0].max_tokens, sized.slots[0].min_tokens, sized.slots[0].target[0]) == (5, 2, "choices")


def test_a_saved_template_is_compiled_from_its_source(server, masked):
    req = GenerateJobCreate(kind="generate", template_name="greeting", variables={"who": "Ann"})
    canvas = compile_request(req, masked, server, saved_source='Dear {{ who }}, {{ slot("x", max_tokens=3) }}.')
    assert canvas.pieces == ["Dear Ann, ", 0, "."] and canvas.slots[0].name == "x" and canvas.slots[0].max_tokens == 3


def test_the_messages_form_renders_the_chat_with_the_models_template(tiny_chat_model_dir):
    server = Settings(models={"tiny-chat": tiny_chat_model_dir}, default_model="tiny-chat")
    info = resolve_model(None, server)
    req = GenerateJobCreate(
        kind="generate",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        ],
    )
    canvas = compile_request(req, info, server)
    assert len(canvas.pieces) == 2 and canvas.pieces[1] == 0 and canvas.slots[0].name == "answer"
    assert canvas.pieces[0].endswith("<|system|>Be brief.\n<|user|>Hi\n<|assistant|>")


# ---- revision_canvas

prose = st.text(alphabet="abc .,\n", min_size=1, max_size=40)


@settings(max_examples=30, deadline=None, suppress_health_check=FUNCTION_FIXTURES)
@given(text=prose, data=st.data())
def test_a_revision_keeps_exactly_the_text_it_does_not_rewrite(session, server, masked, text, data):
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), min_size=2, max_size=6), label="cuts"))
    spans = [{"start": a, "end": b} for a, b in zip(cuts[::2], cuts[1::2])]
    spans = [s for i, s in enumerate(spans) if i == 0 or s["start"] > spans[i - 1]["end"]]  # apart
    req = ReviseJobCreate(kind="revise", text=text, spans=spans)
    canvas, plan = revision_canvas(session, "no-tenant", req, masked, server, None)
    regions = [(r["start"], r["end"]) for r in plan["regions"]]
    assert regions == [(s["start"], s["end"]) for s in spans]
    kept = [tuple(k) for k in plan["kept"]]
    assert "".join(p for p in canvas.pieces if isinstance(p, str)) == "".join(text[a:b] for a, b in kept)
    assert sum(b - a for a, b in kept) + sum(b - a for a, b in regions) == len(text)
    assert all(b <= s or a >= e for a, b in kept for s, e in regions if s < e)  # nothing rewritten is kept
    assert len(canvas.slots) == len(regions)


def test_revising_a_draft_reads_it_for_this_tenant_only(session, server, masked):
    owner = repo.get_or_create_tenant(session, "owner")
    other = repo.get_or_create_tenant(session, "other")
    job = repo.create_job(
        session, tenant_id=owner.id, kind="infill", model="tiny-random", request={}, params={}, canvas={}
    )
    draft = repo.finish_job(
        session,
        job.id,
        text="Hello brave world.",
        token_ids=[1],
        result_extra={},
        steps_run=1,
        layout={"written": [[6, 11, 0.2], [12, 17, 0.9]], "slots": []},
    )
    req = ReviseJobCreate(kind="revise", draft_id=draft.id, auto={"least_confident": 1})
    canvas, plan = revision_canvas(session, owner.id, req, masked, server, None)
    assert [(r["start"], r["end"], r["reason"]) for r in plan["regions"]] == [(6, 11, "auto")]
    assert canvas.pieces == ["Hello ", 0, " world."]
    for tenant, draft_id in ((other.id, draft.id), (owner.id, "no-such-draft")):
        with pytest.raises(InvalidRequest) as refused:
            revision_canvas(session, tenant, req.model_copy(update={"draft_id": draft_id}), masked, server, None)
        assert refused.value.code == "unknown_draft" and "revise one of your drafts" in refused.value.message


def test_a_revision_with_nothing_to_rewrite_is_refused_unless_it_avoids_topics(session, server, masked):
    clean = ReviseJobCreate(kind="revise", text="Hello kind world.", safety={"banned": ["brave"]})
    with pytest.raises(InvalidRequest) as refused:
        revision_canvas(session, "t", clean, masked, server, safety_targets(clean))
    assert refused.value.code == "nothing_to_revise"
    banned = clean.model_copy(update={"text": "Hello brave world."})
    _, plan = revision_canvas(session, "t", banned, masked, server, safety_targets(banned))
    assert [(r["start"], r["end"], r["reason"]) for r in plan["regions"]] == [(6, 11, "banned")]
    avoid = ReviseJobCreate(kind="revise", text="Hello kind world.", safety={"avoid": ["war"]})
    canvas, plan = revision_canvas(session, "t", avoid, masked, server, None)  # the worker scores it first
    assert plan == {"kept": [[0, 17]], "regions": []} and canvas.pieces == ["Hello kind world."]


# ---- submit_job, on a running service's database and Redis (no worker: nothing here runs)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request, tiny_model_dir, tmp_path_factory):
    with running_service(request.param, tiny_model_dir, tmp_path_factory.mktemp(request.param), workers=0) as svc:
        yield svc


@pytest.fixture
def tenant(service) -> str:
    from redraft.storage.db import session_scope

    key = service.new_key(f"submit-{uuid.uuid4().hex[:8]}")
    with session_scope() as s:
        return repo.tenant_for_key(s, key).id


def submitted(tenant: str, req) -> tuple[str, Any]:
    from redraft.settings import get_settings
    from redraft.storage.db import session_scope

    with session_scope() as s:
        job = submit_job(s, tenant, req, get_settings())
        return job.id, job.params


def waiting(service) -> int:
    from redraft.settings import get_settings

    client = broker_client(get_settings())
    try:
        return queue_depth(client, service.env["REDRAFT_QUEUE_NAME"])
    finally:
        client.close()


def test_a_good_request_is_committed_then_sent_to_the_queue(service, tenant):
    before = waiting(service)
    req = GenerateJobCreate(kind="generate", prompt="Q: ", max_tokens=3, seed=7)
    job_id, _ = submitted(tenant, req)
    row = service.job_row(job_id)
    assert row.tenant_id == tenant and row.status == "queued" and row.kind == "generate" and row.model == "tiny-random"
    assert row.request == req.model_dump(mode="json", exclude_none=True)
    assert row.params["seed"] == 7 and row.canvas["pieces"] == ["Q: ", 0]
    assert row.enqueued_at is not None and waiting(service) == before + 1


def test_a_revision_of_text_imports_the_text_as_its_parent_draft(service, tenant):
    from redraft.storage.db import session_scope

    job_id, params = submitted(
        tenant, ReviseJobCreate(kind="revise", text="Hello brave world.", spans=[{"start": 6, "end": 11}])
    )
    plan = params["revise"]
    assert plan["kept"] == [[0, 6], [11, 18]] and [(r["start"], r["end"]) for r in plan["regions"]] == [(6, 11)]
    assert service.job_row(job_id).params["revise"] == plan
    with session_scope() as s:
        parent = repo.get_draft(s, plan["parent_id"], tenant)
        assert (parent.text, parent.job_id) == ("Hello brave world.", job_id)


BAD = [
    (InfillJobCreate(kind="infill", text="x \x00 [[gap]]"), "bad_text"),
    (InfillJobCreate(kind="infill", text="x [[gap]]", model="gpt-9"), "unknown_model"),
    (InfillJobCreate(kind="infill", text="x [[gap]]", steps=0), "invalid_request"),
    (GenerateJobCreate(kind="generate", template_name="never-saved"), "unknown_template"),
    (GenerateJobCreate(kind="generate", prompt="x", safety={"banned": ["  "]}), "invalid_request"),
    (ReviseJobCreate(kind="revise", draft_id="no-such-draft", spans=[{"start": 0, "end": 1}]), "unknown_draft"),
    (ReviseJobCreate(kind="revise", text="Hello.", safety={"banned": ["bye"]}), "nothing_to_revise"),
    (InfillJobCreate(kind="infill", text="word " * 400 + "[[gap]]"), "context_too_long"),
]


@pytest.mark.parametrize(("req", "code"), BAD, ids=[c for _, c in BAD])
def test_a_bad_request_writes_nothing_and_sends_nothing(service, tenant, req, code):
    from redraft.storage.db import session_scope

    before = waiting(service)
    with pytest.raises(InvalidRequest) as refused:
        submitted(tenant, req)
    assert refused.value.code == code, refused.value.message
    with session_scope() as s:
        assert repo.list_jobs(s, tenant)[1] == 0
    assert waiting(service) == before


def test_a_saved_template_is_used_by_name_for_its_tenant_only(service, tenant):
    from redraft.storage.db import session_scope

    with session_scope() as s:
        repo.save_template(s, tenant, "greet", 'Hi {{ who }}: {{ slot("a", max_tokens=2) }}')
    job_id, _ = submitted(tenant, GenerateJobCreate(kind="generate", template_name="greet", variables={"who": "Bo"}))
    assert service.job_row(job_id).canvas["pieces"] == ["Hi Bo: ", 0]
    with session_scope() as s:
        someone = repo.get_or_create_tenant(s, "someone-else").id
    with pytest.raises(InvalidRequest) as refused:
        submitted(someone, GenerateJobCreate(kind="generate", template_name="greet"))
    assert refused.value.code == "unknown_template" and "'greet' not found" in refused.value.message


def test_a_job_whose_send_fails_is_kept_for_the_reaper(service, tenant, monkeypatch):
    """Redis unreachable at the moment of sending: the row is committed, stays queued with no send recorded (the
    reaper sends it later), and submit_job still returns it."""
    from redraft.queue import get_celery
    from redraft.settings import get_settings
    from redraft.storage.db import session_scope

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")  # nothing listens on the discard port
    get_settings.cache_clear()
    get_celery.cache_clear()
    try:
        with session_scope() as s:
            job_id = submit_job(s, tenant, infill(), get_settings()).id
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        get_celery.cache_clear()
    row = service.job_row(job_id)
    assert row.status == "queued" and row.enqueued_at is None
