"""/v1/templates (api/routes/templates.py): save, replace, list and read a tenant's templates; every bad input is
a 4xx that says what was wrong and saves nothing, never a 500; tenants never see each other's templates. Through
the running API on both database backends."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.utils.service import running_service

SOURCE = 'Dear {{ who }}, {{ slot("reply", max_tokens=4) }}'


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request, tiny_model_dir, tmp_path_factory):
    """The API on each backend, without a worker (saving a template runs nothing)."""
    with running_service(request.param, tiny_model_dir, tmp_path_factory.mktemp(request.param), workers=0) as svc:
        yield svc


@pytest.fixture
def fresh(service):
    """A client of a tenant of its own (no templates yet)."""
    with service.client(service.new_key(f"tpl-{uuid.uuid4().hex[:8]}")) as c:
        yield c


def names(client) -> list[str]:
    listing = client.get("/v1/templates").json()
    assert listing["count"] == len(listing["data"])
    return [t["name"] for t in listing["data"]]


def test_a_template_nested_thousands_deep_is_refused_on_save(client):
    r = client.post(
        "/v1/templates", json={"name": "deep", "source": "{% if 1 %}" * 3000 + "{{ slot('x') }}" + "{% endif %}" * 3000}
    )
    assert r.status_code == 422 and "nested too deeply" in r.json()["detail"]


def test_a_template_with_a_nul_is_refused_and_not_saved(client):
    r = client.post("/v1/templates", json={"name": "nul", "source": "a\u0000{{ slot('x') }}"})
    assert r.status_code == 422 and "NUL character" in r.json()["detail"]
    assert all(t["name"] != "nul" for t in client.get("/v1/templates").json()["data"])


def test_save_then_read_then_replace(fresh):
    r = fresh.post("/v1/templates", json={"name": "letter", "source": SOURCE, "description": "a reply"})
    assert r.status_code == 201, r.text
    saved = r.json()
    assert set(saved) == {"name", "source", "description", "created_at", "updated_at"}
    assert (saved["name"], saved["source"], saved["description"]) == ("letter", SOURCE, "a reply")
    assert fresh.get("/v1/templates/letter").json() == saved
    again = fresh.post("/v1/templates", json={"name": "letter", "source": SOURCE + "!"})  # saving again replaces it
    assert again.status_code == 201, again.text
    replaced = again.json()
    assert replaced["source"] == SOURCE + "!" and replaced["description"] is None
    assert replaced["created_at"] == saved["created_at"]
    assert datetime.fromisoformat(replaced["updated_at"]) >= datetime.fromisoformat(saved["updated_at"])
    assert fresh.get("/v1/templates/letter").json() == replaced and names(fresh) == ["letter"]


def test_the_list_is_by_name_and_per_tenant(service, fresh):
    for name in ("zeta", "Alpha", "mid.dle", "a-b_c"):
        assert fresh.post("/v1/templates", json={"name": name, "source": SOURCE}).status_code == 201
    assert names(fresh) == sorted(["zeta", "Alpha", "mid.dle", "a-b_c"])
    with service.client(service.new_key(f"tpl-other-{uuid.uuid4().hex[:8]}")) as other:
        assert names(other) == []
        r = other.get("/v1/templates/zeta")
        assert r.status_code == 404 and r.json()["code"] == "not_found"
        assert other.post("/v1/templates", json={"name": "zeta", "source": "{{ slot('q') }}"}).status_code == 201
    assert fresh.get("/v1/templates/zeta").json()["source"] == SOURCE  # the other tenant's save is its own


def test_an_unknown_template_is_a_404_that_says_how_to_make_it(fresh):
    r = fresh.get("/v1/templates/never-saved")
    assert r.status_code == 404
    assert r.json() == {
        "detail": "template 'never-saved' not found; save it with POST /v1/templates first",
        "code": "not_found",
    }


BAD = [
    ({"name": "x", "source": "{% for x in %}{{ slot('a') }}"}, "syntax error", "invalid_request"),
    ({"name": "x", "source": "plain text"}, "no slot", "invalid_request"),
    ({"name": "x", "source": ""}, "source: String should have at least 1 character", "invalid_request"),
    (
        {"name": "x", "source": "{{ slot('a') }}" + "x" * 100_000},
        "source: String should have at most 100000",
        "invalid_request",
    ),
    ({"name": "", "source": SOURCE}, "name: String should match pattern", "invalid_request"),
    ({"name": "n" * 101, "source": SOURCE}, "name: String should match pattern", "invalid_request"),
    ({"name": "a b", "source": SOURCE}, "name: String should match pattern", "invalid_request"),
    ({"source": SOURCE}, "name: Field required", "invalid_request"),
    ({"name": "x"}, "source: Field required", "invalid_request"),
    ({"name": "x", "source": SOURCE, "tags": ["a"]}, "tags: Extra inputs are not permitted", "invalid_request"),
    (
        {"name": "x", "source": SOURCE, "description": 5},
        "description: Input should be a valid string",
        "invalid_request",
    ),
    (
        {"name": "x", "source": SOURCE, "description": "\ud800"},
        "template.description contains a lone surrogate",
        "bad_text",
    ),
    ({"name": "x", "source": 7}, "source: Input should be a valid string", "invalid_request"),
]


@pytest.mark.parametrize(("body", "says", "code"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_a_422_that_says_what_was_wrong_and_saves_nothing(fresh, body, says, code):
    r = fresh.post("/v1/templates", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == code and says in r.json()["detail"], r.json()
    assert names(fresh) == []


@pytest.mark.parametrize("content", [b"{nope", b"[1, 2]", b'"text"', b"null", b"\xff\xfe"])
def test_a_body_that_is_no_template_object_is_a_4xx(fresh, content):
    r = fresh.post("/v1/templates", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422), r.text
    assert set(r.json()) == {"detail", "code"} and names(fresh) == []


def test_the_limits_are_accepted_at_the_bound(fresh):
    name, source = "n" * 100, "{{ slot('a') }}" + "x" * (100_000 - len("{{ slot('a') }}"))
    r = fresh.post("/v1/templates", json={"name": name, "source": source})
    assert r.status_code == 201, r.text[:300]
    assert fresh.get(f"/v1/templates/{name}").json()["source"] == source


FRAGMENTS = [
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    "slot(",
    "slot('a')",
    ")",
    "'",
    '"',
    " ",
    "x",
    "if",
    "endif",
    "for",
    "in",
    "endfor",
    "|",
    "upper",
    "__class__",
    "range(10)",
    "\n",
    "\\",
    "é",
    "max_tokens=",
    "-1",
    "9" * 30,
]
sources = st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join) | st.text(max_size=30)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=4,
)


@settings(max_examples=40, deadline=None)
@given(
    name=st.one_of(st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True), st.text(max_size=6)),
    source=sources,
    description=st.one_of(st.none(), st.text(max_size=8), json_values),
)
def test_any_body_is_saved_or_a_4xx_and_never_a_500(client, name, source, description):
    r = client.post("/v1/templates", json={"name": name, "source": source, "description": description})
    assert r.status_code in (201, 422), (r.status_code, r.text)
    if r.status_code == 201:
        read = client.get(f"/v1/templates/{quote(name, safe='')}")
        assert read.status_code == 200 and read.json() == r.json(), read.text
        assert (read.json()["source"], read.json()["description"]) == (source, description)


# Any name, NUL included (api/limits.py::NoNulInUrl answers 404 before the database sees it).
@settings(max_examples=25, deadline=None)
# "." and ".." are path segments a URL resolves away ("/v1/templates/." is the list), not names a path can address.
@given(name=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20).filter(
    lambda n: n not in (".", "..")))
def test_reading_any_name_is_a_template_or_a_404(client, name):
    r = client.get(f"/v1/templates/{quote(name, safe='')}")
    assert r.status_code in (200, 307, 404), (r.status_code, r.text)  # 307: a name with "/" is another path
    if r.status_code == 307:
        assert "/" in name
        return
    assert set(r.json()) == (
        {"name", "source", "description", "created_at", "updated_at"} if r.status_code == 200 else {"detail", "code"}
    )


def test_the_templates_routes_need_a_key(service):
    with service.client(None) as anon:
        for r in (
            anon.get("/v1/templates"),
            anon.get("/v1/templates/x"),
            anon.post("/v1/templates", json={"name": "x", "source": SOURCE}),
        ):
            assert r.status_code == 401 and r.json()["code"] == "unauthorized"
