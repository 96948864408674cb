"""/docs (Swagger UI) and /redoc on a host without internet (issue 15): their scripts and styles come from this
origin (the fastapi-offline package at /docs-assets), under a CSP of their own. In headless Chromium with every
request to another origin refused, both pages draw the API's title and its operations with no CSP violation."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from tests.utils.browser import RECORD_VIOLATIONS, watch_errors
from tests.utils.service import running_service


class _Assets(HTMLParser):
    """Every URL a page loads (script src, link href), and the text of its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.urls += [url for name, url in found.items() if name in ("src", "href") and url]
        self._in_script = tag == "script" and "src" not in found

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline.append(data)


@pytest.fixture(scope="module")
def api():
    from redraft.api.main import create_app

    return TestClient(create_app())


@pytest.mark.parametrize(("path", "types"), [("/docs", {"javascript", "css", "png"}),
                                             ("/redoc", {"javascript", "png"})])
def test_the_docs_pages_load_only_assets_from_this_origin(api, path, types):
    page = api.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = _Assets()
    assets.feed(page.text)
    assert assets.urls and all(url.startswith("/") and not url.startswith("//") for url in assets.urls), assets.urls
    served = set()
    for url in assets.urls:
        r = api.get(url)
        assert r.status_code == 200 and len(r.content) > 1000, url
        served |= {kind for kind in ("javascript", "css", "png") if kind in r.headers["content-type"]}
    assert served == types
    assert api.get("/openapi.json").json()["info"]["title"] == "Redraft"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "https:" not in policy and "'unsafe-inline'" not in policy.split(
        "script-src")[1].split(";")[0]
    assert len(re.findall(r"'sha256-[A-Za-z0-9+/=]+'", policy)) == len(assets.inline)  # each inline script, by hash


@pytest.fixture(scope="module")
def service(tiny_model_dir, tmp_path_factory):
    with running_service("sqlite", tiny_model_dir, tmp_path_factory.mktemp("docs"), workers=0) as svc:
        yield svc


# ReDoc's sidebar shows Redocly's logo from its CDN and hides it when it does not load (its onError): the policy
# refuses it before any request is made, and that is the one violation either page may have.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@pytest.mark.slow
@pytest.mark.parametrize(("path", "title", "operation", "refused"), [
    ("/docs", ".swagger-ui .info .title", ".swagger-ui .opblock-summary-path", []),
    ("/redoc", "redoc .api-info h1", "redoc [data-section-id^='operation/']", [f"img-src: {REDOC_LOGO}"]),
])
def test_the_docs_pages_draw_the_api_with_no_internet(browser, service, path, title, operation, refused):
    context = browser.new_context(base_url=service.url)
    outside: list[str] = []

    def offline(route) -> None:  # this origin only: anything else is what a host without internet cannot load
        if route.request.url.startswith(service.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", offline)
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors = watch_errors(page)
    try:
        page.goto(path)
        assert "Redraft" in page.locator(title).first.inner_text()
        page.locator(operation).first.wait_for()
        assert page.locator(operation).count() > 5  # the API's operations, read from /openapi.json
        assert outside == [] and page.evaluate("() => window.cspViolations") == refused
        assert [e for e in errors if not (refused and REDOC_LOGO in e)] == []
    finally:
        context.close()


def test_an_unexpected_failure_is_a_500_in_the_error_shape_with_the_security_headers(caplog):
    """A bug in a route (here one added for the test) answers in the API's one error shape, with the headers
    every answer carries; before, Starlette's plain-text 500 came from outside the middleware that sets them."""
    from redraft.api.main import create_app
    from redraft.api.web import EVERY_RESPONSE

    app = create_app()

    def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/v1/boom", boom)
    client = TestClient(app, raise_server_exceptions=False)
    r = client.get("/v1/boom")
    assert r.status_code == 500
    assert r.json()["code"] == "internal_error" and "a bug" not in r.text  # nothing of the failure leaks
    assert {k.lower(): v for k, v in EVERY_RESPONSE.items()}.items() <= dict(r.headers).items()
    assert any("unhandled RuntimeError" in rec.getMessage() for rec in caplog.records)
