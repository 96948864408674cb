"""Training Redraft's byte-level BPE on a tiny text, and saving it in the Hugging Face layout.

The shipped tokenizer's own properties (8192 ids, cased, round trip) are in tests/models/test_tokenizer.py; these
tests train a fresh one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from redraft.families import load_tokenizer, token_bytes
from redraft.training.tokenizer import SPECIAL_TOKENS, save_tokenizer, train_tokenizer

TEXTS = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "Der Hund schläft."] * 20


@pytest.fixture(scope="module")
def trained() -> Tokenizer:
    return train_tokenizer(TEXTS, vocab_size=320)


def test_special_tokens_take_the_first_ids_in_order(trained):
    assert [trained.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert SPECIAL_TOKENS == ["[PAD]", "[MASK]", "[BOS]", "[EOS]", "[EMPTY]"]


def test_the_vocabulary_is_the_bytes_plus_merges_of_frequent_pairs(trained):
    vocab = trained.get_vocab()
    assert 5 + 256 < len(vocab) <= 320  # every byte is a token, and merges were learned up to the limit
    assert len(trained.encode("the cat sat").ids) < len("the cat sat")  # frequent words are merged
    assert trained.encode("x").ids != []  # a byte never seen in training still has a token


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=100))
def test_any_text_round_trips_and_its_tokens_concatenate_to_its_bytes(trained, text):
    ids = trained.encode(text, add_special_tokens=False).ids
    assert trained.decode(ids, skip_special_tokens=False) == text
    assert b"".join(token_bytes(trained, i) for i in ids) == text.encode("utf-8")


def test_saved_in_the_hugging_face_layout(trained, tmp_path):
    fast = save_tokenizer(trained, tmp_path / "tok")
    assert (tmp_path / "tok" / "tokenizer.json").exists() and (tmp_path / "tok" / "tokenizer_config.json").exists()
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok", local_files_only=True)
    for tok in (fast, loaded):
        assert (tok.pad_token, tok.mask_token, tok.bos_token, tok.eos_token) == ("[PAD]", "[MASK]", "[BOS]", "[EOS]")
        assert (tok.pad_token_id, tok.mask_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)
        assert tok.convert_tokens_to_ids("[EMPTY]") == 4 and "[EMPTY]" in tok.all_special_tokens
        # no clean-up of spaces before punctuation: decoding gives back exactly the text
        assert tok.decode(tok.encode("a , b .", add_special_tokens=False)) == "a , b ."
    # the service's own loader reads the same vocabulary
    assert load_tokenizer(tmp_path / "tok").get_vocab() == trained.get_vocab()
