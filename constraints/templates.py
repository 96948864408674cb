"""Jinja2 templates with typed slots, rendered in Jinja2's sandbox, compiled to canvas segments.

``{{ slot("name", max_tokens=8, regex=..., choices=[...], json_schema={...}, min_tokens=0, vocab=...) }}``
marks text the model writes; everything else the template renders is fixed. Loops and
conditionals over ``variables`` work as in any Jinja2 template.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, nodes
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from redraft.constraints.budget import check_choices, check_regex_length, check_schema_depth
from redraft.constraints.vocab import check_vocab
from redraft.errors import ConstraintError, InvalidRequest
from redraft.settings import get_settings

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class SlotSpec:
    name: str
    max_tokens: int
    min_tokens: int = 0
    target: tuple[str, str] | None = None  # ("regex", pattern) | ("json_schema", json) | ("choices", json list)
    vocab: str | None = None  # a simple vocabulary mask: "digits", "letters", "no_newline", "ascii"


def make_slot(name: Any, max_tokens: Any, min_tokens: Any = 0, regex: Any = None, choices: Any = None,
              json_schema: Any = None, vocab: Any = None, *, limit: int) -> SlotSpec:
    """Validate one slot's arguments; every message says what to write instead."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidRequest(f"slot name {name!r} is not valid: use letters, digits, _ . - (up to 64)")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= limit:
        raise InvalidRequest(f"slot {name!r}: max_tokens must be a whole number from 1 to {limit}; got {max_tokens!r}")
    if not isinstance(min_tokens, int) or isinstance(min_tokens, bool) or not 0 <= min_tokens <= max_tokens:
        raise InvalidRequest(f"slot {name!r}: min_tokens must be from 0 to max_tokens ({max_tokens}); got {min_tokens!r}")
    given = [(k, v) for k, v in (("regex", regex), ("choices", choices), ("json_schema", json_schema)) if v is not None]
    if len(given) > 1:
        raise InvalidRequest(f"slot {name!r}: give at most one of regex, choices, json_schema")
    target = None
    if given:
        kind, value = given[0]
        if kind == "regex":
            if not isinstance(value, str) or not value:
                raise ConstraintError(f"slot {name!r}: regex must be a non-empty string")
            check_regex_length(value, f"slot {name!r}: the regex")  # before Python compiles it
            try:
                re.compile(value)
            except re.error as exc:
                raise ConstraintError(f"slot {name!r}: invalid regex {value!r}: {exc}") from exc
            target = ("regex", value)
        elif kind == "choices":
            if not isinstance(value, (list, tuple)) or not value or not all(isinstance(c, str) and c for c in value):
                raise ConstraintError(f"slot {name!r}: choices must be a non-empty list of non-empty strings")
            check_choices(list(value))
            target = ("choices", json.dumps(list(value)))
        else:
            if not isinstance(value, dict):
                raise ConstraintError(f"slot {name!r}: json_schema must be a JSON object (a dict)")
            check_schema_depth(value)  # before serialising it
            target = ("json_schema", json.dumps(value))  # property order sets the output field order
    check_vocab(vocab)
    return SlotSpec(name=name, max_tokens=max_tokens, min_tokens=min_tokens, target=target, vocab=vocab)


PRINTABLE = (str, int, float, bool, type(None))
TOO_DEEP = "the template is nested too deeply to parse (blocks inside blocks, hundreds deep); flatten it"
MAX_RENDERED_CHARS = 200_000  # a template renders at most this much text (it is tokenised next, in the API)


class BoundedSandbox(SandboxedEnvironment):
    """Jinja2's sandbox with budgets, each a 422 that names its setting:

    - the two operators that build huge values in one step: ``'a' * 10**7`` (a string or list repeated, within
      ``MAX_RENDERED_CHARS``) and ``**`` (exponents up to 64);
    - loop iterations, all loops together (``template_max_iterations``): every ``{% for %}`` iterates through
      :meth:`bounded_loop` (the parsed tree is rewritten so), and so does each ``loop(...)`` of a recursive loop;
    - nesting of calls (``template_max_call_depth``): macros calling macros, recursive loops;
    - wall-clock time (``template_timeout_s``), checked at every iteration and call (and by ``render_template``
      at every piece of output), so exponential macros and loops that print nothing stop too.

    One instance per render: the counters and the deadline start when it is made.
    """

    intercepted_binops = frozenset(["*", "**"])

    def __init__(self, *, max_iterations: int, max_call_depth: int, timeout_s: float, **options: Any) -> None:
        super().__init__(**options)
        self.max_iterations, self.max_call_depth, self.timeout_s = max_iterations, max_call_depth, timeout_s
        self.iterations, self.depth = 0, 0
        self.deadline = time.monotonic() + timeout_s

    def check_clock(self) -> None:
        if time.monotonic() > self.deadline:
            raise InvalidRequest(f"the template took more than {self.timeout_s:g} s to render "
                                 "(REDRAFT_TEMPLATE_TIMEOUT_S); make it do less (fewer loop iterations and macro calls)",
                                 code="template_budget")

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):  # for x in SEQ  ->  for x in environment.bounded_loop(SEQ)
            loop.iter = nodes.Call(nodes.EnvironmentAttribute("bounded_loop"), [loop.iter], [], None, None,
                                   lineno=loop.lineno)
        return tree

    def bounded_loop(self, iterable: Any) -> Iterator[Any]:
        """``iterable``, counting every item against the iteration budget and the deadline."""
        for item in iterable:
            self.iterations += 1
            if self.iterations > self.max_iterations:
                raise InvalidRequest(f"the template's loops ran more than {self.max_iterations:,} iterations in all "
                                     "(REDRAFT_TEMPLATE_MAX_ITERATIONS); loop over less (shorter lists, fewer nested "
                                     "loops)", code="template_budget")
            self.check_clock()
            yield item

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.check_clock()
        if self.depth >= self.max_call_depth:
            raise InvalidRequest(f"the template nests calls more than {self.max_call_depth} deep (macros calling "
                                 "macros, REDRAFT_TEMPLATE_MAX_CALL_DEPTH); recurse less deeply",
                                 code="template_budget")
        if isinstance(obj, LoopContext) and args:  # loop(children) in a recursive loop: count its items too
            args = (self.bounded_loop(args[0]), *args[1:])
        self.depth += 1
        try:
            return super().call(context, obj, *args, **kwargs)
        finally:
            self.depth -= 1

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_RENDERED_CHARS:
                    raise InvalidRequest(f"the template repeats a {type(seq).__name__} of {len(seq)} {n} times, over "
                                         f"the {MAX_RENDERED_CHARS:,}-character budget of a rendered template")
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
            raise InvalidRequest(f"the template raises to the power {right}; exponents are limited to 64")
        return super().call_binop(context, operator, left, right)


def _printable(value: Any, depth: int = 0) -> Any:
    """``finalize`` of the template environment: ``{{ x }}`` may print values, never a function or an object
    (whose repr carries a heap address into the text, as ``{{ slot }}`` or ``{{ cycler() }}`` would)."""
    if isinstance(value, (*PRINTABLE, Undefined)):  # an undefined name raises its own, clearer error
        return value
    if isinstance(value, (list, tuple, dict)) and depth < 8:
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            _printable(k, depth + 1), _printable(v, depth + 1)
        return value
    name = getattr(value, "__name__", type(value).__name__)
    raise InvalidRequest(f"the template prints {name!r}, a {type(value).__name__}, not a value: call it "
                         f"(slot is written {{{{ slot(\"name\", max_tokens=8) }}}}) or print a variable")


def render_template(source: str, variables: dict[str, Any], default_tokens: int, limit: int) -> list[str | SlotSpec]:
    """Render in the sandbox; return the fixed text pieces and slots in order."""
    if "slot" in variables:
        raise InvalidRequest("`slot` is reserved for the slot() helper; rename that variable")
    nonce = secrets.token_hex(8)
    slots: list[SlotSpec] = []

    def slot(name: Any, max_tokens: Any = default_tokens, regex: Any = None, choices: Any = None,
             json_schema: Any = None, min_tokens: Any = 0, vocab: Any = None) -> str:
        spec = make_slot(name, max_tokens, min_tokens, regex, choices, json_schema, vocab, limit=limit)
        if any(s.name == spec.name for s in slots):
            raise InvalidRequest(f"slot name {spec.name!r} is used twice; slot names must be unique")
        slots.append(spec)
        return f"\x00{nonce}:{len(slots) - 1}\x00"

    settings = get_settings()
    env = BoundedSandbox(max_iterations=settings.template_max_iterations,
                         max_call_depth=settings.template_max_call_depth, timeout_s=settings.template_timeout_s,
                         undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True, finalize=_printable)
    env.globals.pop("lipsum", None)  # random filler text has no place in a document (and is not seeded)
    try:
        parts, size = [], 0
        for part in env.from_string(source).generate(**variables, slot=slot):  # stops as soon as it is too long
            size += len(part)
            env.check_clock()
            if size > MAX_RENDERED_CHARS:
                raise InvalidRequest(f"the template renders more than {MAX_RENDERED_CHARS:,} characters; "
                                     "render less text (fewer loop iterations, shorter variables)")
            parts.append(part)
        rendered = "".join(parts)
    except TemplateSyntaxError as exc:
        raise InvalidRequest(f"template syntax error on line {exc.lineno}: {exc.message}") from exc
    except SecurityError as exc:
        raise InvalidRequest(f"the template does something the sandbox forbids: {exc}") from exc
    except UndefinedError as exc:
        raise InvalidRequest(f"the template uses an undefined name: {exc.message}; pass it in `variables`") from exc
    except (InvalidRequest, ConstraintError):
        raise
    except RecursionError as exc:
        raise InvalidRequest(TOO_DEEP) from exc
    except Exception as exc:  # any other error raised while rendering user code is the user's template
        raise InvalidRequest(f"the template failed to render: {type(exc).__name__}: {exc}") from exc
    if not slots:
        raise InvalidRequest('the template has no slot: mark what the model writes with {{ slot("name") }}')
    pieces: list[str | SlotSpec] = []
    for i, part in enumerate(re.split(f"\x00{nonce}:(\\d+)\x00", rendered)):
        if i % 2:
            pieces.append(slots[int(part)])
        elif part:
            pieces.append(part)
    return pieces


def validate_template(source: str) -> None:
    """Check a template for saving: it parses in the sandbox and calls slot() at least once."""
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise InvalidRequest(f"template syntax error on line {exc.lineno}: {exc.message}") from exc
    except RecursionError as exc:
        raise InvalidRequest(TOO_DEEP) from exc
    calls = [c for c in tree.find_all(nodes.Call) if isinstance(c.node, nodes.Name) and c.node.name == "slot"]
    if not calls:
        raise InvalidRequest('the template has no slot: mark what the model writes with {{ slot("name") }}')
