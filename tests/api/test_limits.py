"""The request-size limit (api/limits.py, REDRAFT_MAX_BODY_BYTES): a body of exactly the limit reaches the app
whole, one byte more is a 413 that names the limit, whether the size is declared (refused before a byte is read),
undeclared (chunked) or declared falsely; reads pass untouched. Driven as a plain ASGI app, then through the running
API on both database backends."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.api.limits import BodyLimit
from redraft.settings import Settings
from tests.utils.service import running_service


def drive(
    limit: int,
    chunks: list[bytes],
    method: str = "POST",
    headers: list[tuple[bytes, bytes]] | None = None,
    then_disconnect: bool = False,
    scope_type: str = "http",
) -> dict[str, Any]:
    """Send ``chunks`` through BodyLimit to an app that reads its whole body and answers 200; what happened."""
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    if then_disconnect:
        messages[-1]["more_body"] = True
    seen: dict[str, Any] = {"read": 0, "sent": [], "app": None}

    async def receive() -> dict[str, Any]:
        seen["read"] += 1
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        seen["sent"].append(message)

    async def app(scope, receive, send) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        seen["app"] = body
        seen["after"] = await receive()  # after the body: the client's own next message (a disconnect here)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    scope = {"type": scope_type, "method": method, "headers": headers or [], "path": "/"}
    asyncio.run(BodyLimit(app, limit)(scope, receive, send))
    if seen["sent"]:
        start, body = seen["sent"][0], b"".join(m.get("body", b"") for m in seen["sent"][1:])
        seen["status"], seen["json"] = start["status"], json.loads(body) if start["status"] == 413 else None
    return seen


def refused(seen: dict[str, Any], limit: int) -> bool:
    if seen.get("status") != 413:
        return False
    assert seen["app"] is None
    assert seen["json"] == {
        "detail": f"the request body is over {limit:,} bytes (REDRAFT_MAX_BODY_BYTES); send less "
        "text, or split the document into several jobs",
        "code": "body_too_large",
    }
    return True


chunk_lists = st.lists(st.binary(max_size=40), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(1, 120), chunks=chunk_lists)
def test_an_undeclared_body_reaches_the_app_whole_exactly_when_it_fits(limit, chunks):
    seen = drive(limit, chunks)
    total = sum(map(len, chunks))
    if total <= limit:
        assert seen["status"] == 200 and seen["app"] == b"".join(chunks)
        assert seen["after"] == {"type": "http.disconnect"}  # past the replayed body: the client's own messages
    else:
        assert refused(seen, limit)
        read = sum(len(c) for c in chunks[: seen["read"]])  # never more than the limit and one chunk
        assert read - len(chunks[seen["read"] - 1]) <= limit < read


@settings(max_examples=100, deadline=None)
@given(limit=st.integers(1, 120), extra=st.integers(-3, 3))
def test_at_the_bound_it_is_accepted_and_one_byte_over_it_is_refused(limit, extra):
    size = max(0, limit + extra)
    body = b"x" * size
    declared = [(b"content-length", str(size).encode())]
    for headers in (declared, []):  # declared, or not (chunked)
        seen = drive(limit, [body], headers=headers)
        assert (seen["status"] == 200 and seen["app"] == body) if size <= limit else refused(seen, limit)


@settings(max_examples=100, deadline=None)
@given(limit=st.integers(1, 120), over=st.integers(1, 10**12))
def test_a_declared_size_over_the_limit_is_refused_before_a_byte_is_read(limit, over):
    seen = drive(limit, [b"x"], headers=[(b"content-length", str(limit + over).encode())])
    assert refused(seen, limit) and seen["read"] == 0


@settings(max_examples=100, deadline=None)
@given(limit=st.integers(1, 60), chunks=chunk_lists, declared=st.sampled_from([b"0", b"1", b"nan", b"-5", b"1e9"]))
def test_a_false_or_unreadable_declared_size_does_not_get_a_body_past(limit, chunks, declared):
    """A declared size at or under the limit is not trusted, and one that is not digits is ignored: the body is
    counted as it comes."""
    seen = drive(limit, chunks, headers=[(b"content-length", declared)])
    if sum(map(len, chunks)) <= limit:
        assert seen["status"] == 200 and seen["app"] == b"".join(chunks)
    else:
        assert refused(seen, limit)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_reads_pass_untouched_whatever_they_carry(method):
    body = b"x" * 50
    seen = drive(10, [body[:25], body[25:]], method=method, headers=[(b"content-length", b"50")])
    assert seen["status"] == 200 and seen["app"] == body and seen["read"] == 3  # the app read it itself


def test_a_client_that_leaves_mid_body_gets_nothing_and_the_app_is_never_called():
    seen = drive(100, [b"abc", b"def"], then_disconnect=True)
    assert seen["app"] is None and seen["sent"] == []


def test_other_scopes_pass_untouched():
    async def app(scope, receive, send) -> None:
        seen.append(scope["type"])

    for kind in ("websocket", "lifespan"):
        seen: list[str] = []
        asyncio.run(BodyLimit(app, 1)({"type": kind, "headers": []}, None, None))
        assert seen == [kind]


# ---- through the running API


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request, tiny_model_dir, tmp_path_factory):
    """The API with its default body limit on each backend; no worker (nothing here is accepted)."""
    with running_service(request.param, tiny_model_dir, tmp_path_factory.mktemp(request.param), workers=0) as svc:
        yield svc


LIMIT = Settings.model_fields["max_body_bytes"].default


def body_of(size: int) -> bytes:
    """A JSON job of exactly ``size`` bytes that is refused (422) once it is read: its text has no gap."""
    head, tail = b'{"kind": "infill", "text": "', b'"}'
    return head + b"a" * (size - len(head) - len(tail)) + tail


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/templates", "/openai/v1/chat/completions"])
def test_the_api_reads_a_body_of_exactly_the_limit_and_refuses_one_byte_more(client, path):
    at = client.post(path, content=body_of(LIMIT), headers={"Content-Type": "application/json"})
    assert at.status_code in (400, 422), at.text  # read and answered by the route's own validation
    for chunked in (False, True):
        over = body_of(LIMIT + 1)
        r = client.post(path, content=iter([over]) if chunked else over, headers={"Content-Type": "application/json"})
        assert r.status_code == 413, r.text
        assert r.json() == {
            "detail": f"the request body is over {LIMIT:,} bytes (REDRAFT_MAX_BODY_BYTES); send less "
            "text, or split the document into several jobs",
            "code": "body_too_large",
        }
    assert client.get("/v1/jobs").json()["count"] == 0


def test_an_oversized_body_is_a_413_naming_the_limit_and_writes_nothing(client):
    before = client.get("/v1/jobs").json()["count"]
    big = {"kind": "infill", "text": "word " * 300_000 + "[[gap]]"}  # 1.5 MB
    r = client.post("/v1/jobs", json=big)
    assert r.status_code == 413 and "REDRAFT_MAX_BODY_BYTES" in r.json()["detail"]
    chunked = client.post(
        "/v1/jobs",
        content=iter([json.dumps(big).encode()]),  # no Content-Length
        headers={"Content-Type": "application/json"},
    )
    assert chunked.status_code == 413
    assert client.get("/v1/jobs").json()["count"] == before


NUL_PATHS = ["/v1/templates/%00", "/v1/jobs/%00", "/v1/jobs/a%00b/steps", "/v1/drafts/%00", "/v1/drafts/%00/lineage",
             "/openai/v1/models/%00"]


@pytest.mark.parametrize("path", NUL_PATHS)
def test_a_nul_in_the_path_is_a_404_on_both_databases(client, path):
    r = client.get(path)  # on PostgreSQL the lookup itself was a 500 (text never holds NUL)
    assert r.status_code == 404 and r.json()["code"] == "not_found" and "NUL" in r.json()["detail"], r.text


@settings(max_examples=20, deadline=None)
@given(before=st.text(st.characters(categories=("L", "N")), max_size=6),
       after=st.text(st.characters(categories=("L", "N")), max_size=6))
def test_a_nul_in_a_query_value_is_a_400_naming_it(client, before, after):
    r = client.get(f"/v1/jobs?status={before}%00{after}")
    assert r.status_code == 400 and r.json() == {
        "detail": "a query parameter holds a NUL character (%00): leave it out", "code": "invalid_query"}, r.text
