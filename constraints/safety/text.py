"""Finding banned phrases and PII in finished text (``find_violations``), and the text helpers the guard shares:
normalisation (``normalize``), the kinds' patterns, UTF-8 decoding of token bytes (``split_pending``,
``utf8_chars``). The definitions are in the package's docstring (``constraints/safety/__init__.py``)."""

from __future__ import annotations

import codecs
import re
from bisect import bisect_right
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redraft.constraints.safety.targets import SafetyTargets

# On normalised text (its only whitespace is " "). Conservative: no TLD needed, any 7+ digits for a phone.
PATTERNS: dict[str, str] = {
    "email": r"[\w.%+-]+@[\w-]+",
    "phone": r"\+?\d(?:[ .()\-]{0,3}\d){6,}",
    "card": r"\d(?:[ \-]?\d){12,18}",
}
_FIND = {kind: re.compile(p) for kind, p in PATTERNS.items()}
# Every substring match, as the longest match from each start (greedy is longest for these three).
# An email match from inside a run of local-part characters is covered by the one from the run's start.
_ANY = {
    "email": re.compile(r"(?<![\w.%+-])(?=(" + PATTERNS["email"] + "))"),
    "phone": re.compile("(?=(" + PATTERNS["phone"] + "))"),
    "card": re.compile("(?=(" + PATTERNS["card"] + "))"),
}
_C1 = re.compile(r"[\w.%+-]")  # email local part
_C2 = re.compile(r"[\w-]")  # email domain
_C2_RUN = re.compile(r"[\w-]*")
_EMAIL_RUN = re.compile(r"[\w.%+@-]*")  # the characters an email match is made of
_EMAIL_BREAK = re.compile(r"[^\w.%+@-]")
_PHONE_RUN = re.compile(r"[\d .()+\-]*")
_PHONE_BODY = re.compile(r"[\d .()+\-]+")
_PHONE_ENDS = re.compile(r"[\d+]")  # a phone match starts with one and ends with a digit
_CARD_RUN = re.compile(r"[\d \-]*")
_CARD_BODY = re.compile(r"[\d \-]+")
_DIGIT = re.compile(r"\d")
_WS = re.compile(r"\s+")  # \s is str.isspace for str patterns


def _lower(text: str) -> str:
    """Per-character lowercase. ``str.lower`` differs only on final sigma and on characters whose
    lowercase is longer (both change the length check or contain "Σ")."""
    if text.isascii():
        return text.lower()
    low = text.lower()
    if len(low) == len(text) and "Σ" not in text:
        return low
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def _norm(text: str) -> str:
    return _WS.sub(" ", _lower(text))


def normalize(text: str) -> tuple[str, list[int]]:
    """(normalised text, origin) where ``origin[i]`` is the raw index normalised character ``i`` came from."""
    low = _lower(text)
    parts: list[str] = []
    origin: list[int] = []
    at = 0
    for m in _WS.finditer(low):
        parts += (low[at : m.start()], " ")
        origin += range(at, m.start())
        origin.append(m.start())
        at = m.end()
    parts.append(low[at:])
    origin += range(at, len(low))
    return "".join(parts), origin


def _nonws(text: str) -> int:
    return len("".join(text.split()))


@dataclass(frozen=True)
class Violation:
    kind: str  # "banned" | "email" | "phone" | "card"
    start: int  # raw character offsets in the text
    end: int
    text: str  # text[start:end]


def find_violations(text: str, targets: SafetyTargets,
                    fixed_spans: list[tuple[int, int]] | tuple = ()) -> list[Violation]:
    """Every occurrence of a banned phrase (overlaps included) and every ``re.finditer`` match of a PII
    kind in ``text``, as raw character spans, except those wholly inside one of ``fixed_spans``
    (the user's own text). Touching fixed spans are merged: no model text lies between them."""
    norm, origin = normalize(text)
    spans: list[list[int]] = []
    for a, b in sorted(fixed_spans):
        if spans and a <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    starts = [a for a, _ in spans]
    out: list[Violation] = []

    def add(kind: str, a: int, b: int) -> None:
        start, end = origin[a], origin[b - 1] + 1
        k = bisect_right(starts, start) - 1
        if k < 0 or end > spans[k][1]:
            out.append(Violation(kind, start, end, text[start:end]))

    for phrase in targets.banned:
        phrase = _norm(phrase).strip(" ")
        i = norm.find(phrase) if phrase else -1
        while i != -1:
            add("banned", i, i + len(phrase))
            i = norm.find(phrase, i + 1)
    for kind in targets.pii:
        if kind == "email" and "@" not in norm:
            continue
        for m in _FIND[kind].finditer(norm):
            add(kind, m.start(), m.end())
    return sorted(out, key=lambda v: (v.start, v.end, v.kind))


def split_pending(data: bytes) -> tuple[str, bytes]:
    """Decode ``data`` (``errors="replace"``) but for an incomplete UTF-8 sequence at its end, returned as bytes."""
    dec = codecs.getincrementaldecoder("utf-8")("replace")
    text = dec.decode(data, final=False)
    return text, dec.getstate()[0]


def utf8_chars(data: bytes) -> list[tuple[str, int, int]]:
    """``data.decode("utf-8", "replace")`` as (character, byte start, byte end): each replacement character
    stands for one maximal invalid subpart, as Python's decoder does."""
    out = []
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b < 0x80:
            out.append((chr(b), i, i + 1))
            i += 1
            continue
        need = 1 if 0xC2 <= b <= 0xDF else 2 if 0xE0 <= b <= 0xEF else 3 if 0xF0 <= b <= 0xF4 else 0
        lo, hi = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}.get(b, (0x80, 0xBF))
        j = i + 1
        while j - i <= need and j < n and (lo <= data[j] <= hi if j == i + 1 else 0x80 <= data[j] <= 0xBF):
            j += 1
        out.append((data[i:j].decode() if need and j - i == need + 1 else "\ufffd", i, j))
        i = j
    return out
