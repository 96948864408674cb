"""The `avoid` loop of a job: score written spans, re-mask the hot ones, down-weight what they held, repeat."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.constraints.infill import compile_infill, parse_text
from redraft.settings import get_settings
from redraft.workers.drafting import Drafting
from redraft.workers.steps import MemorySink

PROMPT = "The weather today is [[gap:10]] and tomorrow it will be [[gap:10]]."


class LetterScorer:
    """A scorer plug-in (the TopicScorer protocol): a span's score for topic "letter X" is the share of
    its letters that are X. Deterministic and cheap, so the loop's bookkeeping can be checked exactly."""

    name = "letters"

    def score(self, texts: list[str], topics: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), len(topics))
        for i, text in enumerate(texts):
            letters = [c for c in text.lower() if c.isalpha()] or [""]
            for j, topic in enumerate(topics):
                out[i, j] = sum(c == topic[-1] for c in letters) / len(letters)
        return out


def run(adapter, tokenizer, params, scorer=None):
    canvas = compile_infill(parse_text(PROMPT, 16, 256), tokenizer, adapter.info)
    sink = MemorySink(tokenizer)
    drafting = Drafting(adapter, canvas, params, sink, get_settings(), scorer=scorer)
    text, extra, layout, _ = drafting.run("infill")
    return text, extra, sink, drafting


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), threshold=st.sampled_from([0.05, 0.1, 0.2]), rounds=st.integers(1, 3))
def test_hot_spans_are_rewritten_within_the_round_budget(tiny_adapter, tiny_model, seed, threshold, rounds):
    _, tokenizer = tiny_model
    params = {"steps": 6, "seed": seed, "temperature": 1.0,
              "safety": {"avoid": ["letter e", "letter a"], "avoid_threshold": threshold, "avoid_rounds": rounds}}
    text, extra, sink, drafting = run(tiny_adapter, tokenizer, params, LetterScorer())
    history = extra["safety_rounds"]
    assert 1 <= len(history) <= rounds + 1
    for r, entry in enumerate(history):
        assert entry["round"] == r
        assert all(span["score"] > threshold for span in entry["rewritten"])
        hot = bool(entry["rewritten"])
        if r < len(history) - 1:
            assert hot, "a new round only follows a round with spans above the threshold"
    last = history[-1]
    assert not last["rewritten"] or len(history) == rounds + 1
    assert text.startswith("The weather today is") and text.endswith(".")
    # each rewrite starts with a boundary step that re-masks exactly the positions written again after it
    boundaries = [i for i, (committed, remasked) in enumerate(sink.steps) if not committed]
    assert len(boundaries) == len(history) - 1
    for b in boundaries:
        remasked = {p for p, _ in sink.steps[b][1]}
        rewritten = {p for committed, _ in sink.steps[b + 1 :] for p, *_ in committed}
        assert remasked <= rewritten
    # the tokens a hot span held are down-weighted where they stood
    for b in boundaries:
        for p, token in sink.steps[b][1]:
            if token != tiny_adapter.info.empty_id:
                assert token in drafting.down.tokens[p]


def test_the_packaged_embedding_scorer_records_every_round(tiny_adapter, tiny_model):
    _, tokenizer = tiny_model
    params = {"steps": 4, "seed": 1, "safety": {"avoid": ["the weather forecast"], "avoid_threshold": 0.01,
                                                "avoid_rounds": 2}}
    text, extra, sink, _ = run(tiny_adapter, tokenizer, params)  # settings.safety_scorer: "embedding"
    history = extra["safety_rounds"]
    assert [h["round"] for h in history] == list(range(len(history))) and 1 <= len(history) <= 3
    assert all(0.0 <= h["mean_score"] <= h["max_score"] <= 1.0 for h in history)
