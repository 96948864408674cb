"""The web pages and security headers (api/web.py) on an app that mounts only them (mount_web): every page is HTML
under the pages' Content-Security-Policy with the ids of its URL escaped, the static files are served and nothing
outside them, SecurityHeaders adds its headers to every answer without overriding a route's own, and docs_page allows
exactly the page's inline scripts by hash. (The pages in Chromium, under the policy: tests/web/.)"""

from __future__ import annotations

import base64
import hashlib
from html.parser import HTMLParser
from urllib.parse import quote

import pytest
from fastapi import FastAPI, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.testclient import TestClient
from hypothesis import example, given, settings
from hypothesis import strategies as st

from redraft.api.web import (
    CONTENT_SECURITY_POLICY,
    DOCS_CONTENT_SECURITY_POLICY,
    EVERY_RESPONSE,
    STATIC_DIR,
    docs_page,
    mount_web,
)

EVERY = {k.lower(): v for k, v in EVERY_RESPONSE.items()}


@pytest.fixture(scope="module")
def web() -> TestClient:
    """The pages, their static files and the security headers, plus three routes of the test's own."""
    app = FastAPI()

    @app.get("/own-frame-rule")
    def own_frame_rule() -> JSONResponse:
        return JSONResponse({"ok": True}, headers={"X-Frame-Options": "SAMEORIGIN"})

    @app.get("/plain")
    def plain() -> dict[str, bool]:
        return {"ok": True}

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text("hello")
        await socket.close()

    mount_web(app)
    return TestClient(app)


def headers_of(r) -> dict[str, str | None]:
    return {k: r.headers.get(k) for k in EVERY}


def test_the_policies_allow_nothing_inline_and_no_other_origin():
    rules = dict(rule.split(" ", 1) for rule in CONTENT_SECURITY_POLICY.split("; "))
    assert rules["default-src"] == "'none'" and rules["frame-ancestors"] == "'none'" and rules["base-uri"] == "'none'"
    assert rules["script-src"] == rules["style-src"] == rules["connect-src"] == "'self'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY and "http" not in CONTENT_SECURITY_POLICY
    docs = dict(rule.split(" ", 1) for rule in DOCS_CONTENT_SECURITY_POLICY)
    assert docs["script-src"] == "'self'" and docs["default-src"] == "'none'" and "http" not in " ".join(docs.values())


@pytest.mark.parametrize(
    ("path", "page"), [("/", "new"), ("/jobs", "jobs"), ("/jobs/j1", "job"), ("/drafts/d1", "draft")]
)
def test_each_page_is_html_under_the_pages_policy(web, path, page):
    r = web.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY and headers_of(r) == EVERY
    assert f'data-page="{page}"' in r.text and '<script src="/static/redraft.js"></script>' in r.text


class _Page(HTMLParser):
    """The <body> element's attributes and the text of <title> and <h1>, entities decoded (as a browser reads them)."""

    def __init__(self) -> None:
        super().__init__()
        self.attrs: dict[str, str | None] = {}
        self.text: dict[str, str] = {"title": "", "h1": ""}
        self.tags: list[str] = []  # every start tag, in order
        self._in: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self.attrs = dict(attrs)
        self.tags.append(tag)
        self._in.append(tag)

    def handle_endtag(self, tag: str) -> None:
        while self._in and self._in.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        for tag in self.text:
            if tag in self._in:
                self.text[tag] += data


ids = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=24).filter(
    lambda s: "/" not in s and s not in (".", "..")
)


@settings(max_examples=60, deadline=None)
@given(page=st.sampled_from(["jobs", "drafts"]), some_id=ids)
@example(page="jobs", some_id="<")  # a random draw: the old check ("<" not in the page) could not hold for it
@example(page="drafts", some_id='<b onmouseover="x">hi<i>')  # no "/": a path segment
def test_the_id_in_the_url_is_escaped_wherever_the_page_shows_it(web, page, some_id):
    r = web.get(f"/{page}/{quote(some_id, safe='')}")
    assert r.status_code == 200, r.text
    attribute = "data-job-id" if page == "jobs" else "data-draft-id"
    parsed = _Page()
    parsed.feed(r.text)
    assert parsed.attrs[attribute] == some_id  # what the script reads is the id, exactly
    assert parsed.text["title"].startswith(f"{'Job' if page == 'jobs' else 'Draft'} {some_id} ")
    if page == "drafts":
        assert parsed.text["h1"] == f"Draft {some_id}"
    # markup in the id never reaches the page as markup: the page has the same elements as with a plain id (a
    # check of the raw text would fail for an id of "<" alone, which every page holds)
    plain = _Page()
    plain.feed(web.get(f"/{page}/x").text)
    assert parsed.tags == plain.tags


@pytest.mark.parametrize(("name", "kind"), [("redraft.js", "javascript"), ("redraft.css", "text/css")])
def test_the_static_files_are_served_as_what_they_are(web, name, kind):
    r = web.get(f"/static/{name}")
    assert r.status_code == 200 and kind in r.headers["content-type"] and headers_of(r) == EVERY
    assert r.content == (STATIC_DIR / name).read_bytes()
    assert "content-security-policy" not in r.headers


@pytest.mark.parametrize(
    "path", ["/static/../web.py", "/static/%2e%2e/web.py", "/static/..%2fweb.py", "/static/nope.js", "/static/"]
)
def test_nothing_outside_the_static_folder_is_served(web, path):
    r = web.get(path)
    assert r.status_code == 404 and headers_of(r) == EVERY
    assert "from __future__" not in r.text


def test_every_answer_gets_the_headers_and_a_routes_own_value_wins(web):
    for r in (web.get("/plain"), web.get("/no/such/page"), web.post("/jobs")):  # 200, 404, 405
        assert headers_of(r) == EVERY, r.status_code
    own = web.get("/own-frame-rule")
    assert own.headers["x-frame-options"] == "SAMEORIGIN"  # set by the route: kept, not doubled
    assert own.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
    assert {k: own.headers[k] for k in EVERY if k != "x-frame-options"} == {
        k: v for k, v in EVERY.items() if k != "x-frame-options"
    }


def test_a_websocket_passes_the_headers_middleware_untouched(web):
    with web.websocket_connect("/ws") as socket:
        assert socket.receive_text() == "hello"


scripts = st.lists(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=30).filter(
        lambda js: "</script>" not in js and "<script>" not in js
    ),
    max_size=4,
)


@settings(max_examples=100, deadline=None)
@given(inline=scripts)
def test_docs_page_allows_exactly_the_pages_inline_scripts_by_hash(inline):
    body = '<html><script src="/docs-assets/x.js"></script>' + "".join(f"<script>{js}</script>" for js in inline)
    page = docs_page(HTMLResponse(body + "</html>"))
    rules = page.headers["content-security-policy"].split("; ")
    assert len(rules) == len(DOCS_CONTENT_SECURITY_POLICY)
    for rule, base in zip(rules, DOCS_CONTENT_SECURITY_POLICY):
        if not base.startswith("script-src"):
            assert rule == base
            continue
        hashes = rule.removeprefix(base).split()
        assert hashes == [
            f"'sha256-{base64.b64encode(hashlib.sha256(js.encode()).digest()).decode()}'" for js in inline
        ]
    assert bytes(page.body).decode() == body + "</html>"  # the page itself is unchanged
