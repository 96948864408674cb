"""Revisions: regions from spans / auto / targets, the canvas that rewrites them, and the layout they leave."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.constraints.revise import (
    Region,
    auto_regions,
    carry_layout,
    compile_revision,
    merge,
    revision_edits,
    span_regions,
    target_regions,
)
from redraft.errors import ConstraintError, InvalidRequest
from redraft.families import special_ids
from redraft.workers.processors.forbid_tokens import ForbidTokens
from redraft.workers.sampler import SamplerConfig, denoise

SOURCE = "Is Paris the capital of France? No. Paris is the capital and largest city of France."

ranges = st.lists(st.tuples(st.integers(0, len(SOURCE)), st.integers(0, 12)), min_size=1, max_size=4)


def rewrite(adapter, tokenizer, text, regions, seed=0, layout=None):
    """Compile, denoise with the given adapter and render: (new text, canvas, kept, regions, new layout)."""
    canvas, kept, merged = compile_revision(text, regions, tokenizer, adapter.info)
    x = torch.tensor([canvas.token_ids])
    fixed = torch.tensor([canvas.fixed])
    out = denoise(adapter.logits, x, fixed, adapter.info.mask_id, SamplerConfig(steps=4),
                  [torch.Generator().manual_seed(seed)], [ForbidTokens(special_ids(adapter.info), 8192)])
    new, _, rendered = canvas.render_layout(out.tokens[0].tolist(), out.confidence[0].tolist(), tokenizer,
                                            adapter.info)
    return new, canvas, kept, merged, carry_layout(layout, kept, canvas, rendered)


@settings(max_examples=25, deadline=None)
@given(spans=ranges, seed=st.integers(0, 1000))
def test_a_revision_never_changes_a_character_outside_the_regions(any_adapter, spans, seed):
    tokenizer = any_adapter_tokenizer(any_adapter)
    regions = [Region(min(a, len(SOURCE)), min(a + n, len(SOURCE)), 3, "span") for a, n in spans]
    new, canvas, kept, merged, layout = rewrite(any_adapter, tokenizer, SOURCE, regions, seed)
    # Cut the rewritten slots out of the new text: what is left is the source minus the regions, piece by piece.
    slots = layout["slots"]
    assert len(slots) == len(merged)
    at, rest = 0, []
    for s in slots:
        rest.append(new[at : s["start"]])
        at = s["end"]
    rest.append(new[at:])
    source_rest, at = [], 0
    for r in merged:
        source_rest.append(SOURCE[at : r.start])
        at = r.end
    source_rest.append(SOURCE[at:])
    assert rest == source_rest
    assert "[MASK]" not in new


def any_adapter_tokenizer(adapter):
    from redraft.families import load_tokenizer

    return load_tokenizer(adapter.info.path)


written_layouts = st.lists(st.tuples(st.integers(1, 6), st.floats(0, 1), st.booleans()), min_size=1, max_size=30)


def layout_from(parts):
    """A layout over a synthetic text: tokens of the given lengths, touching or separated by one space."""
    written, at = [], 0
    for length, conf, gap_after in parts:
        written.append([at, at + length, round(conf, 6)])
        at += length + (1 if gap_after else 0)
    return {"written": written, "slots": []}, at


@settings(max_examples=200, deadline=None)
@given(parts=written_layouts, below=st.floats(0.01, 1.0))
def test_auto_remasks_exactly_the_tokens_below_the_threshold(parts, below):
    layout, _ = layout_from(parts)
    regions = auto_regions(layout, {"confidence_below": below})
    covered = {c for r in regions for c in range(r.start, r.end)}
    expected = {c for s, e, conf in layout["written"] if conf < below for c in range(s, e)}
    assert covered == expected
    assert sum(r.max_tokens for r in regions) == sum(1 for *_, conf in layout["written"] if conf < below)


@settings(max_examples=100, deadline=None)
@given(parts=written_layouts, k=st.integers(1, 40))
def test_auto_least_confident_takes_the_k_lowest(parts, k):
    layout, _ = layout_from(parts)
    regions = auto_regions(layout, {"least_confident": k})
    chosen = sorted(layout["written"], key=lambda w: (w[2], w[0]))[:k]
    assert {c for r in regions for c in range(r.start, r.end)} == {c for s, e, _ in chosen for c in range(s, e)}


def test_auto_needs_a_draft_with_confidences():
    with pytest.raises(InvalidRequest, match="only for text Redraft wrote"):
        auto_regions(None, {"confidence_below": 0.5})


def test_carried_confidences_point_at_the_same_text(tiny_adapter, tiny_model):
    _, tokenizer = tiny_model
    words = SOURCE.split(" ")
    written, at = [], 0
    for w in words:  # every word "written" with some confidence
        written.append([at, at + len(w), 0.5])
        at += len(w) + 1
    regions = [Region(32, 35, 2, "span")]  # "No."
    new, canvas, kept, merged, layout = rewrite(tiny_adapter, tokenizer, SOURCE, regions,
                                                layout={"written": written, "slots": []})
    old_texts = {SOURCE[s:e] for s, e, _ in written if e <= 32 or s >= 35}
    carried = [new[s:e] for s, e, c in layout["written"] if c == 0.5]
    assert sorted(carried) == sorted(SOURCE[s:e] for s, e, _ in written if e <= 32 or s >= 35)
    assert set(carried) <= old_texts


def test_spans_are_checked_and_sized(tiny_model):
    _, tokenizer = tiny_model
    (r,) = span_regions(SOURCE, [{"start": 32, "end": 34}], tokenizer, 16, 64)
    assert (r.start, r.end, r.max_tokens) == (32, 34, 1)
    (ins,) = span_regions(SOURCE, [{"start": 5, "end": 5}], tokenizer, 16, 64)
    assert ins.max_tokens == 16  # an insertion point gets the default gap size
    with pytest.raises(InvalidRequest, match="outside the text"):
        span_regions(SOURCE, [{"start": 10, "end": 500}], tokenizer, 16, 64)
    with pytest.raises(InvalidRequest, match="at most 4"):
        span_regions(SOURCE, [{"start": 0, "end": 80}], tokenizer, 16, 4)


def test_targets_rewrite_only_where_they_do_not_hold(tiny_model):
    info, tokenizer = tiny_model
    text = "Date: 2024-13-45. Code: 12345."
    layout = {"written": [], "slots": [{"name": "code", "start": 24, "end": 29}]}
    regions = target_regions(text, layout, [
        {"span": {"start": 6, "end": 16}, "regex": r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"},
        {"slot": "code", "regex": r"\d{5}"},
    ], tokenizer, info, 16, 64)
    assert [(r.start, r.end, r.reason) for r in regions] == [(6, 16, "target")]
    assert regions[0].target[0] == "regex"
    with pytest.raises(InvalidRequest, match="no slot 'nope'"):
        target_regions(text, layout, [{"slot": "nope", "regex": "x"}], tokenizer, info, 16, 64)


def test_overlapping_regions_merge_and_conflicting_targets_are_refused():
    merged = merge([Region(0, 5, 2, "span"), Region(3, 9, 4, "auto"), Region(20, 22, 1, "auto")])
    assert [(r.start, r.end, r.max_tokens, r.reason) for r in merged] == [(0, 9, 4, "span+auto"), (20, 22, 1, "auto")]
    with pytest.raises(ConstraintError, match="overlap"):
        merge([Region(0, 5, 2, "target", ("regex", "a")), Region(3, 9, 4, "target", ("regex", "b"))])


def test_a_structure_target_holds_after_the_rewrite(tiny_adapter, tiny_model):
    from redraft.constraints.automaton import accepts, compile_target
    from redraft.workers.processors.slot_targets import SlotTargets, constrained_slots

    info, tokenizer = tiny_model
    text = "Delivery date: soon, we hope."
    (region,) = target_regions(text, None, [{"span": {"start": 15, "end": 19}, "regex": r"\d{4}-\d{2}-\d{2}"}],
                               tokenizer, info, 16, 64)
    canvas, kept, merged = compile_revision(text, [region], tokenizer, info)
    special = special_ids(info)
    procs = [ForbidTokens(special, 8192), SlotTargets({0: constrained_slots(canvas, tokenizer, info, special)},
                                                      info.empty_id)]
    out = denoise(tiny_adapter.logits, torch.tensor([canvas.token_ids]), torch.tensor([canvas.fixed]), info.mask_id,
                  SamplerConfig(steps=6), [torch.Generator().manual_seed(1)], procs)
    new, values = canvas.render(out.tokens[0].tolist(), tokenizer, info)
    assert new.startswith("Delivery date: ") and new.endswith(", we hope.")
    automaton = compile_target(region.target, tokenizer, info.eos_id, set(special))
    assert accepts(automaton, tokenizer.encode(values[0], add_special_tokens=False).ids)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), source=st.text("ab .", max_size=24))
def test_edits_name_only_the_regions_whose_text_changed(data, source):
    cuts = sorted(data.draw(st.lists(st.integers(0, len(source)), max_size=8)))
    regions = [Region(a, b, 3, "span") for a, b in zip(cuts[::2], cuts[1::2])]
    values = [data.draw(st.sampled_from([source[r.start:r.end], source[r.start:r.end] + "x", "", "ab"]))
              for r in regions]
    edits = revision_edits(source, regions, values)

    def apply(changes):
        out, at = "", 0
        for start, end, new in changes:
            out, at = out + source[at:start] + new, end
        return out + source[at:]

    assert all(e["old"] == source[e["start"]:e["end"]] != e["new"] for e in edits)
    assert apply((e["start"], e["end"], e["new"]) for e in edits) == apply(
        (r.start, r.end, v) for r, v in zip(regions, values))  # what was left out changed nothing
    assert edits or apply((r.start, r.end, v) for r, v in zip(regions, values)) == source  # none: nothing changed
