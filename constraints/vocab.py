"""Per-slot vocabulary masks for simple cases, cheaper than an automaton: which tokens a slot may use."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from tokenizers import Tokenizer

from redraft.errors import InvalidRequest
from redraft.families import token_bytes

# name -> predicate on a token's exact bytes
VOCABS: dict[str, Callable[[bytes], bool]] = {
    "digits": lambda b: b.isdigit(),
    "letters": lambda b: b.isalpha(),
    "no_newline": lambda b: b"\n" not in b and b"\r" not in b,
    "ascii": lambda b: all(32 <= c < 127 for c in b),
}


def check_vocab(name: str | None) -> None:
    if name is not None and name not in VOCABS:
        raise InvalidRequest(f"unknown vocab {name!r}; use one of: {', '.join(VOCABS)}")


@lru_cache(maxsize=64)
def allowed_ids(name: str, tokenizer: Tokenizer, special: frozenset[int]) -> tuple[int, ...]:
    """Ids of the ordinary tokens whose bytes satisfy the vocabulary (special tokens never)."""
    keep = VOCABS[name]
    return tuple(i for i in range(tokenizer.get_vocab_size()) if i not in special and keep(token_bytes(tokenizer, i)))
