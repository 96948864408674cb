"""The API key dependency (api/deps.py): each way of getting the Authorization header wrong is a 401 with its own
message and a WWW-Authenticate challenge; the scheme is case-insensitive; a revoked key stops working at once; a
key is its tenant's, whichever of the tenant's keys it is; and the OpenAPI document declares the bearer scheme."""

from __future__ import annotations

import uuid

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.storage import repo
from tests.utils.service import running_service


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request, tiny_model_dir, tmp_path_factory):
    """The API on each backend, without a worker (nothing here runs a job)."""
    with running_service(request.param, tiny_model_dir, tmp_path_factory.mktemp(request.param), workers=0) as svc:
        yield svc


@pytest.fixture(scope="module")
def anon(service):
    """A client that sends only the Authorization header each request gives."""
    with service.client(None) as c:
        yield c


def listing(anon: httpx.Client, authorization: str | None) -> httpx.Response:
    return anon.get("/v1/templates", headers={} if authorization is None else {"Authorization": authorization})


def assert_401(r: httpx.Response, says: str) -> None:
    assert r.status_code == 401, r.text
    assert r.json()["code"] == "unauthorized" and says in r.json()["detail"], r.json()
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers,match",
    [
        ({}, "missing API key"),
        ({"Authorization": "Bearer nope"}, "unknown"),
        ({"Authorization": "Token x"}, "malformed"),
    ],
)
def test_auth_is_required(service, headers, match):
    r = httpx.get(f"{service.url}/v1/jobs", headers=headers)
    assert r.status_code == 401 and match in r.json()["detail"]


@pytest.mark.parametrize(
    ("authorization", "says"),
    [
        (None, "missing API key: send `Authorization: Bearer <key>`"),
        ("", "missing API key"),
        ("Bearer", "malformed Authorization header: expected `Authorization: Bearer <key>`"),
        ("Basic dXNlcjpwYXNz", "malformed"),
        ("Bearer rdk_not-a-key", "unknown or revoked API key; create one with `redraft keys create --tenant NAME`"),
    ],
)
def test_each_way_of_getting_the_header_wrong_has_its_own_401(anon, authorization, says):
    assert_401(listing(anon, authorization), says)


@settings(max_examples=15, deadline=None)
@given(scheme=st.text(alphabet="bearBEARxX-", min_size=1, max_size=8), pad=st.sampled_from(["", " ", "   "]))
def test_the_scheme_is_bearer_in_any_case_and_nothing_else(anon, key, scheme, pad):
    r = listing(anon, f"{scheme} {pad}{key}")
    if scheme.lower() == "bearer":
        assert r.status_code == 200, r.text
    else:
        assert_401(r, "malformed Authorization header")


@settings(max_examples=15, deadline=None)
@given(guess=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=60))
def test_any_other_key_is_unknown(anon, key, guess):
    if guess == key:
        return
    assert_401(listing(anon, f"Bearer {guess}"), "unknown or revoked API key")


def test_a_key_is_its_tenants_and_a_revoked_key_stops_at_once(service, anon):
    from redraft.storage.db import session_scope

    tenant = f"deps-{uuid.uuid4().hex[:8]}"
    first, second, stranger = service.new_key(tenant), service.new_key(tenant), service.new_key(f"{tenant}-other")
    saved = anon.post(
        "/v1/templates",
        headers={"Authorization": f"Bearer {first}"},
        json={"name": "mine", "source": "{{ slot('a') }}"},
    )
    assert saved.status_code == 201, saved.text
    assert [t["name"] for t in listing(anon, f"Bearer {second}").json()["data"]] == ["mine"]  # the same tenant
    assert listing(anon, f"Bearer {stranger}").json() == {"data": [], "count": 0}
    with session_scope() as s:
        assert repo.revoke_api_key(s, first)[1]
    assert_401(listing(anon, f"Bearer {first}"), "unknown or revoked API key")
    assert listing(anon, f"Bearer {second}").status_code == 200  # the tenant's other key still works


def test_the_openapi_document_declares_the_bearer_scheme_on_every_authenticated_route(anon):
    doc = anon.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "an API key from `redraft keys create --tenant NAME`",
    }
    secured = {
        (method, path)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if op.get("security") == [{"HTTPBearer": []}]
    }
    assert ("get", "/v1/jobs") in secured and ("post", "/v1/templates") in secured and ("get", "/v1/models") in secured
    assert ("get", "/healthz") not in secured and ("get", "/readyz") not in secured
    for path, ops in doc["paths"].items():  # the header itself is read by the dependency, never a parameter
        for op in ops.values():
            assert all(p["name"].lower() != "authorization" for p in op.get("parameters", [])), path
