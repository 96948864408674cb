"""A DiffusionGemma (uniform-noise block diffusion) through the real API, queue and worker.

The service serves the tiny random masked model as its default and a tiny random DiffusionGemma as
"tiny-dg" (canvases of 16 tokens, 6 steps per canvas from its generation_config.json). The ordinary
jobs are submitted together once per backend (``finished``) so the worker batches them; each test then
checks one of them.
"""

from __future__ import annotations

import json
import re
import time

import jsonschema
import pytest

from redraft.api.schemas import StepsPublic
from redraft.client import CanvasReplay
from redraft.constraints.safety import find_violations, parse_safety
from tests.utils.models import make_tiny_diffusion_gemma
from tests.utils.service import read_sse, running_service, wait_for

DG = "tiny-dg"
CANVAS = 16
STEPS = 6  # per canvas: the model's generation_config.json max_denoising_steps
DEFAULTS = {"steps": STEPS, "entropy_bound": 0.1, "t_max": 0.8, "t_min": 0.4, "stability": 1,
            "confidence_stop": 0.005}
# The tiny model's chat template (tests/utils/models.py CHAT_TEMPLATE) on one user turn, less its BOS.
CHAT = [{"role": "user", "content": "Name a colour."}]
RENDERED = "<|turn|>user\nName a colour.<|end|>\n<|turn|>assistant\n"

# Fixed text with odd bytes in it; the third gap (20 tokens) is longer than a canvas, so it straddles one.
INFILL = "Café — naïve  \t«quotes» [[gap:4]], then [[gap:6]]\nand\u00a0then [[gap:20]] end. ✓"
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": False}
TEMPLATE = ('Dear {{ who }}, the {{ slot("thing", max_tokens=4, choices=["report", "plan"]) }} is ready; '
            'code {{ slot("code", max_tokens=6, regex="[A-Z]{3}[0-9]{2}") }}.')
SAFETY = {"banned": ["the", "an", "e"], "pii": True}

JOBS = {
    "infill": {"kind": "infill", "text": INFILL, "seed": 1},
    "prompt": {"kind": "generate", "prompt": "Once upon a time", "max_tokens": 8, "seed": 2},
    "messages": {"kind": "generate", "messages": CHAT, "max_tokens": 6, "seed": 3},
    "template": {"kind": "generate", "template": TEMPLATE, "variables": {"who": "Ann"}, "seed": 4},
    "regex": {"kind": "generate", "prompt": "Date: ", "target": {"regex": r"[0-9]{4}-[0-9]{2}-[0-9]{2}"},
              "max_tokens": 12, "seed": 5},
    "json": {"kind": "generate", "prompt": "JSON: ", "target": {"json_schema": SCHEMA}, "max_tokens": 20, "seed": 6},
    "choices": {"kind": "generate", "prompt": "Pick: ", "target": {"choices": ["yes", "no", "maybe"]},
                "max_tokens": 4, "seed": 7},
    "long": {"kind": "generate", "prompt": "Tell me a story.", "max_tokens": 40, "min_tokens": 40, "seed": 8},
    "safety": {"kind": "generate", "prompt": "Write to me at ", "max_tokens": 24, "safety": SAFETY, "seed": 9},
    "greedy": {"kind": "generate", "prompt": "Hi", "max_tokens": 8, "temperature": 0, "threshold": 0.5},
}


@pytest.fixture(scope="module")
def dg_dir(tmp_path_factory):
    return make_tiny_diffusion_gemma(tmp_path_factory.mktemp("models") / DG, canvas_length=CANVAS, steps=STEPS)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request, tiny_model_dir, dg_dir, tmp_path_factory):
    """tiny-random (masked, the default) and tiny-dg (uniform-noise block diffusion), one worker."""
    models = json.dumps({"tiny-random": str(tiny_model_dir), DG: str(dg_dir)})
    # The module submits its ten jobs at once (so they batch), more than a tenant's default of concurrent jobs;
    # quotas have their own tests (tests/api/test_quotas.py).
    with running_service(request.param, tiny_model_dir, tmp_path_factory.mktemp(request.param),
                         REDRAFT_MODELS=models, REDRAFT_TENANT_MAX_CONCURRENT_JOBS=str(2 * len(JOBS))) as svc:
        yield svc


def submit(client, **body):
    r = client.post("/v1/jobs", json={"model": DG, **body})
    assert r.status_code == 202, r.text
    return r.json()


@pytest.fixture(scope="module")
def finished(client):
    """Every job in ``JOBS``, submitted together and run to the end: name -> the finished job."""
    ids = {name: submit(client, **body)["id"] for name, body in JOBS.items()}
    done = {name: wait_for(client, job_id, timeout=240) for name, job_id in ids.items()}
    for name, job in done.items():
        assert job["status"] == "succeeded", (name, job["error"])
    return done


def result(finished, name):
    return finished[name]["result"]


def replay(client, job):
    """The job's step history applied to its start canvas, and its one draft."""
    steps = StepsPublic.model_validate(client.get(f"/v1/jobs/{job['id']}/steps").json())
    view = CanvasReplay(steps)
    for st in steps.data:
        for pos, _token, _text, conf in st.committed:
            assert not steps.fixed[pos] and 0.0 <= conf <= 1.0
        for pos, _token in st.remasked:
            assert not steps.fixed[pos]
        view.apply(st)
    drafts = client.get(f"/v1/jobs/{job['id']}/drafts").json()
    assert drafts["count"] == 1
    return steps, view, drafts["data"][0]


# ------------------------------------------------------------------------------------------------ models


def test_models_lists_diffusion_gemma_with_its_noise_canvas_and_defaults(client):
    models = {m["name"]: m for m in client.get("/v1/models").json()["data"]}
    assert sorted(models) == [DG, "tiny-random"]
    dg = models[DG]
    assert (dg["family"], dg["noise"], dg["canvas_length"]) == ("diffusion_gemma", "uniform", CANVAS)
    assert dg["defaults"] == DEFAULTS and dg["random_weights"] is True and dg["vocab_size"] == 8192
    masked = models["tiny-random"]
    assert (masked["noise"], masked["canvas_length"], masked["defaults"]) == ("mask", None, {})


# ------------------------------------------------------------------------------------------------ 422s

BAD = [
    ({"kind": "infill", "text": "x [[gap]]", "block_size": 4},
     f"block_size do not apply to model '{DG}' (diffusion_gemma: block diffusion from uniform noise, canvases of "
     f"{CANVAS} tokens, acceptance re-decided every step); leave them out, or tune `entropy_bound`, `threshold`, "
     "`t_max`/`t_min` or `steps`"),
    ({"kind": "infill", "text": "x [[gap]]", "remasking": "random", "remask_budget": 2},
     f"remasking, remask_budget do not apply to model '{DG}'"),
    ({"kind": "generate", "prompt": "x", "t_max": 0.8},
     "give both `t_max` and `t_min` (a linear schedule), or neither"),
    ({"kind": "generate", "prompt": "x", "t_min": 0.4}, "give both `t_max` and `t_min`"),
    ({"kind": "generate", "prompt": "x", "temperature": 0.5, "t_max": 0.8, "t_min": 0.4},
     "give `temperature` (one for every step) or `t_max`/`t_min` (a schedule), not both"),
    ({"kind": "generate", "prompt": "x", "t_max": 0.2, "t_min": 0.4}, "must be at least t_min"),
]


@pytest.mark.parametrize("body,message", BAD)
def test_options_that_do_not_apply_are_a_clear_422_and_write_nothing(service, body, message):
    with service.client(service.new_key("dg-422")) as client:  # a fresh tenant: it has no jobs
        r = client.post("/v1/jobs", json={"model": DG, **body})
        assert r.status_code == 422, r.text
        assert message in r.json()["detail"], r.json()
        assert client.get("/v1/jobs").json()["count"] == 0


def test_the_masked_model_still_takes_block_size(client):
    r = client.post("/v1/jobs", json={"kind": "infill", "text": "x [[gap:4]]", "block_size": 2, "steps": 4})
    assert r.status_code == 202, r.text
    assert wait_for(client, r.json()["id"])["status"] == "succeeded"


# ------------------------------------------------------------------------------------------------ jobs


def test_infill_keeps_the_fixed_text_byte_identical(client, finished):
    res = result(finished, "infill")
    assert len(res["gaps"]) == 3
    pieces = re.split(r"\[\[gap:\d+\]\]", INFILL)
    assert res["text"] == "".join(p + g for p, g in zip(pieces, [*res["gaps"], ""]))
    fixed = client.get(f"/v1/jobs/{finished['infill']['id']}/steps").json()["fixed"]
    runs = [len(m) for m in re.findall("0+", "".join("1" if f else "0" for f in fixed))]
    assert runs == [4, 6, 20]  # the last gap is longer than a canvas: it straddles a canvas boundary


def test_the_sampling_defaults_come_from_the_model(finished):
    """Nothing given: the schedule and acceptance of the model's generation_config.json; what is given wins."""
    params = finished["infill"]["params"]
    assert {k: params[k] for k in DEFAULTS} == DEFAULTS and params["temperature"] is None
    assert params["block_size"] is None and params["threshold"] is None
    greedy = finished["greedy"]["params"]
    assert (greedy["steps"], greedy["temperature"], greedy["t_max"], greedy["t_min"]) == (STEPS, 0.0, None, None)
    assert (greedy["threshold"], greedy["entropy_bound"]) == (0.5, None)


def test_generate_from_a_prompt(finished):
    res = result(finished, "prompt")
    assert res["text"] == "Once upon a time" + res["slots"]["answer"]


def test_generate_from_messages_uses_the_models_chat_template(finished):
    res = result(finished, "messages")
    assert res["text"] == RENDERED + res["slots"]["answer"]


def test_generate_from_a_template_with_two_slots(finished):
    slots = result(finished, "template")["slots"]
    assert slots["thing"] in ("report", "plan") and re.fullmatch("[A-Z]{3}[0-9]{2}", slots["code"])
    assert result(finished, "template")["text"] == f"Dear Ann, the {slots['thing']} is ready; code {slots['code']}."


def test_targets_are_met(finished):
    assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", result(finished, "regex")["slots"]["answer"])
    jsonschema.validate(json.loads(result(finished, "json")["slots"]["answer"]), SCHEMA)
    assert result(finished, "choices")["slots"]["answer"] in ("yes", "no", "maybe")
    assert result(finished, "choices")["text"] == "Pick: " + result(finished, "choices")["slots"]["answer"]


def test_an_answer_longer_than_a_canvas_spans_several(client, finished):
    job = finished["long"]
    steps, _, draft = replay(client, job)
    free = [p for p, f in enumerate(steps.fixed) if not f]
    assert len(free) == 40
    written = {p for st in steps.data for p, *_ in st.committed}
    assert set(free) <= written  # min_tokens 40: every position holds a token
    assert len(steps.data) == job["timings"]["steps_run"] >= 3  # three canvases, at least a step each
    assert any(st.remasked for st in steps.data)  # uniform noise: a token shown one step is renoised the next
    assert result(finished, "long")["text"] == "Tell me a story." + result(finished, "long")["slots"]["answer"]


def test_safety_banned_phrases_and_pii_are_never_written(finished):
    res = result(finished, "safety")
    answer = res["slots"]["answer"]
    assert answer and res["text"] == "Write to me at " + answer
    assert find_violations(res["text"], parse_safety(SAFETY), [(0, len("Write to me at "))]) == []


@pytest.mark.parametrize("name", ["infill", "template", "long", "safety"])
def test_steps_replay_to_the_final_draft(client, finished, name):
    steps, view, draft = replay(client, finished[name])
    assert steps.mask_id == 8192  # the mask sentinel: vocab_size, never a real token
    assert steps.count == len(steps.data) == finished[name]["timings"]["steps_run"]
    assert [st.step for st in steps.data] == list(range(steps.count))
    assert view.masks_left == 0 and view.tokens == draft["token_ids"]
    assert draft["id"] == finished[name]["result"]["draft_id"] and draft["text"] == finished[name]["result"]["text"]


def test_sse_streams_every_step_then_done(client):
    job = submit(client, kind="generate", prompt="Hello", max_tokens=20, seed=11)
    events = read_sse(client, job["id"])
    assert events[-1][0] == "done" and events[-1][1]["status"] == "succeeded"
    steps = [d for e, d in events if e == "step"]
    assert [s["step"] for s in steps] == list(range(events[-1][1]["timings"]["steps_run"]))
    stored = client.get(f"/v1/jobs/{job['id']}/steps").json()["data"]
    assert steps == stored


def test_sse_late_client_gets_the_steps_then_done(client, finished):
    job = finished["prompt"]
    events = read_sse(client, job["id"])
    assert [e for e, _ in events] == ["step"] * job["timings"]["steps_run"] + ["done"]


# ------------------------------------------------------------------------------------------------ revise


def test_revise_a_span_of_a_dg_draft_keeps_the_rest(client, finished):
    text, draft_id = result(finished, "infill")["text"], result(finished, "infill")["draft_id"]
    start = text.index(", then ")
    end = start + len(", then ")
    r = submit(client, kind="revise", draft_id=draft_id, spans=[{"start": start, "end": end, "max_tokens": 4}], seed=5)
    done = wait_for(client, r["id"])
    assert done["status"] == "succeeded", done["error"]
    (edit,) = done["result"]["edits"]
    assert (edit["old"], edit["reason"]) == (text[start:end], "span")
    assert done["result"]["text"] == text[:start] + edit["new"] + text[end:]
    draft = client.get(f"/v1/drafts/{done['result']['draft_id']}").json()
    assert draft["parent_id"] == draft_id and draft["version"] == 2


def test_revise_auto_rewrites_the_least_confident_token_only(client, finished):
    draft = client.get(f"/v1/drafts/{result(finished, 'prompt')['draft_id']}").json()
    written = draft["layout"]["written"]
    assert written and all(0.0 <= c <= 1.0 for _, _, c in written)
    lowest = min(written, key=lambda w: (w[2], w[0]))
    done = wait_for(client, submit(client, kind="revise", draft_id=draft["id"], auto={"least_confident": 1})["id"])
    assert done["status"] == "succeeded", done["error"]
    (edit,) = done["result"]["edits"]
    assert (edit["start"], edit["end"], edit["reason"]) == (lowest[0], lowest[1], "auto")
    text = draft["text"]
    assert done["result"]["text"] == text[: lowest[0]] + edit["new"] + text[lowest[1]:]


# ------------------------------------------------------------------------------------------------ cancel, crash


def steps_run(client, job_id):
    return client.get(f"/v1/jobs/{job_id}").json()["timings"]["steps_run"]


@pytest.mark.slow
def test_cancel_a_running_multi_canvas_job(client):
    job = submit(client, kind="generate", prompt="A long story:", max_tokens=200, steps=40, seed=12)
    start = client.get(f"/v1/jobs/{job['id']}/steps").json()["fixed"].index(False)  # the first canvas's start
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", timeout=60) as r:
        for line in r.iter_lines():  # every step shows a token at least: wait for one in the second canvas
            if line.startswith("data:"):
                event = json.loads(line.split(":", 1)[1])
                assert "committed" in event, event  # a step, not done or failed
                if any(p >= start + CANVAS for p, *_ in event["committed"]):
                    break
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202, r.text
    final = wait_for(client, job["id"])
    assert final["status"] == "cancelled" and final["result"] is None
    stored = client.get(f"/v1/jobs/{job['id']}/steps").json()
    assert stored["count"] == final["timings"]["steps_run"] < 3 * 40  # it stopped in the second canvas or soon after
    assert client.get(f"/v1/jobs/{job['id']}/drafts").json()["count"] == 0


@pytest.mark.slow
def test_sigkill_mid_canvas_then_another_worker_completes_it(service, client):
    job = submit(client, kind="generate", prompt="Go:", max_tokens=32, min_tokens=32, steps=24, seed=13)
    deadline = time.monotonic() + 60
    while steps_run(client, job["id"]) < 3:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.02)
    first = service.workers[0]
    service.start_worker()
    service.kill_worker(first)
    killed_at = client.get(f"/v1/jobs/{job['id']}").json()
    assert killed_at["status"] == "running" and killed_at["timings"]["steps_run"] < 2 * 24
    done = wait_for(client, job["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    assert done["timings"]["attempts"] == 2
    steps, view, draft = replay(client, done)
    assert [st.step for st in steps.data] == list(range(done["timings"]["steps_run"]))
    assert view.tokens == draft["token_ids"]
    assert client.get(f"/v1/jobs/{job['id']}/drafts").json()["count"] == 1
