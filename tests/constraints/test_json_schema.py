"""JSON-schema targets hold: every text the schema's automaton accepts is JSON that the schema *as given* validates
(jsonschema), for schemas drawn from the kinds Redraft accepts; what outlines-core would not enforce is a 422 that
names the keyword and where it is (redraft/constraints/json_schema.py)."""

from __future__ import annotations

import json
import os
import random
import re
from collections import deque
from unittest import mock

import jsonschema
import outlines_core
import pytest
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis import strategies as st
from outlines_core.json_schema import build_regex_from_schema

from redraft.constraints import automaton
from redraft.constraints.automaton import compile_json_schema
from redraft.constraints.budget import run_bounded
from redraft.constraints.json_schema import ANY_VALUE, IGNORED, bracketed, json_safe, prepare, strip_anchors
from redraft.errors import ConstraintError
from redraft.settings import get_settings
from tests.constraints.test_automaton import EOS, SPECIALS, TOKENIZER

# ----------------------------------------------------------------------------------------------- the automaton side


def _byte_automaton(regex: str) -> tuple[dict, set[int], int]:
    """(transitions, accepting states, initial state) of the byte automaton the compiler builds for ``regex``."""
    index = outlines_core.Index(f"(?:{strip_anchors(regex)})\\x{{10FFFF}}", automaton._marked_byte_vocabulary())
    return index.get_transitions(), set(index.get_final_states()), index.get_initial_state()


def accepted_texts(schema: dict, rnd: random.Random, k: int, max_bytes: int = 160) -> list[str]:
    """``k`` texts drawn at random from the byte automaton of outlines-core's regex for ``schema`` (as the compiler
    builds it: the end marker, every live transition open), each walk heading for the end past ``max_bytes``."""
    regex = build_regex_from_schema(json.dumps(schema))
    trans, accepting, initial = run_bounded(_byte_automaton, regex, what="the test's byte automaton")
    finals = {s for s, t in trans.items() if t.get(256) in accepting}
    preds: dict[int, set[int]] = {}
    for s, t in trans.items():
        for b, d in t.items():
            if b < 256:
                preds.setdefault(d, set()).add(s)
    dist, queue = dict.fromkeys(finals, 0), deque(finals)
    while queue:  # bytes left to a final state
        d = queue.popleft()
        for s in preds.get(d, ()):
            if s not in dist:
                dist[s] = dist[d] + 1
                queue.append(s)
    assert initial in dist, f"{json.dumps(schema)} accepts no text"
    texts = []
    for _ in range(k):
        state, out = initial, bytearray()
        while True:
            options = [(b, d) for b, d in trans[state].items() if b < 256 and d in dist]
            if len(out) >= max_bytes:
                options = [o for o in options if dist[o[1]] < dist[state]]
            if state in finals and (not options or rnd.random() < 0.25):
                break
            b, state = rnd.choice(options)
            out.append(b)
        texts.append(out.decode("utf-8"))
    return texts


def assert_holds(schema: dict, seed: int, k: int = 6) -> None:
    prepared = prepare(schema)
    for text in accepted_texts(prepared, random.Random(seed), k):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise AssertionError(f"{text!r} (from {json.dumps(schema)}) is not JSON: {exc}") from None
        jsonschema.validate(value, schema)


# ------------------------------------------------------------------------------------------- schemas to draw from

NAMES = ["id", "name", "a b", 'q"uote', "back\\slash", "naïve", "x"]
STRINGS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-999, 999), STRINGS,
                    st.floats(-1e3, 1e3, allow_nan=False).map(lambda f: round(f, 2)))
PATTERNS = ["^(cat|dog)$", "cat|dog", "^a.c$", "[^x]{1,3}", "^[A-Z][a-z]{0,3}$", "\\d{2}-\\d{2}", "(ab)+|c",
            "^x$|^y$", "[.]", "a[]b]?", "[^]a]", "é.?"]


def leaves() -> st.SearchStrategy:
    return st.one_of(
        st.sampled_from([{"type": "integer"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}, {}, True,
                         {"type": ["string", "null"]}, {"type": ["integer", "boolean"]},
                         {"type": "string", "format": "date"}, {"type": "string", "format": "date-time"},
                         {"type": "string", "format": "uuid"}, {"type": "object"}, {"type": "array"}]),
        st.builds(lambda lo, span: {"type": "string", "minLength": lo, "maxLength": lo + span},
                  st.integers(0, 3), st.integers(0, 4)),
        st.sampled_from(PATTERNS).map(lambda p: {"type": "string", "pattern": p}),
        st.lists(SCALARS, min_size=1, max_size=4, unique_by=json.dumps).map(lambda v: {"enum": v}),
        SCALARS.map(lambda v: {"const": v}),
        st.builds(integer_range, st.integers(-50, 50), st.integers(0, 40), st.sampled_from([None, 1, 3, 7]),
                  st.booleans(), st.booleans()),
    )


def integer_range(lo: int, span: int, step: int | None, open_lo: bool, open_hi: bool) -> dict:
    schema = {"type": "integer", "exclusiveMinimum" if open_lo else "minimum": lo - open_lo,
              "exclusiveMaximum" if open_hi else "maximum": lo + span + open_hi}
    if step and any(v % step == 0 for v in range(lo, lo + span + 1)):
        schema["multipleOf"] = step
    return schema


def composites(children: st.SearchStrategy) -> st.SearchStrategy:
    def obj(props, required, closed):
        if closed:  # a required name that is neither listed nor allowed: no object matches (refused: another test)
            required = [name for name in required if name in props]
        schema = {"type": "object", "properties": props}
        if required:
            schema["required"] = required
        if closed:
            schema["additionalProperties"] = False
        return schema

    objects = st.builds(obj, st.dictionaries(st.sampled_from(NAMES), children, max_size=4),
                        st.lists(st.sampled_from(NAMES), max_size=3, unique=True), st.booleans())
    arrays = st.builds(lambda items, lo, span: {"type": "array", "items": items, "minItems": lo, "maxItems": lo + span},
                       children, st.integers(0, 2), st.integers(0, 2))
    tagged = st.builds(
        lambda a, b: {"oneOf": [
            {"type": "object", "properties": {"kind": {"const": "a"}, "v": a}, "required": ["kind"]},
            {"type": "object", "properties": {"kind": {"const": "b"}, "v": b}, "required": ["kind", "v"]}]},
        children, children)
    return st.one_of(objects, arrays, tagged,
                     st.lists(children, min_size=2, max_size=3).map(lambda s: {"anyOf": s}),
                     st.just({"oneOf": [{"type": "string", "maxLength": 3}, {"type": "boolean"}, {"type": "null"}]}),
                     children.map(lambda s: {"allOf": [s]}))


SCHEMA_TREES = st.recursive(leaves(), composites, max_leaves=6).filter(lambda s: s is not True)


def with_defs(schema) -> dict:
    """The same schema with its first leaf-ish part reached through ``$ref`` (``$defs``)."""
    return {"$defs": {"part": schema}, "type": "object", "properties": {"p": {"$ref": "#/$defs/part"}},
            "required": ["p"]}


# ------------------------------------------------------------------------------------------------------ properties


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])
@given(schema=SCHEMA_TREES, seed=st.integers(0, 2**31 - 1), by_ref=st.booleans())
def test_every_accepted_text_validates_against_the_schema_as_given(schema, seed, by_ref):
    """Over the schemas the service compiles: one whose automaton takes longer than the compile budget to build is
    refused with a 422 ``compile_timeout`` (``{"anyOf": [{"type": "array", "items": true, "maxItems": 2}, true]}``
    was drawn once: outlines-core's index of its 41,647-character regex ran for minutes, and the test with it)."""
    schema = with_defs(schema) if by_ref or not isinstance(schema, dict) else schema
    with mock.patch.dict(os.environ, {"REDRAFT_COMPILE_TIMEOUT_S": "15"}):  # a refused draw costs 15 s, not 60
        get_settings.cache_clear()
        try:
            assert_holds(schema, seed)
        except ConstraintError as exc:
            if exc.code not in ("compile_timeout", "compile_memory"):
                raise
            reject()
        finally:
            get_settings.cache_clear()


@pytest.mark.parametrize("schema, good", [
    ({"type": "object", "properties": {"a": {}}, "required": ["a"]}, '{"a":[1,{"k":null}]}'),
    ({"type": "string", "pattern": "cat|dog"}, '"dog"'),
    ({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a", "b"]}, '{"a":1,"b":"x"}'),
])
def test_what_outlines_core_writes_wrongly_is_rewritten(schema, good):
    """Each of these compiled, before the rewrite, to a regex whose texts broke the schema (or that missed a valid
    one): ``{}`` leaves an alternation open, a pattern's alternation binds across the quotes, a required name
    without a property is dropped. Now the valid text is accepted and every accepted text validates."""
    raw = build_regex_from_schema(json.dumps(schema))
    assert not re.fullmatch(raw, good) or any(
        not _valid(t, schema) for t in accepted_texts(schema, random.Random(0), 40))
    assert re.fullmatch(build_regex_from_schema(json.dumps(prepare(schema))), good)
    assert_holds(schema, 0, k=20)


def _valid(text: str, schema: dict) -> bool:
    try:
        jsonschema.validate(json.loads(text), schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


@pytest.mark.parametrize("keyword", IGNORED)
def test_keywords_outlines_core_ignores_are_refused_by_name(keyword):
    value = {"minimum": 1, "maximum": 1, "exclusiveMinimum": 1, "exclusiveMaximum": 1, "multipleOf": 2,
             "uniqueItems": True, "contains": {"type": "integer"}, "minContains": 2, "maxContains": 1,
             "minProperties": 1, "maxProperties": 1, "dependentRequired": {"a": ["b"]},
             "dependentSchemas": {"a": {"required": ["b"]}}, "dependencies": {"a": ["b"]},
             "propertyNames": {"maxLength": 2}, "patternProperties": {"^x": {"type": "integer"}},
             "if": {"required": ["a"]}, "then": {"required": ["b"]}, "else": {"required": ["c"]},
             "not": {"type": "null"}}[keyword]
    schema = {"type": "object", "properties": {"a": {"type": "number", keyword: value}}, "required": ["a"]}
    with pytest.raises(ConstraintError, match=f"`{keyword}` at #/properties/a") as exc:
        prepare(schema)
    assert exc.value.code == "unsupported_schema" and exc.value.status_code == 422


@pytest.mark.parametrize("schema, message", [
    ({"type": "strng"}, "not valid at #.type"),
    ({"type": "integer", "minimum": 0}, "integer bounds at the schema's root cannot be enforced"),
    ({"type": "integer", "minimum": 0, "maximum": 10**6}, "at most 1,000 values"),
    ({"type": "integer", "minimum": 1, "maximum": 5, "multipleOf": 7}, "no value within its bounds"),
    ({"type": "integer", "minimum": 0, "maximum": 3, "enum": [True, 9]}, "no value within its bounds"),
    ({"allOf": [{"type": "integer"}, {"type": "number"}]}, "`allOf` at the schema's root has 2 schemas"),
    ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "branches 0 and 1 are not shown to exclude"),
    ({"oneOf": [{"type": "string"}, {"enum": ["x", 1]}]}, "branches 0 and 1"),
    ({"type": "object", "properties": {"v": {"oneOf": [
        {"type": "object", "properties": {"k": {"const": "a"}}, "required": ["k"]},
        {"type": "object", "properties": {"k": {"enum": ["b", "a"]}}, "required": ["k"]}]}}},
     "`oneOf` at #/properties/v"),
    ("not a schema", "must be an object"),
    # Found by review (outlines-core reads one dispatch key of a node and drops its siblings, and more):
    ({"type": "string", "pattern": "^[a-z]+$", "maxLength": 10}, "a string length beside its `pattern`"),
    ({"type": "string", "format": "uuid", "minLength": 1}, "a string length beside its `pattern` or `format`"),
    ({"type": "object", "properties": {"a": {"type": "integer"}},
      "anyOf": [{"required": ["a"]}, {"required": ["b"]}]}, "`properties` beside `anyOf`"),
    ({"type": "object", "properties": {"a": {"type": "integer"}}, "allOf": [{"required": ["a"]}]},
     "`properties` beside `allOf`"),
    ({"required": ["a"], "anyOf": [{"type": "object"}, {"type": "null"}]}, "`properties` beside `anyOf`"),
    ({"type": "string", "enum": ["a", "b"], "maxLength": 2}, "`maxLength` beside `enum`"),
    ({"type": "integer", "const": "x"}, "a `type` that none of its `const` values has"),
    ({"type": "string", "anyOf": [{"maxLength": 2}, {"type": "integer"}]}, "`type` beside `anyOf`"),
    ({"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s", "maxLength": 2}, "`maxLength` beside `$ref`"),
    ({"type": "array", "prefixItems": [{"type": "integer"}], "minItems": 3}, "`prefixItems` of 1 beside"),
    ({"type": "string", "properties": {"a": {}}}, "`type` beside `properties`"),
    ({"$defs": {"N": {"type": "object", "properties": {"v": {"type": "integer"}, "next": {
        "anyOf": [{"$ref": "#/$defs/N"}, {"type": "null"}]}}, "required": ["v", "next"]}}, "$ref": "#/$defs/N"},
     "recursive (`$ref` '#/$defs/N' leads back to itself)"),
    ({"type": "string", "pattern": "^[[:alpha:]]+$"}, "uses '[:' inside a class"),
    ({"type": "string", "pattern": "[a-z&&[^x]]+"}, "uses '&&' inside a class"),
    ({"type": "string", "pattern": "^[^\\W\\d]+$"}, "inside a negated class"),
    ({"enum": [{"a\"b": 1}]}, "the object key 'a\"b'"),
    ({"const": {"a.b": 1}}, "the object key 'a.b'"),
    ({"enum": [12345678901234567890123]}, "an integer beyond 64 bits"),
    ({"enum": []}, "is empty"),
    ({"type": "integer", "minimum": 0, "maximum": float("inf")}, "not finite numbers"),
])
def test_schemas_that_cannot_hold_are_refused_with_where(schema, message):
    with pytest.raises(ConstraintError, match=re.escape(message)):
        prepare(schema)


@pytest.mark.parametrize("schema", [
    {"type": "string", "enum": ["a", "b", None]},  # the type filters the values: null is not written
    {"type": ["integer", "null"], "enum": [1, 2.0, 2.5, "x", None]},
    {"type": "string", "minLength": 2.0, "maxLength": 3.0},  # whole-number floats are counts
    {"type": "array", "items": {"type": "integer"}, "maxItems": 1.0},
    {"type": "string", "pattern": "^[^\\d]x$"},  # Unicode \\d inside a negated class: narrower, so it holds
])
def test_what_review_found_outlines_core_dropping_now_holds(schema):
    for text in accepted_texts(prepare(schema), random.Random(3), 60):
        jsonschema.validate(json.loads(text), schema)


def test_harmless_values_of_ignored_keywords_are_accepted():
    assert prepare({"type": "array", "uniqueItems": False, "minProperties": 0}) == {"type": "array"}


def test_an_integer_bounded_on_both_sides_is_held_as_its_values():
    assert prepare({"type": "integer", "exclusiveMinimum": 0.5, "maximum": 9, "multipleOf": 3}) == {"enum": [3, 6, 9]}
    assert prepare({"type": "integer", "minimum": -1, "maximum": 1, "enum": [1, 5, 0, "x"]})["enum"] == [0, 1]


@pytest.mark.parametrize("pattern, written", [
    ("^a.c$", '(?:a[^"\\\\\\x00-\\x1F]c)'),
    ("[^x]", '(?:[^"\\\\\\x00-\\x1Fx])'),
    ("[^]x]", '(?:[^"\\\\\\x00-\\x1F\\]x])'),
    ("\\.[.]", "(?:\\.[.])"),
    ("a|b", "(?:a|b)"),
])
def test_patterns_are_bracketed_and_made_json_safe(pattern, written):
    assert bracketed(pattern) == written
    re.compile(json_safe(pattern))


@pytest.mark.parametrize("schema, where", [
    ({"type": "string", "pattern": "\\S+"},
     "`pattern` (compiled as '(?:\\\\S+)') at the schema's root can write '\"', '\\\\', control characters"),
    ({"type": "object", "properties": {"e": {"type": "string", "format": "email"}}}, "`format` 'email' at #/properties/e"),
    ({"type": "string", "format": "time"}, "`format` 'time'"),
    ({"type": "array", "items": {"type": "string", "pattern": "[ -~]+"}}, "at #/items can write '\"', '\\\\'"),
])
def test_string_contents_that_would_break_the_json_text_are_refused(schema, where):
    """Checked in the compile's bounded build, on the byte automaton of the string's contents."""
    with pytest.raises(ConstraintError, match=re.escape(where)) as exc:
        compile_json_schema(schema, TOKENIZER, EOS, SPECIALS)
    assert exc.value.code == "unsupported_schema"


def test_an_object_of_optional_fields_with_an_any_valued_one_compiles_and_holds():
    """The issue's second real-world schema (eight optional properties, one any-typed), refused before by the
    alternatives limit with outlines-core's wrong regex for ``{}``."""
    schema = {"type": "object", "properties": {
        "id": {"type": "integer"}, "name": {"type": "string", "maxLength": 20}, "active": {"type": "boolean"},
        "score": {"type": "number"}, "kind": {"enum": ["a", "b", "c"]}, "count": {"type": "integer"},
        "flag": {"type": "boolean"}, "extra": {}}}
    a = compile_json_schema(schema, TOKENIZER, EOS, SPECIALS)
    assert a.n_states > 0 and prepare(schema)["properties"]["extra"] == ANY_VALUE
    assert_holds(schema, 1, k=20)
