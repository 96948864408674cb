"""Per tokenizer, independent of the targets: each token's exact bytes and normalised text, and the groups the
guard's candidate sets are built from (``token_table``, cached)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from tokenizers import Tokenizer

from redraft.constraints.safety.text import (
    _C1,
    _C2,
    _CARD_BODY,
    _DIGIT,
    _EMAIL_BREAK,
    _PHONE_BODY,
    _PHONE_ENDS,
    _nonws,
    _norm,
    split_pending,
)
from redraft.families import token_bytes


@dataclass(frozen=True, eq=False)
class TokenTable:
    """Per tokenizer, independent of the targets: each token's exact bytes and text, and its groups."""

    data: tuple[bytes, ...]  # (V,) exact bytes; b"" for special tokens (they render as "")
    norm: tuple[str, ...]  # (V,) normalised text of the token decoded on its own
    weight: tuple[int, ...]  # (V,) non-whitespace characters it surely adds to a context (0 if ragged)
    breaks: tuple[bool, ...]  # (V,) surely holds a character no email match can contain
    exact: frozenset[int]  # normalised text "" or " ": may leave no character of its own; always checked
    first: dict[str, tuple[int, ...]]  # first normalised character -> ids
    first_after_space: dict[str, tuple[int, ...]]  # first character once a leading space collapses -> ids
    last: dict[str, tuple[int, ...]]  # last normalised character -> ids
    ragged_left: frozenset[int]  # no bytes, or starts with a UTF-8 continuation byte
    ragged_right: frozenset[int]  # no bytes, or ends inside a UTF-8 sequence
    at: frozenset[int]  # holds "@"
    phone: frozenset[int]  # holds a digit or "+", or is all phone characters
    card: frozenset[int]  # holds a digit, or is all card characters
    first_c2: tuple[int, ...]  # starts with an email domain character
    last_c1: tuple[int, ...]  # ends with an email local-part character


@lru_cache(maxsize=8)
def token_table(tokenizer: Tokenizer) -> TokenTable:
    special = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    added = {i: t.content for i, t in tokenizer.get_added_tokens_decoder().items() if not t.special}
    data, texts = [], []
    for i in range(tokenizer.get_vocab_size()):
        if i in special:
            b = b""
        elif i in added:
            b = added[i].encode()
        else:
            b = token_bytes(tokenizer, i)
        data.append(b)
        texts.append(b.decode("utf-8", "replace"))
    norm = [_norm(t) for t in texts]
    ragged_left = {i for i, b in enumerate(data) if not b or 0x80 <= b[0] < 0xC0}
    ragged_right = {i for i, b in enumerate(data) if not b or split_pending(b)[1]}
    ragged = ragged_left | ragged_right
    first: dict[str, list[int]] = {}
    first_sp: dict[str, list[int]] = {}
    last: dict[str, list[int]] = {}
    for i, n in enumerate(norm):
        if n in ("", " "):
            continue
        first.setdefault(n[0], []).append(i)
        first_sp.setdefault(n[1] if n[0] == " " else n[0], []).append(i)
        last.setdefault(n[-1], []).append(i)
    return TokenTable(
        data=tuple(data),
        norm=tuple(norm),
        weight=tuple(0 if i in ragged else _nonws(t) for i, t in enumerate(texts)),
        breaks=tuple(i not in ragged and bool(_EMAIL_BREAK.search(n)) for i, n in enumerate(norm)),
        exact=frozenset(i for i, n in enumerate(norm) if n in ("", " ")),
        first={c: tuple(v) for c, v in first.items()},
        first_after_space={c: tuple(v) for c, v in first_sp.items()},
        last={c: tuple(v) for c, v in last.items()},
        ragged_left=frozenset(ragged_left),
        ragged_right=frozenset(ragged_right),
        at=frozenset(i for i, n in enumerate(norm) if "@" in n),
        phone=frozenset(i for i, n in enumerate(norm)
                        if n.strip(" ") and (_PHONE_ENDS.search(n) or _PHONE_BODY.fullmatch(n))),
        card=frozenset(i for i, n in enumerate(norm) if n.strip(" ") and (_DIGIT.search(n) or _CARD_BODY.fullmatch(n))),
        first_c2=tuple(i for i, n in enumerate(norm) if n and _C2.match(n[0])),
        last_c1=tuple(i for i, n in enumerate(norm) if n and _C1.match(n[-1])),
    )
