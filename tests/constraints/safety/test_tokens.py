"""Per-tokenizer token tables (constraints/safety/tokens.py): every token's bytes, normalised text and groups,
each checked token by token against a literal reading of what the field's comment says, on Redraft's tokenizer
and on one with tokens Redraft's lacks (trailing and inner spaces, split characters, a non-special added token)."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from redraft.constraints.safety import token_table
from redraft.families import token_bytes
from tests.constraints.safety.reference import ref_normalize

EMAIL_CHARS = set(".%+-_@")  # with the word characters (str.isalnum), what an email match is made of


def _proper_prefixes() -> set[bytes]:
    """Every proper prefix (lead byte first) of a code point's UTF-8 encoding: what a token may end inside."""
    out = set()
    for c in range(0x80, 0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        e = chr(c).encode()
        out.update(e[:k] for k in range(1, len(e)))
    return out


PROPER_PREFIXES = _proper_prefixes()


@pytest.fixture(scope="module", params=["redraft", "odd"])
def tokenizer(request, tiny_model, odd_tokenizer) -> Tokenizer:
    if request.param == "redraft":
        return tiny_model[1]
    with_added = Tokenizer.from_str(odd_tokenizer.to_str())
    with_added.add_tokens(["<Ok Go>"])  # an added token that is not special: its content is its text
    return with_added


def test_bytes_and_normalised_text_are_each_tokens_own(tokenizer):
    table = token_table(tokenizer)
    decoder = tokenizer.get_added_tokens_decoder()
    size = tokenizer.get_vocab_size()
    assert len(table.data) == len(table.norm) == len(table.weight) == len(table.breaks) == size
    for i in range(size):
        added = decoder.get(i)
        expected = b"" if added and added.special else added.content.encode() if added else token_bytes(tokenizer, i)
        assert table.data[i] == expected, i
        assert table.norm[i] == ref_normalize(expected.decode("utf-8", "replace"))[0], i
    if "<Ok Go>" in tokenizer.get_vocab():
        assert table.norm[tokenizer.token_to_id("<Ok Go>")] == "<ok go>"


def test_ragged_tokens_are_those_whose_bytes_may_join_a_neighbours(tokenizer):
    """Ragged left: no bytes, or the first is a continuation byte; ragged right: no bytes, or the bytes end inside
    a character (a proper prefix of some character's encoding)."""
    table = token_table(tokenizer)
    left = {i for i, b in enumerate(table.data) if not b or 0x80 <= b[0] <= 0xBF}
    right = {i for i, b in enumerate(table.data) if not b or any(b[-k:] in PROPER_PREFIXES for k in (1, 2, 3))}
    assert table.ragged_left == left and table.ragged_right == right
    assert right - {i for i, b in enumerate(table.data) if not b}  # the split characters are there to be found


def test_weight_and_breaks_are_what_a_token_surely_adds(tokenizer):
    """Weight: the non-whitespace characters of the token's text, 0 when ragged (its characters may merge with a
    neighbour's); breaks: not ragged, and its text holds a character no email match can contain."""
    table = token_table(tokenizer)
    ragged = table.ragged_left | table.ragged_right
    for i, b in enumerate(table.data):
        text = b.decode("utf-8", "replace")
        assert table.weight[i] == (0 if i in ragged else sum(not c.isspace() for c in text)), i
        email_only = all(c.isalnum() or c in EMAIL_CHARS for c in table.norm[i])
        assert table.breaks[i] == (i not in ragged and not email_only), i


def test_groups_by_first_and_last_character_partition_the_tokens_with_text(tokenizer):
    """``exact``: normalised text "" or " " (always checked); every other token is in exactly one ``first``,
    one ``first_after_space`` and one ``last`` group, the one of its first (after a leading space collapses)
    and last normalised character, in id order."""
    table = token_table(tokenizer)
    norm = table.norm
    assert table.exact == {i for i, n in enumerate(norm) if n in ("", " ")}
    rest = [i for i in range(len(norm)) if i not in table.exact]
    for group, key in (
        (table.first, lambda n: n[0]),
        (table.last, lambda n: n[-1]),
        (table.first_after_space, lambda n: n[1] if n.startswith(" ") else n[0]),
    ):
        expected: dict[str, list[int]] = {}
        for i in rest:
            expected.setdefault(key(norm[i]), []).append(i)
        assert group == {c: tuple(ids) for c, ids in expected.items()}


def test_pattern_groups_hold_every_token_a_match_may_use(tokenizer):
    """``at``: holds "@"; ``phone``: holds a digit or "+", or is all phone characters; ``card``: holds a digit, or
    is all card characters (neither for blank text); ``first_c2`` / ``last_c1``: starts with an email domain
    character / ends with an email local-part character, in id order."""
    table = token_table(tokenizer)
    norm = table.norm

    def phone(n: str) -> bool:
        return any(c.isdecimal() or c == "+" for c in n) or all(c.isdecimal() or c in " .()+-" for c in n)

    def card(n: str) -> bool:
        return any(c.isdecimal() for c in n) or all(c.isdecimal() or c in " -" for c in n)

    assert table.at == {i for i, n in enumerate(norm) if "@" in n}
    assert table.phone == {i for i, n in enumerate(norm) if n.strip(" ") and phone(n)}
    assert table.card == {i for i, n in enumerate(norm) if n.strip(" ") and card(n)}
    assert table.first_c2 == tuple(i for i, n in enumerate(norm) if n and (n[0].isalnum() or n[0] in "_-"))
    assert table.last_c1 == tuple(i for i, n in enumerate(norm) if n and (n[-1].isalnum() or n[-1] in "_.%+-"))
    assert table.at and table.phone and table.card  # the vocabularies hold such tokens: the check saw them


def test_the_table_is_built_once_per_tokenizer(tokenizer, odd_tokenizer):
    assert token_table(tokenizer) is token_table(tokenizer)
    other = Tokenizer.from_str(odd_tokenizer.to_str())
    assert token_table(other) is not token_table(odd_tokenizer)
    assert token_table(other).data == token_table(odd_tokenizer).data
