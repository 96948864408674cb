"""Fixtures shared by the safety tests: a second byte-level tokenizer, besides Redraft's own (``tiny_model``)."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models

from redraft.families import _byte_level_table


@pytest.fixture(scope="module")
def odd_tokenizer() -> Tokenizer:
    """A small byte-level vocabulary with what Redraft's own lacks: tokens that end in a space or hold
    spaces inside, and multi-byte characters whole and split (a different tokenizer, its own guard)."""
    to_alphabet = {b: c for c, b in _byte_level_table().items()}
    extra = [
        "on ",
        "bad ",
        " word ",
        "  ",
        "\n ",
        "the ",
        " the",
        "bo",
        "mb",
        " bomb ",
        "5 ",
        " 5",
        "12 ",
        "x@",
        " jo ",
        "a b",
        "é ",
        " über",
        "ß",
        "€",
        " 1234 ",
        "-1 ",
        "(555) ",
    ]
    pieces = ["[PAD]", "[MASK]", "[EMPTY]"] + [to_alphabet[b] for b in range(256)]
    pieces += ["".join(to_alphabet[b] for b in e.encode()) for e in extra]
    pieces.append(to_alphabet[0xE2] + to_alphabet[0x82])  # the first two bytes of "€"
    tokenizer = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(dict.fromkeys(pieces))}, merges=[]))
    tokenizer.add_special_tokens(["[PAD]", "[MASK]", "[EMPTY]"])
    return tokenizer
