"""The "watch it denoise" page end to end in headless Chromium: the real API and a real Celery worker,
a key typed into the page, an infill job submitted from its form, the canvas filling in live from the
SSE stream, the replay scrubber, the drafts view with its diff, and the job list (Chromium: tests/utils/browser.py).
"""

from __future__ import annotations

import time

import pytest

from redraft.settings import REPO_ROOT
from tests.utils.browser import watch_errors
from tests.utils.service import running_service, wait_for

pytestmark = pytest.mark.slow

ARTIFACTS = REPO_ROOT / "var" / "artifacts"
# A 16-token gap and 24 steps asked for: the sampler runs at most one step per masked position, so each
# step commits about one token and every in-between state is shown.
TEXT = "Dear team, the report on [[gap:16]] is ready for review by Friday."
STEPS = 24


@pytest.fixture(scope="module")
def service(tiny_model_dir, tmp_path_factory):
    with running_service("sqlite", tiny_model_dir, tmp_path_factory.mktemp("web")) as svc:
        yield svc


@pytest.fixture
def page(browser, service):
    context = browser.new_context(viewport={"width": 1100, "height": 900}, base_url=service.url)
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    errors = watch_errors(pg)
    yield pg
    context.close()
    assert not errors, errors


def masked_in_dom(page) -> int:
    return page.locator("#canvas .tok.mask").count()


def text_without(locator, tag: str) -> str:
    script = ("(e, tag) => { const c = e.cloneNode(true); c.querySelectorAll(tag).forEach(x => x.remove()); "
              "return c.textContent; }")
    return locator.evaluate(script, tag)


def scrub(page, value: int) -> None:
    page.locator("#scrubber").fill(str(value))
    page.wait_for_function("v => window.redraft.replayStep === v", arg=value)


def test_watch_an_infill_job_denoise_then_replay_it(page, service):
    key = service.new_key("acme")
    page.goto("/")
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#model option[value='tiny-random']", state="attached")  # /v1/models answered
    # The key lives in this tab's sessionStorage only.
    assert page.evaluate("() => sessionStorage.getItem('redraft.apiKey')") == key
    assert page.evaluate("() => [localStorage.length, document.cookie]") == [0, ""]

    page.fill("#infill-text", TEXT)
    page.fill("#steps", str(STEPS))
    page.fill("#seed", "7")
    page.select_option("#pace", "120")  # slow motion: the screenshot below catches the canvas half-written
    started = time.monotonic()
    page.click("#submit")

    # Live: the canvas fills in step by step from the SSE stream.
    page.wait_for_function("() => { const r = window.redraft; return r.stepEvents > 0 && r.maskedNow > 0 "
                           "&& r.maskedNow <= r.free / 2; }")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "live-canvas.png"
    page.locator("#job-view").screenshot(path=str(shot), animations="disabled")
    assert shot.stat().st_size > 5_000
    blanks, written = masked_in_dom(page), page.locator("#canvas .tok.written").count()
    assert blanks > 0 and written > 0, "the live canvas should show some blanks and some tokens"
    assert page.locator("#canvas .tok.fixed").count() > 0  # the clamped text, styled apart from model text

    page.wait_for_function("() => window.redraft.done")
    trace = page.evaluate("() => window.redraft")
    job_id, free = trace["jobId"], trace["free"]
    assert trace["status"] == "succeeded"
    assert trace["openedWhile"] in ("queued", "running"), "the page should follow the stream before the job ends"
    assert free == 16  # the gap's positions

    with service.client(key) as client:
        job = wait_for(client, job_id)
        steps = client.get(f"/v1/jobs/{job_id}/steps").json()
    assert job["status"] == "succeeded" and job["params"]["steps"] == STEPS
    assert len(steps["canvas_text"]) == len(steps["canvas"])
    assert "".join(t for t, f in zip(steps["canvas_text"], steps["fixed"]) if f).count("Dear team, the report on") == 1

    # Every step was applied on its own; at some moment the canvas was partly filled; it ends full.
    history = trace["maskedAfterStep"]
    assert len(history) == steps["count"] == trace["stepEvents"]
    assert any(0 < m < free for m in history), history
    assert history[-1] == 0
    assert history == sorted(history, reverse=True)  # no self-correction asked for: nothing is re-masked

    # The page shows the job's result text, and every hover title carries a confidence.
    assert page.locator("#final-text").inner_text() == job["result"]["text"] == trace["finalText"]
    assert masked_in_dom(page) == 0
    shown = page.locator("#canvas .tok:not(.special):not(.empty)").evaluate_all(
        "els => els.map(e => e.textContent).join('')")
    if "\ufffd" not in shown:  # a byte token decoded alone is half a character; the draft text has it whole
        assert shown == job["result"]["text"]
    titles = page.locator("#canvas .tok.written").evaluate_all("els => els.map(e => e.title)")
    assert len(titles) == free and all("confidence 0." in t or "confidence 1." in t for t in titles)

    # Replay: step 0 is the start canvas (all blanks), the last step is the final canvas.
    assert page.get_attribute("#scrubber", "max") == str(steps["count"])
    scrub(page, 0)
    assert masked_in_dom(page) == free and page.locator("#canvas .tok.written").count() == 0
    middle = steps["count"] // 2
    scrub(page, middle)
    assert masked_in_dom(page) == history[middle - 1]
    scrub(page, steps["count"])
    assert masked_in_dom(page) == 0 and page.locator("#canvas .tok.written").count() == free

    # The drafts view: version 1, then a revision from the form, shown as a character diff.
    assert page.locator("#draft-list li").count() == 1
    page.click("#draft-list li a:has-text('revise it')")
    page.wait_for_selector("#revise-draft")
    assert page.input_value("#revise-draft") == job["result"]["draft_id"]
    page.fill("#revise-spans", "15-24")
    page.select_option("#revise-auto", "")
    page.select_option("#pace", "0")
    page.click("#submit")
    page.wait_for_function("v => window.redraft.done && window.redraft.jobId !== v", arg=job_id)
    assert page.evaluate("() => window.redraft.status") == "succeeded"
    revised = page.evaluate("() => window.redraft.finalText")
    assert page.locator("#draft-list li").count() == 1
    diff = page.locator("#draft-list li pre.diff")
    # The diff reads as the new text without the deletions, and as the old text without the insertions.
    assert text_without(diff, "del") == revised and text_without(diff, "ins") == job["result"]["text"]
    assert revised[:15] == job["result"]["text"][:15]  # only the span was rewritten

    # The job list shows both jobs with status and timings, each linking to its page.
    page.goto("/jobs")
    row = page.locator(f"#jobs tr[data-job-id='{job_id}']")
    row.wait_for()
    assert page.locator("#jobs tbody tr").count() == 2
    assert row.locator(".status").inner_text() == "succeeded"
    assert row.locator("td").nth(7).inner_text() == str(steps["count"])
    row.locator("a").click()

    # A finished job's page opens on its last step, with the scrubber and its draft.
    page.wait_for_function("() => window.redraft.done")
    assert page.url.endswith(f"/jobs/{job_id}")
    assert masked_in_dom(page) == 0 and page.locator("#final-text").inner_text() == job["result"]["text"]
    assert page.locator("#job-meta").inner_text().count("succeeded") == 1
    scrub(page, 0)
    assert masked_in_dom(page) == free
    print(f"web test: stream opened while the job was {trace['openedWhile']}; {steps['count']} steps, masked after "
          f"each: {history}; took {time.monotonic() - started:.1f}s")


def test_pages_are_static_shells_and_assets_are_local(service):
    import httpx

    with httpx.Client(base_url=service.url) as client:
        for path in ("/", "/jobs", "/jobs/some-id", "/drafts/some-id"):
            r = client.get(path)  # no key: the page asks for it, the JSON API checks it
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
            assert "http://" not in r.text and "https://" not in r.text, f"{path} loads something from elsewhere"
        for asset in ("/static/redraft.js", "/static/redraft.css"):
            assert client.get(asset).status_code == 200
        assert client.get("/v1/jobs").status_code == 401
        assert "<script>" not in client.get("/jobs/%3Cscript%3E").text  # ids are escaped into the shell
