"""Budgets on compiling constraints, enforced while the work happens: the compile side's guard rails.

A hostile target can make outlines-core's construction explode (``\\w{200}``, nested bounded repeats,
``[ab]*a[ab]{14}``'s 2^15 DFA states, a JSON schema whose regex quadruples per nesting level), and that
work is Rust that holds the GIL and cannot be interrupted from a thread. So a compile is guarded twice:

1. **Before construction**, in the calling process, cheap checks that refuse with a 422 naming the limit:
   the regex's length (``max_regex_chars``), a schema's nesting depth (``max_schema_depth``), the number
   of alternatives (``max_alternatives``), and the size of the pattern's automaton *estimated from its
   parse* (``max_regex_states``; :func:`check_pattern`, counted while walking, stopping as soon as the
   budget is spent).
2. **During construction**, the build runs in a forked child process (:func:`run_bounded`) under a
   wall-clock deadline (``compile_timeout_s``: the parent kills it) and an address-space limit
   (``compile_memory_bytes``, ``RLIMIT_AS``); it hands back only a compact result. The calling thread
   just waits on a pipe, so the API's event loop, ``/healthz`` and other requests go on.

The slot decoder's memory per step is budgeted at submission too (:func:`dp_step_bytes`,
:func:`require_dp_fits`), and compile time is reported for per-tenant accounting (:func:`compile_clock`).

Torch-free: imported by the API and the workers.
"""

from __future__ import annotations

import math
import multiprocessing
import re
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from re import _constants as sre  # the parse tree's opcodes (the stdlib's own regex parser, below)
from re import _parser as sre_parser
from typing import Any, TypeVar

from redraft.errors import CompileBusy, ConstraintError
from redraft.settings import get_settings

T = TypeVar("T")


def shown(pattern: str, limit: int = 80) -> str:
    """A pattern for an error message: its repr, cut short (a refused regex may be 64k characters)."""
    return repr(pattern) if len(pattern) <= limit else repr(pattern[:limit]) + f"... ({len(pattern):,} characters)"


# ---------------------------------------------------------------------------------------------- before construction


def check_regex_length(pattern: str, what: str = "the regex") -> None:
    limit = get_settings().max_regex_chars
    if len(pattern) > limit:
        raise ConstraintError(f"{what} is {len(pattern):,} characters, over the limit of {limit:,} "
                              "(REDRAFT_MAX_REGEX_CHARS); write a shorter pattern", code="constraint_too_large")


def check_choices(choices: list[str]) -> None:
    limit = get_settings().max_alternatives
    if len(choices) > limit:
        raise ConstraintError(f"{len(choices):,} choices are over the limit of {limit:,} alternatives "
                              "(REDRAFT_MAX_ALTERNATIVES); give fewer choices, or a regex that describes them",
                              code="constraint_too_large")


def check_schema_depth(schema: Any) -> None:
    """Objects and arrays nested deeper than ``max_schema_depth`` in the schema document are a 422 (outlines-core's
    regex for nested arrays grows fourfold per level). Iterative, and stops at the first level too deep."""
    limit = get_settings().max_schema_depth
    stack = [(schema, 1)]
    while stack:
        value, depth = stack.pop()
        if not isinstance(value, (dict, list)):
            continue
        if depth > limit:
            raise ConstraintError(f"the JSON schema is nested more than {limit} levels deep (objects and arrays, "
                                  "REDRAFT_MAX_SCHEMA_DEPTH); flatten it (fewer objects and arrays inside each other)",
                                  code="constraint_too_large")
        stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))


# Estimated byte-automaton states per character class (measured with outlines-core's byte DFA for one character):
# Unicode \w / \W ~316, \d / \D ~25-30, any other class with non-ASCII members (., [^"], \s) <= 8; ASCII-only 1.
_WIDE = {sre.CATEGORY_WORD: 320, sre.CATEGORY_NOT_WORD: 320, sre.CATEGORY_UNI_WORD: 320,
         sre.CATEGORY_UNI_NOT_WORD: 320, sre.CATEGORY_DIGIT: 30, sre.CATEGORY_NOT_DIGIT: 30,
         sre.CATEGORY_UNI_DIGIT: 30, sre.CATEGORY_UNI_NOT_DIGIT: 30}
_ANY_CHAR = 8
_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)


class _Over(Exception):
    """The estimate passed its budget (raised from deep in the walk, caught once at the top)."""


@dataclass
class _Walk:
    alternatives: int = 0
    max_alternatives: int = 0


def _class_weight(items: list) -> int:
    """A class is 1 state if it holds only ASCII, else its widest member's weight (a negated class holds non-ASCII)."""
    weights = [_WIDE.get(av, _ANY_CHAR) if op is sre.CATEGORY else
               _ANY_CHAR if op is sre.NEGATE or (op is sre.LITERAL and av > 127) or (op is sre.RANGE and av[1] > 127)
               else 1 for op, av in items]
    return max(weights, default=1)


def _estimate(items: Any, budget: int, walk: _Walk) -> int:
    """States of the automaton of ``items`` (a parsed sequence), roughly; ``_Over`` as soon as it passes ``budget``.

    A literal costs its UTF-8 length, a class its weight; a sequence or a branch is the sum of its parts; a
    repeat ``{m,n}`` is n (or m, at least 1, when unbounded) times its body, whose budget is divided by the
    same factor, so a nested repeat stops the walk before multiplying out."""
    total = 0
    for op, av in items:
        if op is sre.LITERAL:
            cost = len(chr(av).encode("utf-8", "surrogatepass"))
        elif op in (sre.NOT_LITERAL, sre.ANY):
            cost = _ANY_CHAR
        elif op is sre.IN:
            cost = _class_weight(av)
        elif op is sre.BRANCH:
            walk.alternatives += len(av[1])
            if walk.alternatives > walk.max_alternatives:
                raise ConstraintError(
                    f"the pattern has more than {walk.max_alternatives:,} alternatives (`|`, REDRAFT_MAX_ALTERNATIVES);"
                    " use a character class or fewer branches", code="constraint_too_large")
            cost = 0
            for branch in av[1]:
                cost += _estimate(branch, budget - total - cost, walk)
        elif op is sre.SUBPATTERN:
            cost = _estimate(av[-1], budget - total, walk)
        elif op is sre.ATOMIC_GROUP:
            cost = _estimate(av, budget - total, walk)
        elif op in (sre.ASSERT, sre.ASSERT_NOT):
            cost = _estimate(av[1], budget - total, walk)
        elif op is sre.GROUPREF_EXISTS:
            cost = sum(_estimate(part, budget - total, walk) for part in av[1:] if part is not None)
        elif op in _REPEATS:
            low, high, body = av
            factor = max(1, low if high == sre.MAXREPEAT else high)
            cost = factor * _estimate(body, (budget - total) // factor, walk)
        else:  # anchors, back-references: no states of their own
            cost = 0
        total += cost
        if total > budget:
            raise _Over
    return total


def check_pattern(pattern: str, *, generated: bool = False) -> None:
    """Refuse, before any construction, a pattern too long, with too many alternatives, or whose automaton would
    be too big (estimated from Python's parse of it). ``generated``: a regex outlines-core wrote for a schema; if
    Python's parser does not read it, the construction budgets alone guard it."""
    settings = get_settings()
    check_regex_length(pattern, "the regex of this JSON schema" if generated else "the regex")
    try:
        parsed = sre_parser.parse(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        if generated:
            return
        raise ConstraintError(f"invalid regex {shown(pattern)}: {exc}") from exc
    budget = settings.max_regex_states
    try:
        # A schema's regex spells its alternatives out (an optional property's suffixes, any-valued members):
        # they are bounded by its length, not by the limit set for the `|` a caller writes.
        _estimate(parsed, budget, _Walk(max_alternatives=len(pattern) if generated else settings.max_alternatives))
    except _Over:
        raise ConstraintError(
            f"regex {shown(pattern)} would compile to an automaton of more than ~{budget:,} states (estimated from "
            f"its repeats and classes; REDRAFT_MAX_REGEX_STATES): use smaller repeat counts (bounded repeats "
            "multiply: {0,50} inside {0,50} is 2,500 copies), ASCII classes ([A-Za-z0-9_] instead of \\w, [0-9] "
            "instead of \\d), or a shorter slot", code="constraint_too_large") from None
    except RecursionError as exc:
        raise ConstraintError(f"regex {shown(pattern)} is nested too deeply; flatten its groups",
                              code="constraint_too_large") from exc


# ---------------------------------------------------------------------------------------------- during construction

_slots_lock = threading.Lock()
_slots: threading.BoundedSemaphore | None = None


def _compile_slots() -> threading.BoundedSemaphore:
    global _slots
    with _slots_lock:
        if _slots is None:
            _slots = threading.BoundedSemaphore(get_settings().compile_concurrency)
        return _slots


def _child(conn, fn: Callable[..., T], args: tuple, memory_bytes: int, cpu_s: int) -> None:
    """In the forked child: cap the address space it may add and its CPU time, run ``fn``, send back one of
    ("ok", result), ("error", message, code) or ("memory", message)."""
    try:
        with open("/proc/self/statm") as f:
            size = int(f.read().split()[0]) * resource.getpagesize()  # the parent's mappings, inherited
        resource.setrlimit(resource.RLIMIT_AS, (size + memory_bytes, size + memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))  # a backstop should the parent die first
    except (OSError, ValueError):
        pass
    try:
        message: tuple = ("ok", fn(*args))
    except ConstraintError as exc:
        message = ("error", exc.message, exc.code)
    except MemoryError:
        message = ("memory", "")
    except Exception as exc:  # noqa: BLE001 - a bug or an unmapped outlines-core refusal: report it, not die
        message = ("error", f"the constraint could not be compiled: {type(exc).__name__}: {exc}", None)
    try:
        conn.send(message)
    except MemoryError:
        conn.send(("memory", ""))
    conn.close()


def run_bounded(fn: Callable[..., T], *args: Any, what: str) -> T:
    """``fn(*args)`` in a forked child, within ``compile_timeout_s`` of wall clock (then it is killed) and
    ``compile_memory_bytes`` of added address space; ConstraintError (422) naming the limit it passed.

    Forked, so the child inherits what the parent has built (the tokenizer's outlines-core vocabulary) and
    ``fn`` and its arguments need not be picklable; only the result travels back (keep it compact: arrays).
    At most ``compile_concurrency`` children per process at once; waiting for a slot counts against the
    same deadline (CompileBusy, 503, when none frees up in time).
    """
    settings = get_settings()
    timeout, memory = settings.compile_timeout_s, settings.compile_memory_bytes
    deadline = time.monotonic() + timeout
    slots = _compile_slots()
    if not slots.acquire(timeout=timeout):
        raise CompileBusy(f"every compile slot stayed busy for {timeout:g} s (REDRAFT_COMPILE_CONCURRENCY="
                          f"{settings.compile_concurrency}); retry in a few seconds")
    try:
        ctx = multiprocessing.get_context("fork")
        receiver, sender = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(sender, fn, args, memory, math.ceil(timeout) + 1),
                           daemon=not multiprocessing.current_process().daemon, name="redraft-compile")
        proc.start()
        sender.close()
        try:
            ready = receiver.poll(max(0.0, deadline - time.monotonic()))
            message = receiver.recv() if ready else None
        except EOFError:  # the child died without a word: killed by the memory limit (Rust aborts), or a signal
            message = ("died",)
        finally:
            if proc.is_alive():
                proc.kill()
            proc.join()
            receiver.close()
    finally:
        slots.release()
    if message is None:
        raise ConstraintError(f"compiling {what} took longer than {timeout:g} s (REDRAFT_COMPILE_TIMEOUT_S) and was "
                              "stopped; simplify it (fewer or smaller repeats and optional parts, ASCII classes, "
                              "shorter strings)", code="compile_timeout")
    if message[0] == "ok":
        return message[1]
    if message[0] == "error":
        raise ConstraintError(message[1], code=message[2]) if message[2] else ConstraintError(message[1])
    signalled = f" (signal {signal.Signals(-proc.exitcode).name})" if proc.exitcode and proc.exitcode < 0 else ""
    if message[0] == "died" and proc.exitcode not in (-signal.SIGABRT, -signal.SIGKILL):  # not how memory runs out
        raise ConstraintError(f"the process compiling {what} died{signalled or f' (exit {proc.exitcode})'}; "
                              "simplify the target, or report it if it keeps happening", code="compile_failed")
    raise ConstraintError(f"compiling {what} needed more than {_mib(memory)} of memory{signalled} "
                          "(REDRAFT_COMPILE_MEMORY_BYTES) and was stopped; simplify it (fewer states: smaller "
                          "repeats, ASCII classes, fewer optional parts)", code="compile_memory")


def _mib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


# ---------------------------------------------------------------------------------------------- compile time


@dataclass
class CompileClock:
    """Seconds spent compiling automata (cache misses, refused ones included) in a :func:`compile_clock` block."""

    seconds: float = 0.0
    compiles: int = 0


_clock: ContextVar[CompileClock | None] = ContextVar("redraft_compile_clock", default=None)


@contextmanager
def compile_clock() -> Iterator[CompileClock]:
    """Measure the compile time a block causes, e.g. to charge it to a tenant::

        with compile_clock() as clock:
            canvas = compile_request(...)
        charge(tenant, clock.seconds)

    Context-local (a ContextVar), so concurrent requests each see their own; ``run_in_threadpool`` copies the
    context, so a clock opened in an async route also counts the compiles of the thread it awaits. A compile
    that fails or times out is counted too: its time was spent."""
    clock = CompileClock()
    token = _clock.set(clock)
    try:
        yield clock
    finally:
        _clock.reset(token)


@contextmanager
def timed_compile() -> Iterator[None]:
    """Add the block's duration to the current :func:`compile_clock`, if any (used by constraints.automaton)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        clock = _clock.get()
        if clock is not None:
            clock.seconds += time.perf_counter() - start
            clock.compiles += 1


# ---------------------------------------------------------------------------------------------- the DP's memory


def dp_step_bytes(n_positions: int, n_class_tokens: int, n_pairs: int, n_states: int, max_committed: int) -> int:
    """Peak bytes of the slot decoder (``redraft.workers.slot_decoder.best_paths``) for one slot of ``n_positions``
    over an automaton whose token classes hold ``n_class_tokens`` entries in all (M), with ``n_pairs`` (source,
    destination) pairs (P), ``n_states`` states and at most ``max_committed`` moves at a committed position (R:
    ``TokenAutomaton.max_committed_moves``; the automaton's own caches, the pairs and the (S, V) table, are counted
    once by the compile cache, not here):

    - ``10 * n * M``: each free position's log-probabilities at the classes' tokens (n, M) float32 (or the free rows
      first, when that copy is the smaller), and at the end the scores picking each path token within its class;
    - ``n * max(8 * P, 48 * R)``: a free position's move scores (P + F + 1 float64), or a committed position's moves
      as flat (source, destination) int64 indices (at most R: on the host, their concatenation, and on the device);
    - ``72 * P``: per position, the candidate scores, the flat move indices and their temporaries;
    - ``24 * (n + 1) * (S + 1)``: the scores of every prefix (n+1, S+1) float64, their copy on the host for the way
      back, and the endings' moves.

    The decoder decodes the slots of one automaton in chunks whose slots, each counted at the chunk's longest one
    (and with any deferred copy of its logits), stay within ``max_dp_bytes`` together.
    """
    n = n_positions
    return (10 * n * n_class_tokens + n * max(8 * n_pairs, 48 * max_committed) + 72 * n_pairs
            + 24 * (n + 1) * (n_states + 1))


def require_dp_fits(pattern: str, n_positions: int, n_class_tokens: int, n_pairs: int, n_states: int,
                    max_committed: int, min_tokens: int) -> None:
    """ConstraintError (422) when a slot of ``n_positions`` would need more than ``max_dp_bytes`` per step; the
    message says how many positions would fit, or that the pattern itself is too wide."""
    limit = get_settings().max_dp_bytes
    need = dp_step_bytes(n_positions, n_class_tokens, n_pairs, n_states, max_committed)
    if need <= limit:
        return
    fixed = dp_step_bytes(0, n_class_tokens, n_pairs, n_states, max_committed)
    per_position = dp_step_bytes(1, n_class_tokens, n_pairs, n_states, max_committed) - fixed
    fits = max(0, (limit - fixed) // per_position)
    how = (f"give at most max_tokens={fits}" if fits >= max(1, min_tokens)
           else "simplify the pattern (fewer states that admit most tokens: shorter free-text parts, narrower classes)")
    raise ConstraintError(
        f"a slot of {n_positions} tokens under {shown(pattern)} needs {need / 2**30:.2f} GiB per denoising step "
        f"({n_positions} positions x {n_class_tokens:,} token-class entries and {n_pairs:,} state pairs), over the "
        f"{limit / 2**30:.2f} GiB budget "
        f"(REDRAFT_MAX_DP_BYTES); {how}", code="constraint_too_large")
