"""Security headers (api/web.py): a Content-Security-Policy the pages really work under, X-Frame-Options,
Referrer-Policy, and nosniff on every response, JSON included. The pages are loaded in headless Chromium (as in
test_page.py) with every CSP violation recorded: none on the pages themselves, and one for a script injected
inline, so a violation does show up where the page tests listen (console errors)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from redraft.api.web import CONTENT_SECURITY_POLICY, STATIC_DIR, TEMPLATES
from redraft.storage import repo
from redraft.storage.db import session_scope
from tests.utils.browser import RECORD_VIOLATIONS, watch_errors
from tests.utils.service import running_service

PAGE_HEADERS = {"content-security-policy": CONTENT_SECURITY_POLICY, "x-frame-options": "DENY",
                "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


@pytest.fixture(scope="module")
def api():
    from redraft.api.main import create_app

    return TestClient(create_app())


def test_pages_get_the_policy_and_every_response_gets_nosniff(api):
    for path in ("/", "/jobs", "/jobs/some-id", "/drafts/some-id"):
        r = api.get(path)
        assert r.status_code == 200 and {k: r.headers.get(k) for k in PAGE_HEADERS} == PAGE_HEADERS, path
    for path, status in (("/static/redraft.js", 200), ("/static/redraft.css", 200), ("/healthz", 200),
                         ("/v1/jobs", 401), ("/no/such/page", 404)):
        r = api.get(path)
        assert r.status_code == status and r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["x-frame-options"] == "DENY" and "content-security-policy" not in r.headers, path
    big = api.post("/v1/jobs", content=b"x" * (api.app.state.settings.max_body_bytes + 1))
    assert big.status_code == 413 and big.headers["x-content-type-options"] == "nosniff"  # the body limit's own answer


class _InlineFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.found.append("<script> without src")
        if tag == "style":
            self.found.append("<style>")
        self.found += [f"{tag} {name}=" for name in names if name == "style" or name.startswith("on")]


def test_templates_and_script_have_nothing_the_policy_refuses():
    for name in TEMPLATES.env.list_templates():
        finder = _InlineFinder()
        finder.feed(TEMPLATES.env.loader.get_source(TEMPLATES.env, name)[0])
        assert not finder.found, f"{name}: {finder.found} (move it to api/static/)"
    source = (STATIC_DIR / "redraft.js").read_text()
    assert not re.search(r"\beval\(|new Function\(|setAttribute\(\s*['\"](style|on)", source)


@pytest.fixture(scope="module")
def service(tiny_model_dir, tmp_path_factory):
    with running_service("sqlite", tiny_model_dir, tmp_path_factory.mktemp("csp"), workers=0) as svc:
        yield svc


@pytest.mark.slow
def test_the_pages_work_under_the_policy_and_a_violation_is_seen(browser, service):
    key = service.new_key("acme")
    with session_scope() as s:  # a finished job's draft with confidences: the draft page shades them (CSSOM styles)
        tenant = repo.tenant_for_key(s, key)
        job = repo.create_job(s, tenant_id=tenant.id, kind="infill", model="tiny-random", request={"text": "x"},
                              params={}, canvas={})
        draft = repo.finish_job(s, job.id, text="Hello brave world.", token_ids=[1], result_extra={}, steps_run=1,
                                layout={"written": [[6, 11, 0.3], [12, 17, 0.9]], "slots": []})
        job_id, draft_id = job.id, draft.id
    context = browser.new_context(base_url=service.url)
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(30_000)
    console = watch_errors(page, responses=False)
    try:
        page.goto("/")
        page.fill("#api-key", key)
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#model option[value='tiny-random']", state="attached")
        page.goto("/jobs")
        page.wait_for_selector(f"#jobs tr[data-job-id='{job_id}']")
        page.goto(f"/drafts/{draft_id}")
        page.wait_for_selector("#draft-text span.conf")
        shades = page.locator("#draft-text span.conf").evaluate_all("els => els.map(e => e.style.background)")
        assert len(shades) == 2 and all(shade.startswith("rgb") for shade in shades)  # the styles were applied
        assert page.evaluate("() => window.cspViolations") == [] and console == []

        page.evaluate("() => { const s = document.createElement('script'); s.textContent = 'window.ran = 1';"
                      " document.body.append(s); }")
        page.wait_for_function("() => window.cspViolations.length > 0")
        assert page.evaluate("() => window.ran") is None
        assert page.evaluate("() => window.cspViolations") == ["script-src-elem: inline"]
        for _ in range(100):  # the console message arrives on its own schedule
            if any("Content Security Policy" in text for text in console):
                break
            page.wait_for_timeout(50)
        assert any("Content Security Policy" in text for text in console), console
    finally:
        context.close()
