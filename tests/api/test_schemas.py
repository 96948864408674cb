"""The request shapes (api/schemas.py): every documented bound is accepted at the bound and refused just past it,
the rules between fields hold exactly as documented, types are taken as the schema says (no "5" for 5; 5.0 is 5),
the JSON schema's oneOf groups agree with the validators, and through the running API every refusal is a 422 whose
message names the field and says what was wrong."""

from __future__ import annotations

import math
import re
from itertools import chain, combinations
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from redraft.api.schemas import (
    AUTHED_ERRORS,
    BODY_ERRORS,
    MAX_CHAT_CHARS,
    MAX_CHAT_MESSAGES,
    MAX_VARIABLE_DEPTH,
    AutoRevise,
    ErrorBody,
    GenerateJobCreate,
    InfillJobCreate,
    ReviseJobCreate,
    ReviseTarget,
    SpanEdit,
    TemplateCreate,
    error_responses,
)
from tests.utils.service import running_service

INFILL = {"kind": "infill", "text": "a [[gap]]"}
PROMPT = {"kind": "generate", "prompt": "Q: "}
REVISE = {"kind": "revise", "text": "Some text.", "spans": [{"start": 0, "end": 4}]}


def error_of(model: type[BaseModel], body: dict[str, Any]) -> str | None:
    """None when ``model`` accepts ``body``; else its errors, as one string of "loc: msg" parts."""
    try:
        model.model_validate(body)
    except ValidationError as exc:
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return None


def subsets(items):
    return list(chain.from_iterable(combinations(items, k) for k in range(len(items) + 1)))


def above(x: float) -> float:
    return math.nextafter(x, math.inf)


def below(x: float) -> float:
    return math.nextafter(x, -math.inf)


# (model, base body, field, lowest accepted, highest accepted, just below, just above); None: no bound that side.
SMALLEST = math.nextafter(0.0, 1.0)
BOUNDS = [
    (InfillJobCreate, INFILL, "seed", 0, 2**63 - 1, -1, 2**63),
    (InfillJobCreate, INFILL, "temperature", 0.0, 10.0, below(0.0), above(10.0)),
    (InfillJobCreate, INFILL, "entropy_bound", SMALLEST, 1000.0, 0.0, above(1000.0)),
    (InfillJobCreate, INFILL, "block_size", 1, 65536, 0, 65537),
    (InfillJobCreate, INFILL, "threshold", SMALLEST, 1.0, 0.0, above(1.0)),
    (InfillJobCreate, INFILL, "remask_budget", 0, 4096, -1, 4097),
    (InfillJobCreate, INFILL, "remask_below", SMALLEST, 1.0, 0.0, above(1.0)),
    (InfillJobCreate, {**INFILL, "t_min": SMALLEST}, "t_max", SMALLEST, 10.0, 0.0, above(10.0)),
    (InfillJobCreate, {**INFILL, "t_max": 10.0}, "t_min", SMALLEST, 10.0, 0.0, above(10.0)),
    (GenerateJobCreate, PROMPT, "min_tokens", 0, None, -1, None),
    (SpanEdit, {"start": 0, "end": 0}, "start", 0, None, -1, None),
    (SpanEdit, {"start": 0, "end": 0}, "end", 0, None, -1, None),
    (SpanEdit, {"start": 0, "end": 0}, "max_tokens", 1, None, 0, None),
    (AutoRevise, {}, "confidence_below", SMALLEST, 1.0, 0.0, above(1.0)),
    (AutoRevise, {}, "least_confident", 1, None, 0, None),
    (ReviseTarget, {"slot": "a", "regex": "x"}, "max_tokens", 1, None, 0, None),
]


@pytest.mark.parametrize(
    ("model", "base", "field", "low", "high", "under", "over"), BOUNDS, ids=[f"{b[0].__name__}.{b[2]}" for b in BOUNDS]
)
def test_each_bound_is_accepted_at_the_bound_and_refused_just_past_it(model, base, field, low, high, under, over):
    for ok in (low, high):
        if ok is not None:
            assert error_of(model, {**base, field: ok}) is None, (field, ok)
    for bad in (under, over):
        if bad is not None:
            error = error_of(model, {**base, field: bad})
            assert error is not None and error.startswith(f"{field}: Input should be"), (field, bad, error)


SAFETY_BOUNDS = [  # SafetySpec (redraft.jobs.SafetyParams), on every job kind
    ({"avoid": ["x" * 500]}, {"avoid": ["x" * 501]}, "avoid.0"),
    ({"avoid": ["x"]}, {"avoid": [""]}, "avoid.0"),
    ({"avoid": ["t"] * 32}, {"avoid": ["t"] * 33}, "avoid"),
    ({"avoid_threshold": 1.0}, {"avoid_threshold": above(1.0)}, "avoid_threshold"),
    ({"avoid_threshold": SMALLEST}, {"avoid_threshold": 0.0}, "avoid_threshold"),
    ({"avoid_rounds": 10}, {"avoid_rounds": 11}, "avoid_rounds"),
    ({"avoid_rounds": 1}, {"avoid_rounds": 0}, "avoid_rounds"),
]


@pytest.mark.parametrize(("ok", "bad", "loc"), SAFETY_BOUNDS)
@pytest.mark.parametrize("base", [INFILL, PROMPT, REVISE], ids=["infill", "generate", "revise"])
def test_the_safety_bounds_hold_on_every_kind(base, ok, bad, loc):
    model = {"infill": InfillJobCreate, "generate": GenerateJobCreate, "revise": ReviseJobCreate}[base["kind"]]
    assert error_of(model, {**base, "safety": ok}) is None
    error = error_of(model, {**base, "safety": bad})
    assert error is not None and error.startswith(f"safety.{loc}: "), error


INT_FIELDS = ["steps", "seed", "block_size", "remask_budget"]
FLOAT_FIELDS = ["temperature", "entropy_bound", "threshold", "remask_below"]


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(INT_FIELDS), n=st.integers(1, 64))
def test_a_whole_float_is_taken_for_an_int_field_and_nothing_else_is(field, n):
    assert getattr(InfillJobCreate.model_validate({**INFILL, field: float(n)}), field) == n
    for bad in (str(n), n + 0.5, True, [n]):
        error = error_of(InfillJobCreate, {**INFILL, field: bad})
        assert error is not None and error.startswith(f"{field}: Input should be a valid integer"), (bad, error)


@settings(max_examples=50, deadline=None)
@given(field=st.sampled_from(FLOAT_FIELDS), x=st.floats(0.01, 1.0))
def test_a_float_field_takes_ints_and_floats_but_no_strings_or_booleans(field, x):
    assert getattr(InfillJobCreate.model_validate({**INFILL, field: x}), field) == x
    assert getattr(InfillJobCreate.model_validate({**INFILL, field: 1}), field) == 1.0
    for bad in (str(x), True, [x]):
        error = error_of(InfillJobCreate, {**INFILL, field: bad})
        assert error is not None and error.startswith(f"{field}: Input should be a valid number"), (bad, error)


MODELS = {
    "infill": (InfillJobCreate, INFILL),
    "generate": (GenerateJobCreate, PROMPT),
    "revise": (ReviseJobCreate, REVISE),
    "template": (TemplateCreate, {"name": "t", "source": "{{ slot('a') }}"}),
    "span": (SpanEdit, {"start": 0, "end": 1}),
}


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(list(MODELS)), name=st.from_regex(r"[a-z_]{1,12}", fullmatch=True))
def test_an_unknown_field_is_refused_by_name_never_ignored(kind, name):
    model, base = MODELS[kind]
    if name in model.model_fields:
        return
    assert error_of(model, {**base, name: 1}) == f"{name}: Extra inputs are not permitted"


values = st.one_of(st.none(), st.floats(SMALLEST, 10.0))
unit = st.one_of(st.none(), st.floats(SMALLEST, 1.0))


@settings(max_examples=150, deadline=None)
@given(
    temperature=st.one_of(st.none(), st.floats(0.0, 10.0)),
    t_max=values,
    t_min=values,
    threshold=unit,
    entropy_bound=st.one_of(st.none(), st.floats(SMALLEST, 1000.0)),
)
def test_one_temperature_rule_and_one_acceptance_rule(temperature, t_max, t_min, threshold, entropy_bound):
    body = {
        **INFILL,
        "temperature": temperature,
        "t_max": t_max,
        "t_min": t_min,
        "threshold": threshold,
        "entropy_bound": entropy_bound,
    }
    broken = []  # each documented rule the body breaks, with the words its refusal must have
    if (t_max is None) != (t_min is None):
        broken.append("give both `t_max` and `t_min`")
    if t_max is not None and temperature is not None:
        broken.append("not both")
    if t_max is not None and t_min is not None and t_max < t_min:
        broken.append("must be at least t_min")
    if threshold is not None and entropy_bound is not None:
        broken.append("two acceptance rules")
    error = error_of(InfillJobCreate, body)
    if not broken:
        assert error is None
    else:
        assert error is not None and any(words in error for words in broken), (broken, error)


FORMS = {
    "template": "{{ slot('a') }}",
    "template_name": "saved",
    "prompt": "Q: ",
    "messages": [{"role": "user", "content": "hi"}],
}
GENERATE_SCHEMA = Draft202012Validator(GenerateJobCreate.model_json_schema())


@pytest.mark.parametrize("given_forms", subsets(FORMS), ids=lambda s: "+".join(s) or "none")
def test_exactly_one_generate_form_and_the_json_schema_says_the_same(given_forms):
    body = {"kind": "generate", **{name: FORMS[name] for name in given_forms}}
    error = error_of(GenerateJobCreate, body)
    assert (error is None) == (len(given_forms) == 1) == GENERATE_SCHEMA.is_valid(body)
    if error is not None:
        assert "give exactly one of `template`" in error
    for name in given_forms:  # a form's null is the same as leaving it out, and the schema does not advertise it
        assert error_of(GenerateJobCreate, {**body, name: None}) == error_of(
            GenerateJobCreate, {k: v for k, v in body.items() if k != name}
        )
        assert not GENERATE_SCHEMA.is_valid({**body, name: None})


@pytest.mark.parametrize("given_forms", subsets(["text", "segments"]), ids=lambda s: "+".join(s) or "none")
def test_exactly_one_infill_source_and_the_json_schema_says_the_same(given_forms):
    sources = {"text": "a [[gap]]", "segments": [{"text": "a "}, {"gap": {}}]}
    body = {"kind": "infill", **{name: sources[name] for name in given_forms}}
    error = error_of(InfillJobCreate, body)
    assert (
        (error is None)
        == (len(given_forms) == 1)
        == Draft202012Validator(InfillJobCreate.model_json_schema()).is_valid(body)
    )
    if error is not None:
        assert "give exactly one of `text`" in error


@pytest.mark.parametrize("form", ["template", "template_name"])
@pytest.mark.parametrize("extra", [{"target": {"regex": "a"}}, {"max_tokens": 4}])
def test_target_and_max_tokens_belong_to_the_prompt_and_messages_forms(form, extra):
    assert error_of(GenerateJobCreate, {"kind": "generate", "prompt": "Q: ", **extra}) is None
    assert error_of(GenerateJobCreate, {"kind": "generate", "messages": FORMS["messages"], **extra}) is None
    error = error_of(GenerateJobCreate, {"kind": "generate", form: FORMS[form], **extra})
    assert error is not None and "belong to the prompt form or the messages form" in error


def chat(lengths: list[int], parts: bool) -> list[dict[str, Any]]:
    if parts:
        return [{"role": "user", "content": [{"type": "text", "text": "x" * n}]} for n in lengths]
    return [{"role": "user", "content": "x" * n} for n in lengths]


@settings(max_examples=40, deadline=None)
@given(delta=st.integers(-2, 2), cuts=st.lists(st.integers(0, MAX_CHAT_CHARS), max_size=3), parts=st.booleans())
def test_the_messages_hold_at_most_max_chat_chars_in_all(delta, cuts, parts):
    total = MAX_CHAT_CHARS + delta
    points = sorted(min(c, total) for c in cuts)
    lengths = [b - a for a, b in zip([0, *points], [*points, total])]
    error = error_of(GenerateJobCreate, {"kind": "generate", "messages": chat(lengths, parts)})
    if total <= MAX_CHAT_CHARS:
        assert error is None
    else:
        assert error == (
            f"messages: Value error, the messages hold {total:,} characters; at most {MAX_CHAT_CHARS:,} in all"
        )


def test_the_messages_are_one_to_max_chat_messages():
    assert error_of(GenerateJobCreate, {"kind": "generate", "messages": chat([1] * MAX_CHAT_MESSAGES, False)}) is None
    too_many = error_of(GenerateJobCreate, {"kind": "generate", "messages": chat([1] * (MAX_CHAT_MESSAGES + 1), False)})
    assert too_many is not None and too_many.startswith(f"messages: List should have at most {MAX_CHAT_MESSAGES}")
    none = error_of(GenerateJobCreate, {"kind": "generate", "messages": []})
    assert none is not None and none.startswith("messages: List should have at least 1 item")


@pytest.mark.parametrize(
    ("part", "named"),
    [
        ({"type": "image_url", "image_url": {"url": "x"}}, "'image_url'"),
        ({"type": "input_audio"}, "'input_audio'"),
        ({"text": "x"}, "None"),
        (5, "'int'"),
        ("text", "'str'"),
    ],
)
def test_a_message_takes_text_parts_only_and_says_what_it_got(part, named):
    body = {"kind": "generate", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, part]}]}
    error = error_of(GenerateJobCreate, body)
    assert error is not None and error.startswith("messages.0.content: Value error, only text parts")
    assert error.endswith(f"got {named}"), error


def nested(kinds: list[str]) -> dict[str, Any]:
    """Template variables whose innermost container is ``len(kinds) + 1`` deep (the variables themselves: 1)."""
    value: Any = 0
    for kind in reversed(kinds):
        value = [value] if kind == "list" else {"k": value}
    return {"v": value}


@settings(max_examples=60, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(["list", "dict"]), min_size=MAX_VARIABLE_DEPTH - 4, max_size=MAX_VARIABLE_DEPTH + 4)
)
def test_template_variables_nest_at_most_max_variable_depth(kinds):
    depth = len(kinds) + (1 if kinds else 0)  # the innermost container's depth (a scalar leaf does not count)
    error = error_of(GenerateJobCreate, {**PROMPT, "variables": nested(kinds)})
    if depth <= MAX_VARIABLE_DEPTH:
        assert error is None
    else:
        assert (
            error == f"variables: Value error, variables are nested more than {MAX_VARIABLE_DEPTH} deep; flatten them"
        )


@pytest.mark.parametrize("where", subsets(["span", "slot"]), ids=lambda s: "+".join(s) or "nowhere")
@pytest.mark.parametrize("what", subsets(["regex", "choices", "json_schema"]), ids=lambda s: "+".join(s) or "nothing")
def test_a_revise_target_names_exactly_one_place_and_exactly_one_target(where, what):
    values = {
        "span": {"start": 0, "end": 1},
        "slot": "a",
        "regex": "x",
        "choices": ["x"],
        "json_schema": {"type": "string"},
    }
    error = error_of(ReviseTarget, {name: values[name] for name in (*where, *what)})
    if len(where) != 1:
        assert error is not None and "exactly one of `span` or `slot`" in error
    elif len(what) != 1:
        assert error is not None and "exactly one of `regex`, `choices`, `json_schema`" in error
    else:
        assert error is None


SOURCES = {"draft_id": "d1", "text": "Some text."}
ASKS = {
    "spans": [{"start": 0, "end": 4}],
    "auto": {"least_confident": 2},
    "targets": [{"slot": "a", "regex": "x"}],
    "safety": {"banned": ["x"]},
}


@pytest.mark.parametrize("sources", subsets(SOURCES), ids=lambda s: "+".join(s) or "no-source")
@pytest.mark.parametrize("asks", subsets(ASKS), ids=lambda s: "+".join(s) or "nothing")
def test_a_revision_has_one_source_and_says_what_to_reconsider(sources, asks):
    body = {"kind": "revise", **{k: SOURCES[k] for k in sources}, **{k: ASKS[k] for k in asks}}
    error = error_of(ReviseJobCreate, body)
    if len(sources) != 1:
        assert error is not None and "exactly one of `draft_id`" in error
    elif not asks:
        assert error is not None and "say what to reconsider" in error
    else:
        assert error is None
    assert (len(sources) == 1) == Draft202012Validator(ReviseJobCreate.model_json_schema()).is_valid(
        {"kind": "revise", **{k: SOURCES[k] for k in sources}}
    )


def test_revise_text_and_auto_refuse_what_they_cannot_mean():
    assert error_of(ReviseJobCreate, {**REVISE, "text": ""}).startswith("text: String should have at least 1")
    for auto in ({}, {"confidence_below": 0.5, "least_confident": 2}):
        error = error_of(AutoRevise, auto)
        assert error is not None and "auto takes exactly one of" in error


NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


@settings(max_examples=100, deadline=None)
@given(
    name=st.one_of(
        st.text(alphabet="aZ09_.-/ \n\té:", max_size=102),
        st.from_regex(NAME, fullmatch=True),
        st.integers(99, 102).map(lambda n: "n" * n),
    )
)
def test_a_template_name_is_1_to_100_of_letters_digits_and_dot_dash_underscore(name):
    error = error_of(TemplateCreate, {"name": name, "source": "{{ slot('a') }}"})
    if NAME.fullmatch(name):
        assert error is None
    else:
        assert error is not None and error.startswith("name: String should match pattern"), error


def test_a_template_source_is_1_to_100k_characters():
    for n in (1, 100_000):
        assert error_of(TemplateCreate, {"name": "t", "source": "x" * n}) is None
    assert error_of(TemplateCreate, {"name": "t", "source": ""}).startswith("source: String should have at least 1")
    assert error_of(TemplateCreate, {"name": "t", "source": "x" * 100_001}).startswith(
        "source: String should have at most 100000"
    )


def test_error_responses_document_the_one_error_shape():
    assert set(AUTHED_ERRORS) == {401, 422, 503} and set(BODY_ERRORS) == {400, 413}
    entries = error_responses(404, 409, 429)
    assert set(entries) == {404, 409, 429}
    assert all(e["model"] is ErrorBody and e["description"] for e in entries.values())
    with pytest.raises(KeyError):
        error_responses(418)  # only the statuses Redraft really answers have a meaning written down


# ---- through the running API: a refusal is a 422 that names the field and says what was wrong


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request, tiny_model_dir, tmp_path_factory):
    """The API on each backend, without a worker: nothing here is valid enough to run."""
    with running_service(request.param, tiny_model_dir, tmp_path_factory.mktemp(request.param), workers=0) as svc:
        yield svc


WRONG = {int: ["5", True, 2.5, [1], {}], float: ["0.5", False, [0.5], {}]}


@settings(max_examples=25, deadline=None)
@given(field=st.sampled_from(INT_FIELDS + FLOAT_FIELDS), data=st.data())
def test_a_wrong_type_is_a_422_that_names_the_field_and_writes_nothing(client, field, data):
    value = data.draw(st.sampled_from(WRONG[int if field in INT_FIELDS else float]), label="value")
    r = client.post("/v1/jobs", json={**INFILL, field: value})
    assert r.status_code == 422 and r.json()["code"] == "invalid_request", r.text
    kind = "integer" if field in INT_FIELDS else "number"
    assert f"infill.{field}: Input should be a valid {kind}" in r.json()["detail"]
    assert client.get("/v1/jobs").json()["count"] == 0


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({**INFILL, "seed": 2**63}, "infill.seed: Input should be less than or equal to 9223372036854775807"),
        ({**INFILL, "t_max": 1.0}, "give both `t_max` and `t_min`"),
        ({**PROMPT, "messages": FORMS["messages"]}, "give exactly one of `template`"),
        (
            {"kind": "generate", "messages": chat([MAX_CHAT_CHARS + 1], False)},
            f"the messages hold {MAX_CHAT_CHARS + 1:,} characters",
        ),
        ({**PROMPT, "variables": nested(["list"] * MAX_VARIABLE_DEPTH)}, "nested more than 32 deep"),
        ({**REVISE, "spans": [{"start": -1, "end": 0}]}, "revise.spans.0.start: Input should be greater than or equal"),
        ({"kind": "revise", "text": "x"}, "say what to reconsider"),
        ({**INFILL, "kind": "poem"}, "kind"),
        ({**INFILL, "colour": "red"}, "infill.colour: Extra inputs are not permitted"),
    ],
)
def test_each_refusal_through_the_api_says_what_was_wrong(client, body, says):
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 422 and r.json()["code"] == "invalid_request", r.text
    assert says in r.json()["detail"], r.json()


def test_a_bad_template_name_is_a_422_naming_the_pattern(client):
    r = client.post("/v1/templates", json={"name": "a/b", "source": "{{ slot('a') }}"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_request"
    assert r.json()["detail"].startswith("name: String should match pattern")
