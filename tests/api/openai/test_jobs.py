"""OpenAI requests as Redraft jobs (api/openai/jobs.py): ``n`` choices are ``n`` jobs with consecutive seeds, a
completion's prompts each get ``n``, a suffix makes an infill job; structured outputs become one target, from one
field; what a job refuses is a 400 naming the field; a finished answer is cut at its stop strings with the right
``finish_reason``, and usage counts each prompt once."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from redraft.api.openai.errors import OpenAIError
from redraft.api.openai.jobs import (
    JSON_OBJECT_SCHEMA,
    ChoicePlan,
    Outcome,
    chat_plans,
    completion_plans,
    cut_at_stop,
    finish,
    safe_prefix,
    structure_target,
    usage_of,
)
from redraft.api.openai.schemas import ChatCompletionCreate, CompletionCreate
from redraft.api.schemas import MAX_CHAT_CHARS, GenerateJobCreate, InfillJobCreate

text = st.text(alphabet="abc ", max_size=24)
stops = st.lists(st.text(alphabet="abc ", min_size=1, max_size=4), max_size=4)
USER = [{"role": "user", "content": "Name a colour."}]


def chat(**fields: Any) -> ChatCompletionCreate:
    return ChatCompletionCreate.model_validate({"model": "m", "messages": USER, **fields})


def completion(**fields: Any) -> CompletionCreate:
    return CompletionCreate.model_validate({"model": "m", "prompt": "Once", **fields})


def refusal(make, **fields: Any) -> OpenAIError:
    with pytest.raises(OpenAIError) as refused:
        plans = chat_plans if make is chat else completion_plans
        plans(make(**fields))
    assert refused.value.status == 400 and refused.value.body()["error"]["type"] == "invalid_request_error"
    return refused.value


# ---- cut_at_stop and safe_prefix


@given(text, stops, st.integers(min_value=0, max_value=24))
def test_the_safe_prefix_of_any_prefix_is_a_prefix_of_the_cut_answer(answer, stop, k):
    cut, _ = cut_at_stop(answer, tuple(stop))
    assert cut.startswith(safe_prefix(answer[:k], tuple(stop)))


@given(text, stops)
def test_a_cut_answer_holds_no_stop_string(answer, stop):
    cut, found = cut_at_stop(answer, tuple(stop))
    assert not any(s in cut for s in stop) and answer.startswith(cut) and found == any(s in answer for s in stop)


@given(text, stops)
def test_the_whole_answer_is_safe_only_once_no_stop_can_still_begin_at_its_end(answer, stop):
    cut, found = cut_at_stop(answer, tuple(stop))
    safe = safe_prefix(answer, tuple(stop))
    assert cut.startswith(safe)
    pending = any(answer.endswith(s[:k]) for s in stop for k in range(1, len(s)))
    if not found and not pending:
        assert safe == answer


# ---- chat_plans and completion_plans


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 6),
    seed=st.one_of(st.none(), st.integers(0, 2**53)),
    stop=st.one_of(st.none(), text.filter(bool), st.lists(text.filter(bool), max_size=4)),
    size=st.one_of(st.none(), st.integers(1, 64)),
    by_completion_tokens=st.booleans(),
    steps=st.one_of(st.none(), st.integers(1, 64)),
)
def test_n_chat_choices_are_n_generate_jobs_with_consecutive_seeds(n, seed, stop, size, by_completion_tokens, steps):
    fields = {
        "n": n,
        "seed": seed,
        "stop": stop,
        "steps": steps,
        ("max_completion_tokens" if by_completion_tokens else "max_tokens"): size,
    }
    plans = chat_plans(
        chat(
            messages=[{"role": "developer", "content": "Be brief."}, *USER],
            temperature=0.7,
            **{k: v for k, v in fields.items() if v is not None},
        )
    )
    stops_given = () if stop is None else (stop,) if isinstance(stop, str) else tuple(stop)
    assert [p.index for p in plans] == list(range(n)) and {p.prompt_index for p in plans} == {0}
    for i, plan in enumerate(plans):
        req = plan.request
        assert isinstance(req, GenerateJobCreate) and req.kind == "generate" and req.prompt is None
        assert req.seed == (seed or 0) + i and req.model == "m" and req.temperature == 0.7
        assert [(m.role, m.content) for m in req.messages] == [("system", "Be brief."), ("user", USER[0]["content"])]
        assert req.max_tokens == size and (req.steps == steps if steps else req.steps is None)
        assert (plan.stops, plan.prefix, plan.target_from, req.target) == (stops_given, "", None, None)


@settings(max_examples=60, deadline=None)
@given(
    prompts=st.lists(text, min_size=1, max_size=3),
    n=st.integers(1, 3),
    seed=st.integers(0, 1000),
    echo=st.booleans(),
    suffix=st.one_of(st.none(), text),
    size=st.one_of(st.none(), st.integers(1, 32)),
)
def test_each_prompt_gets_n_choices_and_a_suffix_makes_an_infill_job(prompts, n, seed, echo, suffix, size):
    fields = {"prompt": prompts, "n": n, "seed": seed, "echo": echo, "suffix": suffix, "max_tokens": size}
    plans = completion_plans(completion(**{k: v for k, v in fields.items() if v is not None}))
    assert [p.index for p in plans] == list(range(len(prompts) * n))
    for plan in plans:
        p, j = divmod(plan.index, n)
        assert plan.prompt_index == p and plan.request.seed == seed + j
        assert plan.prefix == (prompts[p] if echo else "")
        req = plan.request
        if suffix is None:
            assert isinstance(req, GenerateJobCreate) and req.prompt == prompts[p] and req.max_tokens == size
        else:
            assert isinstance(req, InfillJobCreate) and req.text is None
            fixed = [s.text for s in req.segments if hasattr(s, "text")]
            gaps = [s.gap.max_tokens for s in req.segments if hasattr(s, "gap")]
            assert fixed == [prompts[p], suffix] and gaps == [size] and hasattr(req.segments[1], "gap")


def test_a_string_prompt_is_one_prompt():
    assert [p.request.prompt for p in completion_plans(completion(prompt="Hi", n=2))] == ["Hi", "Hi"]


# ---- structure_target

BOOK = {"type": "object", "properties": {"title": {"type": "string"}}}


@pytest.mark.parametrize(
    ("fields", "target", "source"),
    [
        ({}, None, None),
        ({"response_format": {"type": "text"}}, None, None),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "b", "schema": BOOK}}},
            {"json_schema": BOOK},
            "response_format",
        ),
        ({"response_format": {"type": "json_object"}}, {"json_schema": JSON_OBJECT_SCHEMA}, "response_format"),
        ({"structured_outputs": {"json": BOOK}}, {"json_schema": BOOK}, "structured_outputs"),
        (
            {"structured_outputs": {"json": '{"type": "object", "properties": {"title": {"type": "string"}}}'}},
            {"json_schema": BOOK},
            "structured_outputs",
        ),
        ({"structured_outputs": {"regex": "[0-9]+"}}, {"regex": "[0-9]+"}, "structured_outputs"),
        ({"structured_outputs": {"choice": ["red", "blue"]}}, {"choices": ["red", "blue"]}, "structured_outputs"),
        ({"structured_outputs": {"json_object": True}}, {"json_schema": JSON_OBJECT_SCHEMA}, "structured_outputs"),
        (
            {"response_format": {"type": "text"}, "structured_outputs": {"regex": "a"}},
            {"regex": "a"},
            "structured_outputs",
        ),
    ],
)
def test_structured_output_is_one_target_from_one_field(fields, target, source):
    assert structure_target(chat(**fields)) == (target, source)
    plan = chat_plans(chat(**fields))[0]
    assert (plan.request.target, plan.target_from) == (target, source)


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"response_format": {"type": "json_object"}, "structured_outputs": {"regex": "a"}}, "not both"),
        ({"structured_outputs": {}}, "got none"),
        ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "got ['choice', 'regex']"),
        ({"structured_outputs": {"json": "{nope"}}, "`json` is not valid JSON"),
        ({"structured_outputs": {"grammar": "root ::= 'a'"}}, "`grammar` is not supported"),
        ({"structured_outputs": {"structural_tag": {"x": 1}}}, "`structural_tag` is not supported"),
    ],
)
def test_a_structured_output_redraft_cannot_take_is_a_400_on_that_field(fields, says):
    refused = refusal(chat, **fields)
    assert (refused.param, refused.code) == ("structured_outputs", "unsupported_parameter") and says in refused.message


def json_values(depth: int):
    scalar = st.none() | st.booleans() | st.integers() | st.text(max_size=3)
    return (
        scalar
        if depth == 0
        else st.one_of(
            scalar,
            st.lists(json_values(depth - 1), max_size=2),
            st.dictionaries(st.text(max_size=3), json_values(depth - 1), max_size=2),
        )
    )


def depth_of(value: Any) -> int:
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
    return 0 if children is None else 1 + max((depth_of(c) for c in children), default=0)


@settings(max_examples=200, deadline=None)
@given(value=json_values(3))
def test_json_object_is_any_object_of_scalars_arrays_and_objects_of_scalars(value):
    """{"type": "json_object"}: an object whose values are scalars, or arrays or objects of scalars."""
    shallow = isinstance(value, dict) and all(depth_of(v) <= 1 for v in value.values())
    assert Draft202012Validator(JSON_OBJECT_SCHEMA).is_valid(value) == shallow


# ---- what a job refuses, and the fields that cannot go together


def test_what_the_job_refuses_is_a_400_naming_the_field():
    refused = refusal(chat, t_max=1.0)  # a rule between two fields: no one field to name
    assert (refused.param, refused.code) == (None, "invalid_value")
    assert refused.message == "give both `t_max` and `t_min` (a linear schedule), or neither"
    too_long = refusal(chat, messages=[{"role": "user", "content": "x" * (MAX_CHAT_CHARS + 1)}])
    assert (too_long.param, too_long.code) == ("messages", "invalid_value")
    assert too_long.message == (
        f"messages: the messages hold {MAX_CHAT_CHARS + 1:,} characters; at most {MAX_CHAT_CHARS:,} in all"
    )


@pytest.mark.parametrize("make", [chat, completion], ids=["chat", "completion"])
@pytest.mark.parametrize(
    "structure", [{"response_format": {"type": "json_object"}}, {"structured_outputs": {"regex": "[0-9]+"}}]
)
def test_a_stop_string_cannot_cut_a_structured_answer(make, structure):
    refused = refusal(make, stop=["x"], **structure)
    assert (refused.param, refused.code) == ("stop", "unsupported_parameter")
    assert f"cannot be combined with `{next(iter(structure))}`" in refused.message
    assert make(**structure).stops == [] and (chat_plans if make is chat else completion_plans)(make(**structure))


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"structured_outputs": {"choice": ["a"]}}, "structured_outputs"),
        ({"min_tokens": 2}, "min_tokens"),
    ],
)
def test_a_suffix_takes_no_structure_and_no_min_tokens(fields, param):
    refused = refusal(completion, suffix="!", **fields)
    assert (refused.param, refused.code) == (param, "unsupported_parameter")
    assert completion_plans(completion(**fields))  # without the suffix, they are fine


# ---- finish and usage_of


def outcome(answer: str | None, completion_tokens: int, slot_size: int, eos: bool, prompt_tokens: int = 5) -> Outcome:
    return Outcome(
        job_id="j",
        status="succeeded",
        model="m",
        created=0,
        answer=answer,
        error=None,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        slot_size=slot_size,
        ended_by_eos=eos,
    )


REQUEST = completion_plans(completion())[0].request


def plan(stop: tuple[str, ...] = (), prefix: str = "", target_from: str | None = None, prompt_index: int = 0):
    return ChoicePlan(
        index=0, prompt_index=prompt_index, request=REQUEST, prefix=prefix, stops=stop, target_from=target_from
    )


@settings(max_examples=300, deadline=None)
@given(
    answer=st.one_of(st.none(), text),
    stop=stops,
    prefix=text,
    target_from=st.sampled_from([None, "response_format"]),
    size=st.integers(1, 8),
    used=st.integers(0, 8),
    eos=st.booleans(),
)
def test_a_choice_is_the_cut_answer_and_says_why_it_ended(answer, stop, prefix, target_from, size, used, eos):
    choice, reason = finish(plan(tuple(stop), prefix, target_from), outcome(answer, min(used, size), size, eos))
    cut, found = cut_at_stop(answer or "", tuple(stop))
    assert choice == prefix + cut
    ran_out = min(used, size) >= size and not eos  # every position written, and no end-of-sequence
    assert reason == ("length" if ran_out and not found and target_from is None else "stop")


@settings(max_examples=100, deadline=None)
@given(choices=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 50), st.integers(0, 20)), min_size=1, max_size=8))
def test_usage_counts_each_prompt_once_and_every_answer(choices):
    choices = sorted(choices)  # a prompt's choices come together, with the prompt's one token count
    counts = {p: tokens for p, tokens, _ in reversed(choices)}
    plans = [plan(prompt_index=p) for p, _, _ in choices]
    outcomes = [outcome("", used, 20, True, prompt_tokens=counts[p]) for p, _, used in choices]
    usage = usage_of(plans, outcomes)
    assert usage.prompt_tokens == sum(counts.values())
    assert usage.completion_tokens == sum(used for _, _, used in choices)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
