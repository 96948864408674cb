"""redraft.client against the running service (real API, worker, Redis, SQLite): sync and async."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from redraft.api.schemas import DiffPublic, DraftPublic, JobPublic, StepPublic, StepsPublic
from redraft.client import (
    AsyncClient,
    CanvasReplay,
    Client,
    JobFailed,
    RedraftAPIError,
    RedraftConnectionError,
    WaitTimeout,
)
from redraft.embedded import free_port

TEXT = "Dear team, the [[gap:4]] is ready. Please [[gap]] by Friday."
EXPECTED = "Dear team, the {} is ready. Please {} by Friday."
LONG = "[[gap:100]] and [[gap:100]]"  # 200 positions, 200 steps: still going when the test acts on it


def apply_diff(old: str, diff: DiffPublic) -> str:
    return "".join(old[op.a[0]:op.a[1]] if op.op == "equal" else op.new for op in diff.ops)


def test_infill_wait_events_steps_and_drafts(rd):
    queued = rd.infill(TEXT, steps=8, seed=1, temperature=0.8)
    assert isinstance(queued, JobPublic) and queued.status == "queued" and queued.kind == "infill"
    events = list(rd.events(queued.id))  # streams live, then ends at `done`
    done = rd.wait(queued.id, timeout=120)
    assert done.status == "succeeded" and done.result is not None
    assert done.result.text == EXPECTED.format(*done.result.gaps)
    assert [e.event for e in events] == ["step"] * done.timings.steps_run + ["done"]
    assert all(isinstance(e.data, StepPublic) for e in events[:-1])
    assert [e.data.step for e in events[:-1]] == list(range(done.timings.steps_run))
    assert isinstance(events[-1].data, JobPublic) and events[-1].data.result.text == done.result.text

    steps = rd.steps(done.id)
    assert isinstance(steps, StepsPublic) and steps.count == done.timings.steps_run
    replay = CanvasReplay(steps)
    assert replay.masks_left == replay.total > 0 and "_" in replay.render()
    for event in events[:-1]:
        replay.apply(event.data)
    assert replay.masks_left == 0 and "_" not in replay.render()
    assert "Dear team, the" in replay.render() and "by Friday." in replay.render()

    drafts = rd.drafts(done.id)
    assert drafts.count == 1 and drafts.data[0].id == done.result.draft_id
    assert replay.tokens == drafts.data[0].token_ids
    draft = rd.draft(done.result.draft_id)
    assert isinstance(draft, DraftPublic) and draft.text == done.result.text and draft.version == 1


def test_events_of_a_finished_job_replay_its_steps(rd):
    done = rd.infill(TEXT, steps=6, seed=2, wait=True)
    events = list(rd.events(done.id))
    assert [e.event for e in events] == ["step"] * done.timings.steps_run + ["done"]
    assert events[-1].terminal and events[-1].data.status == "succeeded"


def test_revise_diff_and_lineage(rd):
    first = rd.infill(TEXT, steps=8, seed=2, wait=True)
    text = first.result.text
    start = text.index(" is ready")
    end = start + len(" is ready")
    done = rd.revise(draft_id=first.result.draft_id, spans=[{"start": start, "end": end, "max_tokens": 4}],
                     steps=8, seed=5, wait=True)
    assert done.status == "succeeded" and done.result.parent_draft_id == first.result.draft_id
    (edit,) = done.result.edits
    assert done.result.text == text[:start] + edit["new"] + text[end:]
    diff = rd.diff(done.result.draft_id, against=first.result.draft_id)
    assert diff.against == first.result.draft_id and apply_diff(text, diff) == done.result.text
    lineage = rd.lineage(done.result.draft_id)
    assert [d.id for d in lineage.ancestors] == [first.result.draft_id] and lineage.descendants == []
    assert [d.id for d in rd.lineage(first.result.draft_id).descendants] == [done.result.draft_id]

    imported = rd.revise(text="Is it ready? No, it is not.", spans=[{"start": 13, "end": 15}], steps=4, wait=True)
    assert [d.version for d in rd.drafts(imported.id).data] == [1, 2]


def test_generate_templates_models_and_jobs(rd):
    assert [m.name for m in rd.models().data] == ["tiny-random"]
    saved = rd.save_template("yesno", 'Q: {{ q }}\nA: {{ slot("a", max_tokens=2, choices=["Yes", "No"]) }}',
                             description="a yes/no answer")
    assert saved.name == "yesno" and rd.template("yesno").description == "a yes/no answer"
    assert "yesno" in [t.name for t in rd.templates().data]
    done = rd.generate(template_name="yesno", variables={"q": "Is the sky blue?"}, steps=4, wait=True)
    assert done.result.text in ("Q: Is the sky blue?\nA: Yes", "Q: Is the sky blue?\nA: No")
    answer = rd.generate(prompt="Code: ", target={"regex": "[A-Z]{2}[0-9]{2}"}, max_tokens=6, steps=6, wait=True)
    assert answer.result.text == "Code: " + answer.result.slots["answer"]
    page = rd.jobs(limit=2)
    assert [j.id for j in page.data] == [answer.id, done.id] and page.count >= 2
    assert rd.jobs(limit=1, offset=1).data[0].id == done.id


def test_bad_input_raises_the_apis_message(service, key, rd):
    body = {"kind": "infill", "text": "no gaps here"}
    raw = httpx.post(f"{service.url}/v1/jobs", json=body, headers={"Authorization": f"Bearer {key}"})
    assert raw.status_code == 422
    with pytest.raises(RedraftAPIError) as info:
        rd.submit(body)
    err = info.value
    assert (err.status_code, err.code, err.message) == (422, raw.json()["code"], raw.json()["detail"])
    assert err.is_client_error and "no gap" in str(err)
    with pytest.raises(RedraftAPIError, match="exactly one of") as info:
        rd.revise(draft_id="x", text="y", spans=[{"start": 0, "end": 1}])
    assert info.value.code == "invalid_request"
    with pytest.raises(RedraftAPIError) as info:
        rd.job("no-such-job")
    assert (info.value.status_code, info.value.code) == (404, "not_found")
    with pytest.raises(RedraftAPIError) as info:
        list(rd.events("no-such-job"))
    assert info.value.status_code == 404
    with Client(service.url, "wrong-key") as other, pytest.raises(RedraftAPIError, match="unknown or revoked") as info:
        other.jobs()
    assert info.value.status_code == 401


def test_failed_job_raises_job_failed(rd):
    job = rd.infill("Tell me about [[gap:4]].", steps=4, safety={"avoid": ["violence"]})
    with pytest.raises(JobFailed) as info:
        rd.wait(job.id, timeout=120)
    assert info.value.code == "model_error" and "redraft-test-scorer" in info.value.message
    assert info.value.job.status == "failed" and job.id in str(info.value)
    failed = rd.wait(job.id, raise_on_failure=False)
    assert failed.status == "failed" and failed.error.code == "model_error"
    events = list(rd.events(job.id))
    assert events[-1].event == "failed" and events[-1].data.error.code == "model_error"


def test_wait_timeout_then_cancel(rd):
    job = rd.infill(LONG, steps=200)
    with pytest.raises(WaitTimeout) as info:
        rd.wait(job.id, timeout=0)
    assert info.value.job.status in ("queued", "running") and isinstance(info.value, TimeoutError)
    assert rd.cancel(job.id).id == job.id
    final = rd.wait(job.id, timeout=120)  # cancelled is not a failure
    assert final.status == "cancelled" and final.timings.steps_run < 200
    with pytest.raises(RedraftAPIError) as info:
        rd.cancel(job.id)
    assert (info.value.status_code, info.value.code) == (409, "conflict") and "already cancelled" in info.value.message


def test_url_and_key_from_the_environment(service, key, monkeypatch):
    monkeypatch.setenv("REDRAFT_URL", service.url + "/")
    monkeypatch.setenv("REDRAFT_API_KEY", key)
    with Client() as client:
        assert client.url == service.url and client.models().count == 1


def test_connection_failure_names_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, "k", timeout=5) as client, pytest.raises(RedraftConnectionError) as info:
        client.jobs()
    assert url in str(info.value) and info.value.url == f"{url}/v1/jobs"
    with pytest.raises(ValueError, match="http://"):
        Client("localhost:8000")


def test_async_client_end_to_end(service, key):
    async def main() -> None:
        async with AsyncClient(service.url, key) as rd:
            queued = await rd.infill(TEXT, steps=6, seed=7)
            events = [e async for e in rd.events(queued.id)]
            done = await rd.wait(queued.id, timeout=120)
            assert done.status == "succeeded" and done.result.text == EXPECTED.format(*done.result.gaps)
            assert [e.event for e in events] == ["step"] * done.timings.steps_run + ["done"]
            steps = await rd.steps(done.id)
            replay = CanvasReplay(steps)
            for event in events[:-1]:
                replay.apply(event.data)
            assert replay.masks_left == 0
            (draft,) = (await rd.drafts(done.id)).data
            assert replay.tokens == draft.token_ids and (await rd.draft(draft.id)).text == done.result.text

            start = done.result.text.index("Friday")
            revised = await rd.revise(draft.id, spans=[{"start": start, "end": start + 6}], steps=4, wait=True)
            diff = await rd.diff(revised.result.draft_id, draft.id)
            assert apply_diff(done.result.text, diff) == revised.result.text
            assert [d.id for d in (await rd.lineage(revised.result.draft_id)).ancestors] == [draft.id]
            assert (await rd.jobs(limit=1)).data[0].id == revised.id

            with pytest.raises(RedraftAPIError) as info:
                await rd.submit({"kind": "infill", "text": "x [[gap]]", "steps": 0})
            assert info.value.status_code == 422 and "steps must be between" in info.value.message

            failing = await rd.infill("About [[gap:3]].", steps=4, safety={"avoid": ["weapons"]})
            with pytest.raises(JobFailed) as failed:
                await rd.wait(failing.id, timeout=120)
            assert failed.value.code == "model_error"

            long = await rd.infill(LONG, steps=200)
            with pytest.raises(WaitTimeout):
                await rd.wait(long.id, timeout=0)
            await rd.cancel(long.id)
            assert (await rd.wait(long.id, timeout=120)).status == "cancelled"
            assert (await rd.models()).data[0].name == "tiny-random"

    asyncio.run(main())
