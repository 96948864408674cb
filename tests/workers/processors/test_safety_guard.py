"""The safety guard through the sampler: no banned phrase or PII in model-written text, whatever the
model wants, on the tiny random model and the shipped one; and its parts (contexts, masks, the
same-step check) against literal readings of their definitions."""

from __future__ import annotations

import dataclasses
import re

import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from redraft.constraints.canvas import Canvas, CanvasBuilder
from redraft.constraints.infill import compile_infill, parse_text
from redraft.constraints.safety import (
    SafetyTargets,
    find_violations,
    parse_safety,
    split_pending,
    text_guard,
    token_table,
)
from redraft.families import special_ids, token_bytes
from redraft.workers.processors.forbid_tokens import ForbidTokens
from redraft.workers.processors.safety_guard import CanvasText, SafetyGuard
from redraft.workers.sampler import SamplerConfig, denoise

# ---------------------------------------------------------------------------------------------- helpers


def encode1(tokenizer, text: str) -> int:
    (only,) = tokenizer.encode(text, add_special_tokens=False).ids
    return only


def byte_token(tokenizer, b: int) -> int:
    """The id of the single-byte token for byte ``b`` (a partial UTF-8 sequence when b >= 0x80)."""
    return next(i for i in range(5, 300) if token_bytes(tokenizer, i) == bytes([b]))


def naive_context(canvas: Canvas, x: list[int], position: int, tokenizer, info) -> tuple[str, str, bytes, bytes]:
    """The known runs either side of ``position``, unbounded, read off the canvas's units literally."""
    units: list[tuple[int, int | str]] = []  # (slot or -1, position or fixed text)
    for piece in canvas.pieces:
        if isinstance(piece, str):
            units.append((-1, piece))
        else:
            units += [(piece, p) for p in canvas.slot_positions(piece)]
    at = units.index((canvas.slot_of[position], position))

    def known(u):
        return u[0] < 0 or x[u[1]] != info.mask_id

    def data(u):
        t = x[u[1]]
        return b"" if t in special_ids(info) or t == info.empty_id else token_bytes(tokenizer, t)

    def groups(run):  # fixed text, or the joined bytes of consecutive tokens of one slot
        out: list[tuple[int, str | bytes]] = []
        for u in run:
            if u[0] < 0:
                out.append((-1, u[1]))
            elif out and out[-1][0] == u[0]:
                out[-1] = (u[0], out[-1][1] + data(u))
            else:
                out.append((u[0], data(u)))
        return out

    i = at
    while i > 0 and known(units[i - 1]):
        i -= 1
    left = groups(units[i:at])
    j = at + 1
    while j < len(units) and known(units[j]):
        j += 1
    right = groups(units[at + 1 : j])
    slot = canvas.slot_of[position]
    left_bytes = right_bytes = b""
    if left and left[-1][0] == slot:
        text, left_bytes = split_pending(left[-1][1])
        left[-1] = (-1, text)
    if right and right[0][0] == slot:
        n = len(right[0][1]) - len(right[0][1].lstrip(bytes(range(0x80, 0xC0))))
        right_bytes = right[0][1][:n]
        right[0] = (slot, right[0][1][n:])
    render = lambda gs: "".join(g if isinstance(g, str) else g.decode("utf-8", "replace") for _, g in gs)
    return render(left), render(right), left_bytes, right_bytes


def fixed_spans(canvas: Canvas, values: list[str]) -> list[tuple[int, int]]:
    spans, at = [], 0
    for piece in canvas.pieces:
        n = len(piece) if isinstance(piece, str) else len(values[piece])
        if isinstance(piece, str):
            spans.append((at, at + n))
        at += n
    return spans


@st.composite
def canvas_states(draw, tokenizer, info, long: bool = False):
    """A canvas (adjacent fixed pieces and adjacent slots included) and a partly denoised state of it."""
    builder = CanvasBuilder(tokenizer, dataclasses.replace(info, context_length=100_000))
    words = ["the ", "bo", "a\n", "Email me at ", "x@", " 555 12", "  ", "über ", "é"]
    for _ in range(draw(st.integers(1, 3))):
        for _ in range(draw(st.integers(0, 2))):
            builder.text(draw(st.sampled_from(words)) * (draw(st.integers(20, 150)) if long else 1))
        builder.slot("s", draw(st.integers(1, 120 if long else 5)))
    builder.text(draw(st.sampled_from(["", " end", "mb", "@y"])))
    canvas = builder.build()
    pool = [info.mask_id, info.empty_id] + [encode1(tokenizer, s) for s in [" cat", " ", "\n", "mb", "bo", " the",
                                                                           "@", "12", "-", " word"]]
    pool += [byte_token(tokenizer, b) for b in (0xE2, 0x82, 0xAC, 0xC3, 0xA9)]
    fill = st.sampled_from(pool[1:] if long else pool)
    x = [t if canvas.fixed[i] else draw(fill) for i, t in enumerate(canvas.token_ids)]
    if long:  # a few masks, so that the known runs around them are long
        free = [p for p in range(len(x)) if not canvas.fixed[p]]
        for p in draw(st.lists(st.sampled_from(free), min_size=1, max_size=4)):
            x[p] = info.mask_id
    masked = [p for p, t in enumerate(x) if t == info.mask_id and not canvas.fixed[p]]
    return canvas, x, masked


targets_all = parse_safety({"banned": ["bomb", "the cat", "bad"], "pii": True})

# ---------------------------------------------------------------------------------------------- parts


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_context_is_the_known_runs_of_units(tiny_model, data):
    info, tokenizer = tiny_model
    canvas, x, masked = data.draw(canvas_states(tokenizer, info))
    guard = text_guard(targets_all, tokenizer)
    text = CanvasText(canvas, guard, info.mask_id)
    for p in masked:
        assert text.context(x, p) == naive_context(canvas, x, p, tokenizer, info)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bounded_contexts_give_the_same_answer(tiny_model, data):
    info, tokenizer = tiny_model
    canvas, x, masked = data.draw(canvas_states(tokenizer, info, long=True))
    guard = text_guard(targets_all, tokenizer)
    text = CanvasText(canvas, guard, info.mask_id)
    for p in data.draw(st.lists(st.sampled_from(masked), max_size=6)) if masked else []:
        bounded = text.context(x, p)
        full = naive_context(canvas, x, p, tokenizer, info)
        assert bounded[2:] == full[2:]
        assert full[0].endswith(bounded[0]) and full[1].startswith(bounded[1])
        assert guard.forbidden(*bounded[:2], left_bytes=bounded[2], right_bytes=bounded[3]) == \
            guard.forbidden(*full[:2], left_bytes=full[2], right_bytes=full[3])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mask_is_forbidden_at_every_masked_slot_position_and_nothing_else(tiny_model, data):
    info, tokenizer = tiny_model
    canvas, x, masked = data.draw(canvas_states(tokenizer, info))
    guard = text_guard(targets_all, tokenizer)
    proc = SafetyGuard({0: (canvas, guard)}, info)
    xt = torch.tensor([x])
    free = (xt == info.mask_id) & ~torch.tensor([canvas.fixed])  # (1, L)
    logits = proc(torch.zeros(1, len(x), info.vocab_size), xt, free, [0])
    for p in range(len(x)):
        got = torch.isinf(logits[0, p]).nonzero().squeeze(1).tolist()
        if p in masked:
            left, right, lb, rb = naive_context(canvas, x, p, tokenizer, info)
            assert got == guard.forbidden(left, right, left_bytes=lb, right_bytes=rb)
        else:
            assert got == []
    assert proc(torch.zeros(1, len(x), info.vocab_size), xt, free, [1]).eq(0).all()  # not its row
    # A model with more logits than the tokenizer has tokens (padding rows): those are never written.
    wide = proc(torch.zeros(1, len(x), info.vocab_size + 8), xt, free, [0])[0, :, info.vocab_size:]  # (L, 8)
    assert all(bool(torch.isinf(wide[p]).all()) == (p in masked) for p in range(len(x)))
    assert all(not proc.admissible(0, xt[0], p, info.vocab_size + 3) for p in masked)


def test_admissible_stops_neighbours_committed_in_one_step(tiny_model):
    """Each letter alone is harmless, so the step's mask forbids none; written together in one step they
    would spell the phrase. Only ``admissible`` (which sees the step's earlier commits) can stop that."""
    info, tokenizer = tiny_model
    canvas = compile_infill(parse_text("It was a [[gap:4]]!", 16, 64), tokenizer, info)
    gap = canvas.slot_positions(0)
    want = [encode1(tokenizer, c) for c in "bomb"]

    def logits_fn(ids, attn):
        out = torch.zeros(ids.shape[0], ids.shape[1], info.vocab_size)
        for p, t in zip(gap, want):
            out[:, p, t] = 30.0 - p * 0.1  # confident, so all four commit in the first step
        return out

    guard = SafetyGuard.for_canvas(canvas, SafetyTargets(("bomb",)), tokenizer, info)

    class MaskOnly:  # the same masks without the same-step check
        def __call__(self, *args, **kwargs):
            return guard(*args, **kwargs)

    def run(proc):
        out = denoise(logits_fn, torch.tensor([canvas.token_ids]), torch.tensor([canvas.fixed]), info.mask_id,
                      SamplerConfig(steps=1), [torch.Generator().manual_seed(0)],
                      [ForbidTokens(special_ids(info), info.vocab_size), proc])
        return canvas.render(out.tokens[0].tolist(), tokenizer, info)[0], out.history[0]

    leaked, history = run(MaskOnly())
    assert "bomb" in leaked and len(history[0].positions) == 4
    text, history = run(guard)
    assert "bomb" not in text.lower() and len(history[0].positions) == 3  # the last waited for a later step


# ---------------------------------------------------------------------------------------------- end to end

BANNED = ["bomb", "kill", "the cat", "hate speech", "bad", "and"]
LEADS = ["He built a ", "I will ", "They said: ", "Note -", "", "THE CAT SAT. "]


@st.composite
def jobs(draw):
    """(text with gaps, safety object): cases built to invite a violation."""
    kind = draw(st.sampled_from(["prefix", "suggest", "between", "pii"]))
    n = draw(st.integers(1, 10))
    if kind == "prefix":  # the fixed text ends with a phrase's beginning, right before the gap
        phrase = draw(st.sampled_from(BANNED))
        start = phrase[: draw(st.integers(1, len(phrase) - 1))]
        start = draw(st.sampled_from([start, start.upper(), start.title()]))
        text = draw(st.sampled_from(LEADS)) + start + f"[[gap:{n}]]" + draw(st.sampled_from(["", " today.", "!"]))
        return text, {"banned": [phrase]}
    if kind == "suggest":  # the context all but says the phrase (the user's own copies are not violations)
        phrase = draw(st.sampled_from(BANNED))
        text = f"{phrase}, {phrase.upper()}, {phrase} and {phrase}: [[gap:{n}]] {phrase} [[gap:{n}]]."
        return text, {"banned": [phrase, "the"]}
    if kind == "between":  # only what the gap holds (EMPTY included) decides
        text = draw(st.sampled_from(["ba[[gap:1]]d", "b[[gap:2]]mb", "the c[[gap:1]]t", "ki[[gap:2]]ll.",
                                     "hate [[gap:1]]speech", "bad[[gap:2]]word"]))
        return text, {"banned": ["bad", "bomb", "the cat", "kill", "hate speech", "bad word"]}
    text = draw(st.sampled_from([f"Email me at [[gap:{n + 4}]] today.", f"Call me on [[gap:{n + 6}]].",
                                 f"My card number is [[gap:{n + 12}]].",
                                 "Reach me at jo@[[gap:6]] or +1 (555) [[gap:8]]",
                                 "Card: 4111 1111 1111 [[gap:6]]", "[[gap:8]]@example.com"]))
    return text, {"pii": draw(st.sampled_from([True, ["email"], ["phone"], ["card"], ["phone", "card"]]))}


class Push:
    """Makes the model want the tokens a violation is made of: every token that is a piece of a banned
    phrase (longer pieces more) or, for PII, holds a digit or "@" gets up to ``strength`` added to its
    logit (half when it starts with a space, so that pieces also run on without one)."""

    def __init__(self, targets: SafetyTargets, tokenizer, strength: float, vocab: int) -> None:
        self.boost = torch.zeros(vocab)  # (V,)
        for i, n in enumerate(token_table(tokenizer).norm):
            piece = n.strip(" ")
            share = max([len(piece) / len(p) for p in targets.banned if piece and piece in p], default=0.0)
            if targets.pii and re.search(r"[\d@]", n):
                share = 1.0
            self.boost[i] = strength * share / (2 if n.startswith(" ") else 1)

    def __call__(self, logits, x, free, rows, offset=0):
        return logits + self.boost


configs = st.builds(SamplerConfig, steps=st.integers(1, 8), block_size=st.sampled_from([None, 2, 5]),
                    temperature=st.sampled_from([0.0, 1.0]), remask_budget=st.sampled_from([0, 3]),
                    remask_below=st.just(0.9), threshold=st.sampled_from([None, None, 0.3, 0.9]))


def fill(adapter, tokenizer, text: str, safety: dict, cfg: SamplerConfig, strength: float, seed: int,
         guarded: bool = True):
    info = adapter.info
    targets = parse_safety(safety)
    canvas = compile_infill(parse_text(text, 8, 64), tokenizer, info)
    procs = [ForbidTokens(special_ids(info), info.vocab_size), Push(targets, tokenizer, strength, info.vocab_size)]
    if guarded:
        procs.append(SafetyGuard.for_canvas(canvas, targets, tokenizer, info))
    x = torch.tensor([canvas.token_ids])
    fixed = torch.tensor([canvas.fixed])
    out = denoise(adapter.logits, x, fixed, info.mask_id, cfg, [torch.Generator().manual_seed(seed)], procs)
    tokens = out.tokens[0].tolist()
    rendered, values = canvas.render(tokens, tokenizer, info)
    assert torch.equal(out.tokens[fixed], x[fixed])  # fixed text never changes
    assert info.mask_id not in tokens  # no mask left
    return rendered, find_violations(rendered, targets, fixed_spans(canvas, values))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(job=jobs(), cfg=configs, strength=st.sampled_from([0.0, 6.0, 30.0]), seed=st.integers(0, 2**31))
@example(job=("He built a bo[[gap:3]]", {"banned": ["bomb"]}), cfg=SamplerConfig(steps=3), strength=30.0, seed=0)
@example(job=("ba[[gap:1]]d", {"banned": ["bad"]}), cfg=SamplerConfig(steps=1), strength=30.0, seed=0)
@example(job=("Email me at [[gap:12]]", {"pii": True}), cfg=SamplerConfig(steps=4), strength=30.0, seed=0)
def test_no_violation_ever_reaches_the_text(any_adapter, tiny_model, job, cfg, strength, seed):
    _, tokenizer = tiny_model
    text, safety = job
    rendered, violations = fill(any_adapter, tokenizer, text, safety, cfg, strength, seed)
    assert violations == [], rendered


def test_the_cases_do_invite_violations(any_adapter, tiny_model):
    """Without the guard such cases leak (so the property above is not vacuous); with it they do not."""
    _, tokenizer = tiny_model
    cases = [("He built a bo[[gap:3]]", {"banned": ["bomb"]}), ("ki[[gap:2]]ll.", {"banned": ["kill"]}),
             ("Email me at jo@[[gap:6]]", {"pii": ["email"]}), ("Call me on [[gap:14]].", {"pii": ["phone"]}),
             ("My card number is [[gap:24]].", {"pii": ["card"]})]
    leaked = 0
    for text, safety in cases:
        for seed in range(2):
            cfg = SamplerConfig(steps=4, temperature=1.0)
            leaked += bool(fill(any_adapter, tokenizer, text, safety, cfg, 30.0, seed, guarded=False)[1])
            rendered, violations = fill(any_adapter, tokenizer, text, safety, cfg, 30.0, seed)
            assert violations == [], rendered
    assert leaked >= len(cases)
