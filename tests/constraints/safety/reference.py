"""A literal, slow reading of the safety definitions (constraints/safety/__init__.py), sharing no code with the
guard (but ``utf8_chars``, which tests/constraints/safety/test_text.py checks against Python's decoder).
Used by several of this folder's test modules."""

from __future__ import annotations

import re

from redraft.constraints.safety import PATTERNS, SafetyTargets, utf8_chars
from redraft.families import token_bytes


def ref_normalize(text: str) -> tuple[str, list[int]]:
    out: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        low = ch.lower()
        ch = low if len(low) == 1 else ch
        if ch.isspace():
            if out and out[-1] == " ":
                continue
            ch = " "
        out.append(ch)
        origin.append(i)
    return "".join(out), origin


def ref_occurrences(norm: str, phrases: tuple[str, ...], kinds: tuple[str, ...]) -> list[tuple[int, int]]:
    """Every phrase occurrence, and for each kind the longest match from every start (any substring that
    matches lies inside one of these: for these patterns a longer match from a start extends a shorter one)."""
    out = []
    for p in phrases:
        out += [(i, i + len(p)) for i in range(len(norm)) if norm.startswith(p, i)]
    for kind in kinds:
        rx = re.compile(PATTERNS[kind])
        for a in range(len(norm)):
            m = rx.match(norm, a)
            if m:
                out.append((a, m.end()))
    return out


def ref_forbidden(
    tokenizer,
    targets: SafetyTargets,
    left: str,
    token: int,
    right: str,
    left_bytes: bytes = b"",
    right_bytes: bytes = b"",
) -> bool:
    special = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    tb = b"" if token in special else token_bytes(tokenizer, token)
    data = left_bytes + tb + right_bytes
    i0, i1 = len(left_bytes), len(left_bytes) + len(tb)
    chars = utf8_chars(data)
    mid = "".join(c for c, _, _ in chars)
    inside = [n for n, (_, a, b) in enumerate(chars) if (a < i1 and b > i0) or a < i0 < b]
    s, e = (inside[0], inside[-1] + 1) if inside else ((n := sum(b <= i0 for _, _, b in chars)), n)
    norm, origin = ref_normalize(left + mid + right)
    ns = sum(o < len(left) + s for o in origin)
    ne = sum(o < len(left) + e for o in origin)
    for a, b in ref_occurrences(norm, targets.banned, targets.pii):
        if (a < ne and b > ns) if ne > ns else (a < ns < b):
            return True
    return False


def brute_force(tokenizer, targets, left, right, left_bytes=b"", right_bytes=b"") -> set[int]:
    return {
        t
        for t in range(tokenizer.get_vocab_size())
        if ref_forbidden(tokenizer, targets, left, t, right, left_bytes, right_bytes)
    }
