"""The tokenised corpus (``prepare``), window sampling and the MDLM masking objective with gap training."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from redraft.errors import TrainingError
from redraft.training.corpus import SOURCES
from redraft.training.data import SOURCE_WEIGHTS, SpecialIds, Streams, mdlm_batch, pack, prepare, unpack
from redraft.training.tokenizer import save_tokenizer, train_tokenizer

SPECIAL = SpecialIds(pad=0, mask=1, bos=2, eos=3, empty=4)


def split_stream(stream: torch.Tensor, special: SpecialIds) -> list[list[int]]:
    """The documents of a flat ``[BOS] tokens [EOS] [BOS] ...`` stream."""
    docs, current = [], None
    for token in stream.tolist():
        if token == special.bos:
            assert current is None, "a document starts before the previous one ended"
            current = []
        elif token == special.eos:
            docs.append(current)
            current = None
        else:
            current.append(token)
    assert current is None, "the stream ends inside a document"
    return docs


def test_special_ids_come_from_the_tokenizer():
    tokenizer = train_tokenizer(["a few words", "a few more words"], vocab_size=300)
    assert SpecialIds.from_tokenizer(tokenizer) == SPECIAL


def test_prepare_writes_each_split_and_source_as_its_documents_between_bos_and_eos(tiny_corpus, tmp_path):
    prepare(tmp_path)
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer" / "tokenizer.json"))
    special = SpecialIds.from_tokenizer(tokenizer)
    stats = json.loads((tmp_path / "corpus_stats.json").read_text())
    texts = {}
    for split in ("train", "heldout"):
        for source in SOURCES:
            stream = torch.load(tmp_path / f"{split}_{source}.pt")
            assert stream.dtype == torch.int16
            decoded = [tokenizer.decode(ids, skip_special_tokens=False) for ids in split_stream(stream, special)]
            expected = [d.text for d in tiny_corpus if d.source == source and d.held_out == (split == "heldout")]
            assert decoded == expected and expected
            assert stats[f"{split}_{source}"] == {"documents": len(expected), "tokens": len(stream)}
            texts[split] = texts.get(split, set()) | set(decoded)
    assert not texts["train"] & texts["heldout"]  # no held-out document is ever in a training stream
    assert len(texts["train"]) + len(texts["heldout"]) == len(tiny_corpus)


def test_the_tokenizer_is_trained_on_training_documents_only(tiny_corpus, tmp_path, held_out_mark):
    assert all((held_out_mark in d.text) == d.held_out for d in tiny_corpus)
    prepare(tmp_path)
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer" / "tokenizer.json"))
    # the mark is frequent in held-out text: a tokenizer trained on it would have merged its two UTF-8 bytes
    assert len(tokenizer.encode(held_out_mark[0]).ids) == 2


def test_prepare_keeps_an_existing_tokenizer(tiny_corpus, tmp_path):
    """A warm start must keep the exported model's token ids, so an existing tokenizer is never retrained."""
    save_tokenizer(
        train_tokenizer(["only these words here", "only these words"], vocab_size=300), tmp_path / "tokenizer"
    )
    before = (tmp_path / "tokenizer" / "tokenizer.json").read_bytes()
    prepare(tmp_path)
    assert (tmp_path / "tokenizer" / "tokenizer.json").read_bytes() == before
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer" / "tokenizer.json"))
    first = split_stream(torch.load(tmp_path / "train_wiki.pt"), SPECIAL)[0]
    assert first == tokenizer.encode(tiny_corpus[0].text, add_special_tokens=False).ids


@pytest.fixture
def arange_streams(tmp_path):
    """Streams whose tokens are consecutive integers, each source in its own range: a window shows where it
    was cut from."""
    lengths = {"wiki": 3000, "chitchat": 500, "wordnet": 2000, "fortunes": 1000, "foldoc": 1500, "jargon": 800,
               "devil": 64, "kjv": 1200, "handbook": 900}  # devil: exactly one window's worth
    for k, source in enumerate(SOURCES):
        torch.save(
            torch.arange(k * 3500, k * 3500 + lengths[source], dtype=torch.int16), tmp_path / f"train_{source}.pt"
        )
    return Streams(tmp_path, "train"), lengths


def test_windows_are_contiguous_slices_drawn_with_the_source_weights(arange_streams):
    streams, lengths = arange_streams
    n, length = 4000, 64
    windows = streams.windows(n, length, torch.Generator().manual_seed(0))
    assert windows.shape == (n, length) and windows.dtype == torch.long
    assert torch.equal(windows - windows[:, :1], torch.arange(length).expand(n, length))  # contiguous
    source = windows[:, 0] // 3500
    offset = windows[:, 0] % 3500
    for k, name in enumerate(SOURCES):
        assert (offset[source == k] + length <= lengths[name]).all()  # never past the end of its stream
        if lengths[name] == length:  # a stream of exactly one window gives that window (its last start is drawn)
            assert (offset[source == k] == 0).all() and (source == k).any()
        # binomial standard deviation at n=4000 is under 0.008
        assert abs(float((source == k).float().mean()) - SOURCE_WEIGHTS[name]) < 0.03
    again = streams.windows(n, length, torch.Generator().manual_seed(0))
    assert torch.equal(windows, again)


def test_a_source_shorter_than_a_window_is_not_drawn_from(arange_streams):
    streams, lengths = arange_streams
    windows = streams.windows(2000, 65, torch.Generator().manual_seed(1))  # devil's 64 tokens hold no window
    assert not (windows[:, 0] // 3500 == list(SOURCES).index("devil")).any()
    with pytest.raises(TrainingError, match="no source has a stream of 4000 tokens"):
        streams.windows(1, 4000, torch.Generator().manual_seed(1))


def test_a_pack_restores_the_build_directory_it_was_made_from(tiny_corpus, tmp_path):
    prepare(tmp_path / "build")
    path = pack(tmp_path / "build", tmp_path / "corpus.pack")
    unpack(path, tmp_path / "copy")
    for original in sorted((tmp_path / "build").rglob("*")):
        if original.is_file():
            copy = tmp_path / "copy" / original.relative_to(tmp_path / "build")
            if original.suffix == ".pt":
                assert torch.equal(torch.load(copy), torch.load(original)), original.name
            elif original.suffix == ".json" and original.name != "tokenizer.json":
                assert json.loads(copy.read_text()) == json.loads(original.read_text()), original.name
    restored = Tokenizer.from_file(str(tmp_path / "copy" / "tokenizer" / "tokenizer.json"))
    made = Tokenizer.from_file(str(tmp_path / "build" / "tokenizer" / "tokenizer.json"))
    assert restored.get_vocab() == made.get_vocab()
    assert restored.encode(tiny_corpus[0].text).ids == made.encode(tiny_corpus[0].text).ids


def test_what_is_not_a_pack_or_not_a_build_directory_is_refused_with_the_command_that_makes_one(tmp_path):
    with pytest.raises(TrainingError, match="redraft train --prepare-only"):
        pack(tmp_path, tmp_path / "corpus.pack")
    torch.save({"format": 99}, tmp_path / "old.pack")
    with pytest.raises(TrainingError, match="not a corpus pack of format 1"):
        unpack(tmp_path / "old.pack", tmp_path / "build")


def random_windows(b: int, length: int, seed: int) -> torch.Tensor:
    """Token ids past the special ones, so a special id in an output was put there by the masking."""
    return torch.randint(5, 300, (b, length), generator=torch.Generator().manual_seed(seed))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 8), st.integers(30, 80), st.floats(0.0, 1.0))
def test_masked_positions_are_exactly_the_scored_ones(seed, b, length, gap_prob):
    x = random_windows(b, length, seed)
    inputs, targets, weights = mdlm_batch(x, SPECIAL, torch.Generator().manual_seed(seed), gap_prob=gap_prob)
    assert inputs.shape == targets.shape == weights.shape == (b, length)
    masked = inputs == SPECIAL.mask
    assert torch.equal(masked, weights > 0)
    assert torch.equal(inputs[~masked], targets[~masked])  # what is visible is the target itself
    assert not (targets == SPECIAL.mask).any()
    assert ((weights >= 1) | (weights == 0)).all() and (weights <= 1000).all()  # 1/t with t clamped at 1e-3
    assert torch.equal(x, random_windows(b, length, seed))  # the batch given is not changed in place


def test_without_gaps_each_row_masks_a_fraction_t_weighted_one_over_t():
    b, length = 2000, 64
    x = random_windows(b, length, 0)
    _inputs, targets, weights = mdlm_batch(x, SPECIAL, torch.Generator().manual_seed(1), gap_prob=0.0)
    assert torch.equal(targets, x)
    masked = weights > 0
    per_row = weights.max(1, keepdim=True).values
    assert ((weights == per_row) | ~masked).all()  # one weight per row: 1/t of that row
    # t ~ U(0, 1): half the positions are masked on average ...
    assert abs(float(masked.float().mean()) - 0.5) < 0.03
    # ... and the 1/t weights make the expected weighted count one per position (the MDLM ELBO's weighting)
    assert abs(float(weights.sum(1).mean()) / length - 1) < 0.1


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.integers(30, 80), st.integers(1, 12))
def test_a_gap_is_a_masked_span_then_empty_tokens_weighted_one(seed, length, max_empty):
    b = 4
    x = random_windows(b, length, seed)
    _, targets, weights = mdlm_batch(x, SPECIAL, torch.Generator().manual_seed(seed), gap_prob=1.0, max_empty=max_empty)
    for row in range(b):
        empty = (targets[row] == SPECIAL.empty).nonzero().squeeze(1)
        n_empty = len(empty)
        assert 1 <= n_empty <= max_empty
        assert torch.equal(empty, torch.arange(int(empty[0]), int(empty[0]) + n_empty))  # one contiguous run
        # the window's text is kept around the run; the tail that no longer fits is dropped
        assert torch.equal(targets[row][targets[row] != SPECIAL.empty], x[row, : length - n_empty])
        # the gap region (a span of up to 16 tokens, then the empties) is masked with weight exactly 1;
        # nowhere else has weight 1, since 1/t > 1
        ones = (weights[row] == 1).nonzero().squeeze(1)
        assert int(ones[-1]) == int(empty[-1]) and int(ones[0]) >= 1
        assert torch.equal(ones, torch.arange(int(ones[0]), int(ones[-1]) + 1))
        assert n_empty <= len(ones) <= n_empty + 16
