"""JSON-schema targets that hold: the schema outlines-core is handed, and what is refused before it.

A ``json_schema`` target becomes a regex by outlines-core's ``build_regex_from_schema`` (0.2.14), then an
automaton (:mod:`redraft.constraints.automaton`). That regex is narrower than the schema in places (it writes only
the declared properties, in their order, no ``\\uXXXX`` escapes), which is fine: every text it matches is still
valid. Where it is *wider*, or wrong, a decoded answer could break the schema the caller gave, and that is what
this module stops:

- **Keywords outlines-core ignores** (``minimum``, ``multipleOf``, ``uniqueItems``, ``minProperties``, ``if``,
  ``patternProperties``, ...: :data:`IGNORED`; outlines-core issues #147, #261) are refused with a 422 naming the
  keyword and where it is, never silently dropped; an integer bounded on both sides with few enough values is held
  exactly as their ``enum`` instead.
- **Constructs it writes wrongly** are rewritten before it sees them: a ``{}`` / ``true`` sub-schema (its regex
  leaves an alternation unbracketed, so ``{null}`` matched and ``{"a": null}`` did not; outlines-core #151) becomes
  an explicit "any JSON value"; a ``pattern`` is bracketed (``cat|dog`` bound across the quotes, #267) after its
  outer anchors are dropped; a ``required`` name missing from ``properties`` is added with the schema of
  ``additionalProperties`` (any value by default; outlines-core dropped it, so every answer lacked it); a property
  name is handed over as its JSON spelling (outlines-core wrote ``"q"x"`` for the name ``q"x``).
- **What it would join or blur** is refused: an ``allOf`` of several schemas (written one after the other, not
  intersected), a ``oneOf`` whose branches are not shown exclusive (outlines-core writes it as ``anyOf``: a value
  matching two branches breaks ``oneOf``). Exclusive means different JSON types, or disjoint ``enum``/``const``
  values, or objects sharing a required property whose ``const``/``enum`` values differ (a discriminator).
- **String contents that would break the JSON text**: a ``pattern`` or ``format`` is matched against the raw JSON
  text between the quotes, so one that can write ``"``, ``\\`` or a control character would end or corrupt the
  string (``.`` can; outlines-core's ``email``, ``uri`` and ``time`` regexes can). :func:`string_contents` lists
  them; the automaton's bounded build checks each one's byte automaton and refuses such a pattern.

The schema itself is first checked against its meta-schema (jsonschema), so a typo such as ``"type": "strng"`` is a
422 saying where it is. The property tests (tests/constraints/test_json_schema.py) draw schemas of the accepted
kinds, walk their automata at random and validate every text with jsonschema against the schema as given.

Torch-free: the API calls it at submission.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError

from redraft.errors import ConstraintError
from redraft.settings import get_settings

# Every JSON value (what ``{}`` means); ``object`` and ``array`` without more are outlines-core's generic ones.
ANY_VALUE: dict[str, Any] = {"type": ["string", "number", "boolean", "null", "object", "array"]}

# Validation keywords outlines-core reads past without enforcing them (checked against jsonschema one by one).
IGNORED = (
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "uniqueItems", "contains",
    "minContains", "maxContains", "minProperties", "maxProperties", "dependentRequired", "dependentSchemas",
    "dependencies", "propertyNames", "patternProperties", "if", "then", "else", "not",
)
_HINTS = {
    "minimum": "an `enum`, or a `pattern` on a string",
    "maximum": "an `enum`, or a `pattern` on a string",
    "exclusiveMinimum": "an `enum`, or a `pattern` on a string",
    "exclusiveMaximum": "an `enum`, or a `pattern` on a string",
    "multipleOf": "an `enum`",
    "patternProperties": "`properties` with the names spelled out",
    "if": "`anyOf` of the cases",
    "not": "`enum` or `anyOf` of what is allowed",
}
# Keyword values that constrain nothing, so they are accepted (and dropped).
_HARMLESS = {"uniqueItems": False, "minProperties": 0, "minContains": 1}

# Where sub-schemas sit: keyword -> how its value holds them.
_ONE = ("items", "additionalProperties", "unevaluatedProperties", "unevaluatedItems")
_MAP = ("properties", "$defs", "definitions")
_LIST = ("anyOf", "oneOf", "prefixItems")


def _where(path: str) -> str:
    return "the schema's root" if path == "#" else path


def prepare(schema: Any) -> dict[str, Any]:
    """``schema`` checked against its meta-schema, refused where outlines-core would not enforce it, and rewritten
    where it would write it wrongly (see the module's docstring); a new dict, key order kept (it is the order of the
    output's fields). ``ConstraintError`` (422) says what and where."""
    if not isinstance(schema, dict):
        raise ConstraintError(f"a JSON schema must be an object, not {type(schema).__name__}")
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except SchemaError as exc:
        where = exc.json_path.replace("$", "#", 1) if getattr(exc, "json_path", None) else "#"
        raise ConstraintError(f"the JSON schema is not valid at {_where(where)}: {exc.message}") from None
    prep = _Prepare(schema)
    prep.no_recursion()
    return prep.node(schema, "#")


class _Prepare:
    def __init__(self, root: dict[str, Any]):
        self.root = root

    def node(self, schema: Any, path: str) -> Any:
        if schema is True or schema == {}:
            return dict(ANY_VALUE)
        if not isinstance(schema, dict):
            return schema  # `false` (outlines-core refuses it where it cannot place it) and keyword values
        schema = _integer_range(schema, path)
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key in IGNORED:
                if _HARMLESS.get(key, object()) == value:
                    continue
                hint = _HINTS.get(key)
                raise ConstraintError(
                    f"the JSON schema's `{key}` at {_where(path)} cannot be enforced while decoding (outlines-core "
                    f"reads past it), so an answer could break it; remove it"
                    + (f", or express it with {hint}" if hint else "") + ", and check it on the result",
                    code="unsupported_schema")
            if key in _ONE and isinstance(value, (dict, bool)):
                out[key] = value if value is False else self.node(value, f"{path}/{key}")
            elif key in _MAP and isinstance(value, dict):
                out[key] = {name: self.node(sub, f"{path}/{key}/{name}") for name, sub in value.items()}
            elif key in _LIST and isinstance(value, list):
                out[key] = [self.node(sub, f"{path}/{key}/{i}") for i, sub in enumerate(value)]
            elif key == "allOf" and isinstance(value, list):
                if len(value) != 1:
                    raise ConstraintError(
                        f"the JSON schema's `allOf` at {_where(path)} has {len(value)} schemas; outlines-core would "
                        "write their texts one after another instead of requiring all of them: merge them into one "
                        "schema", code="unsupported_schema")
                out[key] = [self.node(value[0], f"{path}/allOf/0")]
            elif key == "pattern" and isinstance(value, str):
                out[key] = bracketed(value)
            elif key in ("enum", "const"):
                for v in value if key == "enum" else [value]:
                    _check_value(v, f"{path}/{key}")
                if key == "enum" and not value:
                    raise ConstraintError(f"the JSON schema's `enum` at {_where(path)} is empty: no value can match it",
                                          code="unsupported_schema")
                out[key] = value
            elif key in _COUNTS and isinstance(value, float) and value.is_integer():
                out[key] = int(value)  # outlines-core reads only an integer count (2.0 would be ignored)
            else:
                out[key] = value
        if isinstance(out.get("properties"), dict):  # outlines-core writes a name as given, unescaped
            out["properties"] = {_escaped(name): sub for name, sub in out["properties"].items()}
        if isinstance(out.get("required"), list):
            out["required"] = [_escaped(name) if isinstance(name, str) else name for name in out["required"]]
        required = out.get("required")
        if isinstance(required, list) and required:
            properties = out.setdefault("properties", {})
            others = out.get("additionalProperties", True)
            for name in required:
                if name in properties:
                    continue
                if others is False:
                    raise ConstraintError(
                        f"the JSON schema at {_where(path)} requires {name!r}, which it does not list in `properties` "
                        "while `additionalProperties` is false: no object can match it; add the property",
                        code="unsupported_schema")
                properties[name] = dict(ANY_VALUE) if others is True else others
        if "oneOf" in out:
            self.exclusive(schema["oneOf"], path)
        return _one_reading(out, path)

    # ------------------------------------------------------------------------------------------ oneOf exclusivity

    def resolve(self, schema: Any, seen: int = 0) -> Any:
        """A local ``$ref`` (``#/...``) followed to its schema (a few hops at most)."""
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and seen < 8:
            ref = schema["$ref"]
            if not ref.startswith("#"):
                return schema
            target: Any = self.root
            for part in filter(None, ref[1:].split("/")):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, dict) or part not in target:
                    return schema
                target = target[part]
            schema, seen = target, seen + 1
        return schema

    def no_recursion(self) -> None:
        """Refuse a ``$ref`` that leads back to itself: outlines-core cuts recursion at depth 3 and, where the cut
        property is required, writes the comma before it anyway (``{"v": 1, }``)."""
        def refs(node: Any) -> set[str]:
            found, stack = set(), [node]
            while stack:
                n = stack.pop()
                if isinstance(n, dict):
                    if isinstance(n.get("$ref"), str):
                        found.add(n["$ref"])
                    stack.extend(v for k, v in n.items() if k not in ("$defs", "definitions"))
                elif isinstance(n, list):
                    stack.extend(n)
            return found

        graph: dict[str, set[str]] = {}
        todo = list(refs(self.root))
        while todo:
            ref = todo.pop()
            if ref in graph:
                continue
            target = self.resolve({"$ref": ref})
            graph[ref] = refs(target) if isinstance(target, dict) and target.get("$ref") != ref else {ref}
            todo.extend(graph[ref])
        state: dict[str, int] = {}

        def visit(ref: str) -> None:
            state[ref] = 1
            for nxt in graph.get(ref, ()):
                if state.get(nxt) == 1:
                    raise ConstraintError(
                        f"the JSON schema is recursive (`$ref` {nxt!r} leads back to itself); outlines-core cuts "
                        "recursion at depth 3 and can write broken JSON there: unroll it to a fixed depth",
                        code="unsupported_schema")
                if nxt not in state:
                    visit(nxt)
            state[ref] = 2

        for ref in list(graph):
            if ref not in state:
                visit(ref)

    def exclusive(self, branches: list[Any], path: str) -> None:
        shapes = [_Shape.of(self.resolve(b), self) for b in branches]
        for i in range(len(shapes)):
            for j in range(i + 1, len(shapes)):
                if not shapes[i].disjoint(shapes[j]):
                    raise ConstraintError(
                        f"the JSON schema's `oneOf` at {_where(path)}: branches {i} and {j} are not shown to exclude "
                        "each other (outlines-core writes `oneOf` as `anyOf`, so a value matching both would break "
                        "it); give them different types, different `enum`/`const` values, or a required property "
                        "with a different `const` in each (a discriminator), or use `anyOf`",
                        code="unsupported_schema")


_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")


def _integer_range(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """An integer schema bounded on both sides (``minimum``/``maximum``, exclusive or not, with a ``multipleOf``
    perhaps) with at most ``max_alternatives`` values becomes their ``enum``: exact, where outlines-core would ignore
    the bounds. Anything else with bounds is left for the keyword check to refuse."""
    if schema.get("type") != "integer" or not any(k in schema for k in _BOUNDS):
        return schema
    bounds = [schema.get(k) for k in _BOUNDS if isinstance(schema.get(k), float)]
    if not all(math.isfinite(b) for b in bounds):
        raise ConstraintError(f"the JSON schema's integer bounds at {_where(path)} are not finite numbers",
                              code="unsupported_schema")
    lo = hi = None
    if isinstance(schema.get("minimum"), (int, float)):
        lo = math.ceil(schema["minimum"])
    if isinstance(schema.get("exclusiveMinimum"), (int, float)):
        lo = max(lo if lo is not None else -math.inf, math.floor(schema["exclusiveMinimum"]) + 1)
    if isinstance(schema.get("maximum"), (int, float)):
        hi = math.floor(schema["maximum"])
    if isinstance(schema.get("exclusiveMaximum"), (int, float)):
        hi = min(hi if hi is not None else math.inf, math.ceil(schema["exclusiveMaximum"]) - 1)
    limit = get_settings().max_alternatives
    if lo is None or hi is None or hi - lo + 1 > limit:
        raise ConstraintError(
            f"the JSON schema's integer bounds at {_where(path)} cannot be enforced while decoding unless the integer "
            f"is bounded on both sides with at most {limit:,} values (REDRAFT_MAX_ALTERNATIVES; then it is held as "
            "an `enum`): bound it on both sides, or remove the bounds and check them on the result",
            code="unsupported_schema")
    step = schema.get("multipleOf", 1)
    values = [v for v in range(int(lo), int(hi) + 1) if (v % step == 0 if isinstance(step, int) else
                                                         (v / step).is_integer())]
    if "enum" in schema or "const" in schema:
        listed = {_value_key(v) for v in (schema["enum"] if "enum" in schema else [schema["const"]])}
        values = [v for v in values if _value_key(v) in listed]
    if not values:
        raise ConstraintError(f"the JSON schema's integer at {_where(path)} has no value within its bounds",
                              code="unsupported_schema")
    kept = {k: v for k, v in schema.items() if k not in _BOUNDS and k not in ("enum", "const")}
    return {**kept, "enum": values}


_COUNTS = ("minLength", "maxLength", "minItems", "maxItems")
# outlines-core reads the first of these a node has and ignores the rest (json_schema/parsing.rs, 0.2.14).
_DISPATCH = ("properties", "allOf", "anyOf", "oneOf", "prefixItems", "enum", "const", "$ref")
# What a node's `type` reads, which a dispatch key above hides.
_TYPED = ("minLength", "maxLength", "pattern", "format", "items", "minItems", "maxItems", "additionalProperties",
          "required")
_KEY = r"[A-Za-z0-9_ ]*"


def _one_reading(out: dict[str, Any], path: str) -> dict[str, Any]:
    """Refuse a node that outlines-core would read only part of: two dispatch keys side by side, a ``type`` or a
    type's keyword beside one that hides it, a string's length beside its ``pattern``/``format`` (outlines-core
    keeps the length, drops the pattern), ``prefixItems`` whose count its ``minItems``/``maxItems`` exclude. A
    ``type`` beside ``enum``/``const`` filters the values instead (exact)."""
    def refuse(what: str, fix: str) -> ConstraintError:
        return ConstraintError(f"the JSON schema at {_where(path)} has {what}: outlines-core would enforce only part "
                               f"of it; {fix}", code="unsupported_schema")

    present = [k for k in _DISPATCH if k in out]
    if len(present) > 1:
        raise refuse(f"`{present[0]}` beside `{present[1]}`",
                     "nest one inside the other (e.g. give each `anyOf` branch its `properties`)")
    t = out.get("type")
    types = {t} if isinstance(t, str) else set(t) if isinstance(t, list) else None
    if present and present[0] in ("enum", "const") and types is not None:
        values = out["enum"] if present[0] == "enum" else [out["const"]]
        kept = [v for v in values if _has_type(v, types)]
        if not kept:
            raise refuse(f"a `type` that none of its `{present[0]}` values has", "make them agree")
        out = {k: v for k, v in out.items() if k not in ("type", "const")}
        out["enum"] = kept
        present, types = ["enum"], None
    hidden = [k for k in _TYPED if k in out]
    if present:
        allowed = {"properties": ("object", {"required", "additionalProperties"}),
                   "prefixItems": ("array", {"items", "minItems", "maxItems"})}.get(present[0])
        if types is not None and (allowed is None or types != {allowed[0]}):
            raise refuse(f"`type` beside `{present[0]}`", f"put the type inside `{present[0]}`, or drop it")
        extra = [k for k in hidden if allowed is None or k not in allowed[1]]
        if extra:
            raise refuse(f"`{extra[0]}` beside `{present[0]}`", f"move it inside `{present[0]}`")
        if present[0] == "prefixItems":
            n = len(out["prefixItems"])
            if not out.get("minItems", 0) <= n <= out.get("maxItems", n):
                raise refuse(f"`prefixItems` of {n} beside `minItems`/`maxItems` that exclude {n} items "
                             "(outlines-core writes exactly the prefix)", "make them agree")
    if ("pattern" in out or "format" in out) and ("minLength" in out or "maxLength" in out):
        raise refuse("a string length beside its `pattern` or `format` (outlines-core would drop the pattern)",
                     "put the length in the pattern (e.g. ^[a-z]{1,10}$)")
    return out


def _has_type(value: Any, types: set[str]) -> bool:
    """``value`` is of one of the JSON Schema ``types`` (1.0 is an integer there)."""
    kind = _json_type(value)
    if kind == "number":
        return "number" in types or ("integer" in types and float(value).is_integer())
    return kind in types


def _check_value(value: Any, path: str) -> None:
    """An ``enum``/``const`` value outlines-core writes correctly: object keys it need not escape (it writes them
    raw, unescaped for JSON and for the regex), integers within 64 bits (beyond, it writes a float)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            bad = [k for k in v if not re.fullmatch(_KEY, k)]
            if bad:
                raise ConstraintError(
                    f"the JSON schema's value at {_where(path)} has the object key {bad[0]!r}; outlines-core writes a "
                    "value's keys unescaped, so only letters, digits, '_' and spaces are held: spell the object with "
                    "`properties` and a `const` for each", code="unsupported_schema")
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, int) and not isinstance(v, bool) and not -2**63 <= v < 2**63:
            raise ConstraintError(f"the JSON schema's value at {_where(path)} is an integer beyond 64 bits, which "
                                  "outlines-core writes as a float: give it as a string", code="unsupported_schema")
        elif isinstance(v, float) and not math.isfinite(v):
            raise ConstraintError(f"the JSON schema's value at {_where(path)} is not a finite number",
                                  code="unsupported_schema")


def _escaped(name: str) -> str:
    """A property name as its JSON text spells it between the quotes (``q"x`` -> ``q\\"x``): what outlines-core
    writes literally."""
    return json.dumps(name, ensure_ascii=False)[1:-1]


def _value_key(value: Any) -> str:
    """Equal JSON values, equal keys (JSON Schema: 1 == 1.0)."""
    def norm(v: Any) -> Any:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, (int, float)):
            return float(v) if math.isfinite(v) and float(v) == v else v
        if isinstance(v, list):
            return [norm(x) for x in v]
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        return v
    return json.dumps(norm(value), sort_keys=True)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(value)]


class _Shape:
    """What a oneOf branch can be, as far as exclusivity is judged: its JSON types (None: any), its values when it
    lists them (``enum``/``const``), and for objects the value sets of its required, enumerated properties."""

    def __init__(self, types: frozenset[str] | None, values: frozenset[str] | None, tags: dict[str, frozenset[str]]):
        self.types, self.values, self.tags = types, values, tags

    @classmethod
    def of(cls, schema: Any, prep: _Prepare) -> _Shape:
        if not isinstance(schema, dict):
            return cls(None if schema is not False else frozenset(), None, {})
        values = None
        if "const" in schema:
            values = [schema["const"]]
        elif isinstance(schema.get("enum"), list):
            values = schema["enum"]
        types: frozenset[str] | None = None
        t = schema.get("type")
        if isinstance(t, str):
            types = frozenset({"number" if t == "integer" else t})
        elif isinstance(t, list):
            types = frozenset("number" if x == "integer" else x for x in t)
        if values is not None:
            value_types = frozenset(_json_type(v) for v in values)
            types = value_types if types is None else types & value_types
        tags: dict[str, frozenset[str]] = {}
        required = schema.get("required") if isinstance(schema.get("required"), list) else []
        properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        for name in required:
            sub = prep.resolve(properties.get(name))
            if isinstance(sub, dict):
                if "const" in sub:
                    tags[name] = frozenset({_value_key(sub["const"])})
                elif isinstance(sub.get("enum"), list):
                    tags[name] = frozenset(_value_key(v) for v in sub["enum"])
        if tags and types is None:
            types = frozenset({"object"})
        return cls(types, None if values is None else frozenset(_value_key(v) for v in values), tags)

    def disjoint(self, other: _Shape) -> bool:
        if self.types is not None and other.types is not None and not self.types & other.types:
            return True
        if self.values is not None and other.values is not None and not self.values & other.values:
            return True
        if self.types == frozenset({"object"}) == other.types:
            return any(not (vals & other.tags[name]) for name, vals in self.tags.items() if name in other.tags)
        return False


# ---------------------------------------------------------------------------------------------- string contents


def strip_anchors(pattern: str) -> str:
    """Drop a leading ``^``/``\\A`` and a trailing unescaped ``$``/``\\z``: a slot (or a schema's string) fullmatches
    anyway, and outlines-core cannot start from a ``^`` inside a group nor end before the end marker.
    (Anchors elsewhere in the pattern are rejected or make their branch unmatchable.)"""
    for anchor in ("^", "\\A"):
        if pattern.startswith(anchor):
            pattern = pattern[len(anchor):]
            break
    for anchor in ("$", "\\z"):
        if pattern.endswith(anchor):
            head = pattern[: -len(anchor)]
            if (len(head) - len(head.rstrip("\\"))) % 2 == 0:
                return head
    return pattern


# What ``.`` and a negated class may match inside a JSON string's text: not the quote, the backslash or a control
# character (nor a newline, which ``.`` never matches).
_STRING_CHAR = '[^"\\\\\\x00-\\x1F]'
_NOT_IN_STRING = '"\\\\\\x00-\\x1F'


# JSON Schema's patterns are ECMA-262's, where ``\\d`` and ``\\w`` are ASCII; outlines-core's (Rust's) are Unicode
# (``\\d`` takes digits of scripts added after this Python's Unicode, which jsonschema's ``re`` would refuse).
# Escape -> (outside a class, inside one).
_ECMA_CLASSES = {"\\d": ("[0-9]", "0-9"), "\\w": ("[A-Za-z0-9_]", "A-Za-z0-9_")}  # \\D, \\W: left as written


def json_safe(pattern: str) -> str:
    """``pattern`` with each ``.`` outside a class made ``_STRING_CHAR`` and each negated class ``[^...]`` made to
    exclude the same characters (the quote, the backslash, controls): the text a schema's ``pattern`` matches is the
    raw JSON between the quotes, where they would end or break the string. ``\\d`` and ``\\w`` are ASCII, as in
    ECMA-262 (``_ECMA_CLASSES``). Narrower than the pattern, so still
    valid; what else can write them (``\\s``, ``[ -~]``) is refused by the compile's check (:func:`string_contents`)."""
    out, i, n, in_class, negated = [], 0, len(pattern), False, False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            escape = pattern[i:i + 2]
            # Inside a negated class the Unicode \\d of outlines-core excludes more than Python's: still valid.
            if in_class and negated and escape in ("\\W", "\\D", "\\S"):
                raise ConstraintError(  # [^\\W] is \\w, and Rust's Unicode \\w holds letters Python's does not
                    f"the JSON schema's `pattern` {pattern!r} has {escape} inside a negated class, which reads "
                    "Unicode tables newer than the validator's: list what the class allows instead (e.g. [A-Za-z])",
                    code="unsupported_schema")
            ascii_ok = escape in _ECMA_CLASSES and not (in_class and negated)
            out.append(_ECMA_CLASSES[escape][in_class] if ascii_ok else escape)
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            elif pattern.startswith(("[:", "&&", "--", "~~"), i):
                raise ConstraintError(
                    f"the JSON schema's `pattern` {pattern!r} uses {pattern[i:i + 2]!r} inside a class, which Rust's "
                    "regex (outlines-core) reads as a class operation and JSON Schema's regex as two characters: "
                    "write the class out (e.g. [A-Za-z] for [[:alpha:]]), or escape them", code="unsupported_schema")
            out.append(c)
        elif c == "[":
            in_class, negated = True, pattern.startswith("[^", i)
            if negated:
                out.append("[^" + _NOT_IN_STRING)
                i += 2
                if i < n and pattern[i] == "]":  # a leading ] is a member
                    out.append("\\]")
                    i += 1
                continue
            out.append(c)
            if i + 1 < n and pattern[i + 1] == "]":
                out.append("\\]")
                i += 1
        elif c == ".":
            out.append(_STRING_CHAR)
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _branches(pattern: str) -> list[str]:
    """``pattern`` split at its top-level ``|`` (not inside a group or a class, not escaped)."""
    parts, start, depth, in_class, i = [], 0, 0, False, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if pattern.startswith("[^]", i) or pattern.startswith("[]", i):
                i += 2 if pattern[i + 1] == "]" else 3
                continue
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
    return [*parts, pattern[start:]]


def bracketed(pattern: str) -> str:
    """A schema's ``pattern`` as outlines-core should have put it between the quotes: each top-level branch's
    anchors dropped (a string's pattern fullmatches its text here, which is narrower than JSON Schema's search and so
    still valid; ``^x$|^y$`` is two anchored branches), made JSON-safe (:func:`json_safe`), the whole in a
    non-capturing group so that an alternation stays inside the string."""
    return "(?:" + "|".join(json_safe(strip_anchors(b)) for b in _branches(pattern)) + ")"


def string_contents(schema: Any, path: str = "#") -> list[tuple[str, str, dict[str, Any]]]:
    """Every string schema with a ``pattern`` or a ``format`` in a prepared schema: (where, what, a schema of that
    string alone), for the bounded build to check that its contents cannot write ``"``, ``\\`` or a control byte."""
    found: list[tuple[str, str, dict[str, Any]]] = []
    stack = [(schema, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, list):
            stack.extend((sub, f"{where}/{i}") for i, sub in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        if isinstance(node.get("pattern"), str):
            found.append((where, f"`pattern` (compiled as {node['pattern']!r})",
                          {"type": "string", "pattern": node["pattern"]}))
        elif isinstance(node.get("format"), str) and node.get("type", "string") == "string":
            found.append((where, f"`format` {node['format']!r}", {"type": "string", "format": node["format"]}))
        for key, value in node.items():
            if key in _ONE or key in _LIST or key == "allOf":
                stack.append((value, f"{where}/{key}"))
            elif key in _MAP and isinstance(value, dict):
                stack.extend((sub, f"{where}/{key}/{name}") for name, sub in value.items())
    return found


def unsafe_contents(where: str, what: str, chars: list[int]) -> ConstraintError:
    """The 422 for a string schema whose contents can write ``chars`` (bytes) raw."""
    named = [repr(chr(c)) for c in chars if c >= 0x20] + (["control characters"] if min(chars) < 0x20 else [])
    fix = ("give a `pattern` that leaves them out instead of the `format`" if what.startswith("`format`") else
           'leave them out of its classes (e.g. [^"\\\\\\s] for \\S, [a-z ] for [ -~])')
    return ConstraintError(
        f"the JSON schema's {what} at {_where(where)} can write {', '.join(named)} inside the string, which would end "
        f"or break the JSON text (the pattern is matched against the raw text between the quotes); {fix}",
        code="unsupported_schema")
