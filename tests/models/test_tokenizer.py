"""Redraft's byte-level BPE: exact round trip, tokens concatenate to the text, special tokens fixed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.families import load_tokenizer, token_bytes
from redraft.settings import DEFAULT_MODEL_DIR

TOKENIZER = load_tokenizer(DEFAULT_MODEL_DIR)
SPECIALS = {"[PAD]": 0, "[MASK]": 1, "[BOS]": 2, "[EOS]": 3, "[EMPTY]": 4}


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_any_unicode_text_round_trips_exactly(text):
    ids = TOKENIZER.encode(text, add_special_tokens=False).ids
    assert TOKENIZER.decode(ids, skip_special_tokens=False) == text
    # per-token byte strings concatenate to the text's UTF-8 bytes (what structure constraints rely on)
    assert b"".join(token_bytes(TOKENIZER, i) for i in ids) == text.encode("utf-8")


def test_vocabulary_and_special_tokens():
    assert TOKENIZER.get_vocab_size() == 8192
    for token, token_id in SPECIALS.items():
        assert TOKENIZER.token_to_id(token) == token_id


def test_cased():
    assert TOKENIZER.encode("Paris").ids != TOKENIZER.encode("paris").ids
