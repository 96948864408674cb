"""The web canvas for a uniform-noise model (DiffusionGemma) in headless Chromium: undecided positions are
shown as blanks, never as the random tokens the model reads; accepted tokens appear, may be renoised back to
blanks and written again; the replay ends on the job's text. Same browser setup as test_page.py."""

from __future__ import annotations

import pytest

from tests.utils.service import running_service, wait_for
from tests.web.test_page import masked_in_dom, page, scrub  # noqa: F401  (the page fixture and helpers)

pytestmark = pytest.mark.slow

TEXT = "Dear team, the report on [[gap:12]] is ready. Please [[gap:6]] by Friday."


@pytest.fixture(scope="module")
def service(tiny_diffusion_gemma_dir, tmp_path_factory):
    with running_service("sqlite", tiny_diffusion_gemma_dir, tmp_path_factory.mktemp("web-dg"),
                         REDRAFT_MODELS=f'{{"tiny-dg": "{tiny_diffusion_gemma_dir}"}}',
                         REDRAFT_DEFAULT_MODEL="tiny-dg") as svc:
        yield svc


def test_a_diffusion_gemma_canvas_shows_undecided_positions_as_blanks(page, service):  # noqa: F811
    key = service.new_key("acme")
    page.goto("/")
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#model option[value='tiny-dg']", state="attached")
    page.fill("#infill-text", TEXT)
    page.fill("#seed", "3")
    page.select_option("#pace", "0")
    page.click("#submit")
    page.wait_for_function("() => window.redraft.done")
    trace = page.evaluate("() => window.redraft")
    assert trace["status"] == "succeeded" and trace["free"] == 18
    with service.client(key) as client:
        job = wait_for(client, trace["jobId"])
        steps = client.get(f"/v1/jobs/{trace['jobId']}/steps").json()
    assert job["params"]["t_max"] is not None  # the model's own schedule, not the page's
    history = trace["maskedAfterStep"]
    assert len(history) == steps["count"] and history[-1] == 0
    # Acceptance is re-decided every step: some step sends accepted tokens back to blanks.
    assert any(s["remasked"] for s in steps["data"]), "a uniform-noise run re-decides accepted tokens"
    assert page.locator("#final-text").inner_text() == job["result"]["text"]
    # The start canvas is all blanks (noise is never shown), the end is the job's text.
    scrub(page, 0)
    assert masked_in_dom(page) == 18 and page.locator("#canvas .tok.written").count() == 0
    for k in range(1, steps["count"] + 1):
        scrub(page, k)
        assert masked_in_dom(page) == history[k - 1]
    assert masked_in_dom(page) == 0
