"""Safety targets that hold *during* decoding: banned phrases and PII never appear in model-written text.

``banned`` is a list of phrases; ``pii`` is ``true`` (all kinds) or a list of kinds among ``email``,
``phone`` and ``card``, each a conservative regex (a near miss is blocked rather than let through).
Both are enforced as token masks while the canvas is denoised (``workers.processors.safety_guard.SafetyGuard``), and
``find_violations`` finds them in finished text (the revise job re-masks what it reports).

Definitions (the tests check them literally):

* **Normalised text**: every character lowercased on its own (kept as is when its ``.lower()`` is
  not one character), every whitespace character (``str.isspace``) made ``" "``, runs of spaces
  collapsed to one. Phrases are normalised the same way and stripped. Normalisation maps characters
  one to one except for the collapse, so ``origin[i]`` (the raw index of normalised character ``i``)
  is increasing.
* **Rendered text**: the concatenation, in canvas order, of *units*: each fixed piece's original
  string (``canvas.pieces``; BOS/EOS are not text) and each slot position's token text (EMPTY and
  the other special tokens: ``""``; MASK: unknown). A slot's token bytes are joined before they are
  decoded (``errors="replace"``), as ``Canvas.render`` does. ``render`` drops a slot value's leading
  space after fixed text that ends in whitespace; the collapse makes that invisible once normalised.
* **Occurrence**: a phrase found anywhere in the normalised text (overlaps included), or a match of
  a kind's regex (``re.finditer``). A **violation** is one not wholly inside one fixed piece.
* **Enforcement**: at a masked position ``p``, ``A`` is the rendered text of the maximal run of
  *known* units just left of ``p`` (fixed pieces, committed tokens; it stops at a masked position or
  the start) and ``B`` the same to the right. Token ``t`` is forbidden at ``p`` iff ``norm(A + t + B)``
  holds an occurrence that touches ``t``'s span (its normalised characters; when a collapse or an
  EMPTY token leaves it no character, an occurrence that strictly straddles that point). For the
  kinds, "an occurrence" here is *any* substring that matches (a superset of the ``finditer``
  matches, so a near miss is blocked rather than let through).

Why checking at commit time is complete. Take a violation in the final text. The slot positions it
involves (those whose characters lie in it, or that sit strictly inside it) are not empty, and the
one committed last found every other one already committed, hence inside its known run; so at that
commit the whole occurrence was in ``A + t + B`` and touched ``t``'s span (a token of collapsed
whitespace, or an EMPTY one, sits strictly inside the occurrence, since none starts or ends with a
space). That needs every commit checked against the commits made earlier *in the same step*: the
sampler's ``admissible`` hook. ``A`` and ``B`` are bounded without loss: a phrase has at most
``MAX_PHRASE_CHARS`` characters and ``CONTEXT_CHARS`` non-whitespace ones are kept; a phone or card
match touching ``t`` holds a 7- or 13-digit sub-match within ``PATTERN_RADIUS`` characters of ``t``;
an email match lies in one run of email characters, so the window always reaches that run's end.

Speed: ``TextGuard`` (cached per targets and tokenizer) keeps the static mask (tokens holding an
occurrence by themselves, forbidden everywhere) and, per context, exactly checks only a candidate
set that is proven to contain every other forbidden token (``TextGuard._dynamic_uncached`` gives
the argument; the tests compare the result with a brute-force check of every token).

Torch-free: the API validates requests with it; the workers' guard wraps it.
"""

from __future__ import annotations

import codecs
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tokenizers import Tokenizer

from redraft.errors import InvalidRequest
from redraft.models import token_bytes

KINDS = ("email", "phone", "card")
MAX_PHRASES = 200
MAX_PHRASE_CHARS = 200
CONTEXT_CHARS = 256  # non-whitespace characters of context kept on each side (> MAX_PHRASE_CHARS)
PATTERN_RADIUS = 32  # >= 26: the longest 7-digit phone sub-match ("+" and 3 separators between digits)

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


# ---------------------------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class SafetyTargets:
    banned: tuple[str, ...] = ()  # normalised phrases
    pii: tuple[str, ...] = ()  # kinds, in KINDS order


SAFETY_KEYS = ("banned", "pii", "avoid")  # "avoid" is the topic scorer's (workers), not checked here


def parse_safety(obj: dict | None) -> SafetyTargets | None:
    """Validate a request's ``"safety"`` object; None when it asks for no banned phrase and no PII kind."""
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise InvalidRequest(f"safety must be an object with keys {', '.join(SAFETY_KEYS)}; got {type(obj).__name__}")
    unknown = sorted(str(k) for k in obj if k not in SAFETY_KEYS)
    if unknown:
        raise InvalidRequest(f"unknown safety key(s) {', '.join(map(repr, unknown))}; known keys: "
                             f"{', '.join(SAFETY_KEYS)}")
    banned = _parse_banned(obj.get("banned"))
    pii = _parse_pii(obj.get("pii"))
    if not banned and not pii:
        return None
    return SafetyTargets(banned, pii)


def _parse_banned(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise InvalidRequest(f"safety.banned must be a list of phrases; got {type(value).__name__}")
    if len(value) > MAX_PHRASES:
        raise InvalidRequest(f"safety.banned has {len(value)} phrases; at most {MAX_PHRASES}")
    return tuple(dict.fromkeys(normalize_phrase(p, f"safety.banned[{i}]") for i, p in enumerate(value)))


def normalize_phrase(phrase: Any, where: str = "a banned phrase") -> str:
    if not isinstance(phrase, str):
        raise InvalidRequest(f"{where} must be a string; got {type(phrase).__name__}")
    norm = _norm(phrase).strip(" ")
    if not norm:
        raise InvalidRequest(f"{where} is empty or only whitespace; remove it or write the phrase")
    if len(norm) > MAX_PHRASE_CHARS:
        raise InvalidRequest(f"{where} has {len(norm)} characters (after collapsing whitespace); a banned phrase "
                             f"has at most {MAX_PHRASE_CHARS}: shorten it")
    return norm


def _parse_pii(value: Any) -> tuple[str, ...]:
    if value is None or value is False:
        return ()
    if value is True:
        return KINDS
    if not isinstance(value, list | tuple):
        raise InvalidRequest(f"safety.pii must be true (all kinds) or a list of {', '.join(KINDS)}; "
                             f"got {type(value).__name__}")
    for i, kind in enumerate(value):
        if kind not in KINDS:
            raise InvalidRequest(f"safety.pii[{i}] = {kind!r} is not a PII kind; use {', '.join(KINDS)} "
                                 f"(or true for all)")
    return tuple(k for k in KINDS if k in value)


# ---------------------------------------------------------------------------------------------- text


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


# ---------------------------------------------------------------------------------------------- tokens


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


# ---------------------------------------------------------------------------------------------- guard


class _Context:
    """What a (left, right) pair of normalised contexts offers every candidate token."""

    __slots__ = (
        "card_on",
        "conts",
        "e_l",
        "e_r",
        "e_r_cut",
        "email_dom",
        "email_loc",
        "heads",
        "heads_cut",
        "l_space",
        "nr_ph",
        "nr_ph_cut",
        "p_l",
        "p_r",
        "p_r_cut",
        "phone_on",
        "r_space",
    )


class TextGuard:
    """Which tokens may be written between two known contexts under ``targets``; build with ``text_guard``.

    ``forbidden(left, right)`` is every token id ``t`` for which ``norm(left + t + right)`` holds an
    occurrence touching ``t`` (module docstring); ``allows(left, t, right)`` is the same test for one
    token. ``left`` / ``right`` are rendered text (any length; only the part that can matter is used).
    ``left_bytes`` / ``right_bytes`` carry the bytes of the same slot that the token's bytes join
    before decoding: an incomplete UTF-8 sequence ending the left context, continuation bytes
    starting the right one (``workers.processors.safety_guard.CanvasText.context`` computes all four).
    """

    def __init__(self, targets: SafetyTargets, tokenizer: Tokenizer) -> None:
        self.targets = targets
        self.table = token_table(tokenizer)
        self.phrases = tuple(dict.fromkeys(normalize_phrase(p) for p in targets.banned))
        for kind in targets.pii:
            if kind not in KINDS:
                raise InvalidRequest(f"{kind!r} is not a PII kind; use {', '.join(KINDS)}")
        self.kinds = tuple(k for k in KINDS if k in targets.pii)
        self.email = "email" in self.kinds
        self.maxlen = max((len(p) for p in self.phrases), default=0)
        # Proper prefixes -> what completes each phrase; proper suffixes -> what each phrase starts with.
        self._conts: dict[str, list[str]] = {}
        self._heads: dict[str, list[str]] = {}
        for p in self.phrases:
            for k in range(1, len(p)):
                self._conts.setdefault(p[:k], []).append(p[k:])
                self._heads.setdefault(p[k:], []).append(p[:k])
        static = self._static()
        ragged = self.table.ragged_left | self.table.ragged_right
        self.static_ids = tuple(sorted(static - ragged))  # forbidden in every context
        self._static_ragged = frozenset(static & ragged)  # forbidden unless bytes join them with neighbours
        self._static_set = frozenset(self.static_ids)
        # A step asks about every masked position, and most contexts recur from step to step.
        self._context = lru_cache(maxsize=1024)(self._make_context)
        self._dynamic = lru_cache(maxsize=1024)(self._dynamic_uncached)

    def _static(self) -> set[int]:
        """Tokens whose own normalised text holds an occurrence: it lies in their span in any context."""
        norms = self.table.norm
        joined = "\n".join(norms)  # no normalised text or phrase holds "\n", no match crosses it
        starts = []
        at = 0
        for n in norms:
            starts.append(at)
            at += len(n) + 1
        hits = set()
        for p in self.phrases:
            i = joined.find(p)
            while i != -1:
                hits.add(bisect_right(starts, i) - 1)
                i = joined.find(p, i + 1)
        for kind in self.kinds:
            for m in _FIND[kind].finditer(joined):
                hits.add(bisect_right(starts, m.start()) - 1)
        return hits

    # ------------------------------------------------------------------------------------ contexts

    @property
    def needs_break(self) -> bool:
        """Whether a context must reach a character no email match holds (the end of the email run)."""
        return self.email

    def has_break(self, text: str) -> bool:
        return bool(_EMAIL_BREAK.search(_norm(text)))

    def trim_left(self, text: str) -> str:
        """The suffix of a left context that can matter: ``CONTEXT_CHARS`` non-whitespace characters,
        and with ``email`` the whole run of email characters that ends it."""
        cut = 0
        if len(text) > CONTEXT_CHARS:
            n = 2 * CONTEXT_CHARS
            while n < len(text) and _nonws(text[-n:]) < CONTEXT_CHARS:
                n *= 2
            cut = max(0, len(text) - n)
        if cut and self.email and not self.has_break(text[cut:]):
            while cut > 0 and not self.has_break(text[cut - 1]):
                cut -= 1
        return text[cut:]

    def trim_right(self, text: str) -> str:
        """The prefix of a right context that can matter (as ``trim_left``)."""
        cut = len(text)
        if len(text) > CONTEXT_CHARS:
            n = 2 * CONTEXT_CHARS
            while n < len(text) and _nonws(text[:n]) < CONTEXT_CHARS:
                n *= 2
            cut = min(len(text), n)
        if cut < len(text) and self.email and not self.has_break(text[:cut]):
            while cut < len(text) and not self.has_break(text[cut]):
                cut += 1
        return text[:cut]

    def _make_context(self, left: str, right: str) -> _Context:
        c = _Context()
        nl, nr = _norm(left), _norm(right)
        c.l_space, c.r_space = nl.endswith(" "), nr.startswith(" ")
        m = self.maxlen
        c.nr_ph, c.nr_ph_cut = nr[:m], (nr[1 : m + 1] if c.r_space else nr[:m])
        c.conts, c.heads, c.heads_cut = [], [], []
        if m:
            for k in range(1, min(m, len(nl) + 1)):
                c.conts += self._conts.get(nl[-k:], ())
            for k in range(1, min(m, len(nr) + 1)):
                c.heads += self._heads.get(nr[:k], ())
            if c.r_space:
                for k in range(1, min(m, len(nr))):
                    c.heads_cut += self._heads.get(nr[1 : k + 1], ())
            else:
                c.heads_cut = c.heads
        c.e_l = c.e_r = c.e_r_cut = ""
        c.email_dom = c.email_loc = False
        if self.email:
            c.e_l = _EMAIL_RUN.match(nl[::-1]).group()[::-1]
            c.e_r = _EMAIL_RUN.match(nr).group()
            c.e_r_cut = _EMAIL_RUN.match(nr, 1).group() if c.r_space else c.e_r
            i = c.e_l.rfind("@")  # left ends with "x@" + domain characters: any domain character continues it
            c.email_dom = i >= 1 and bool(_C1.match(c.e_l[i - 1])) and _C2_RUN.fullmatch(c.e_l, i + 1) is not None
            i = c.e_r.find("@")  # right starts with local-part characters + "@x": any local-part one joins it
            c.email_loc = 0 <= i < len(c.e_r) - 1 and bool(_C2.match(c.e_r[i + 1]))
        r = PATTERN_RADIUS
        c.p_l, c.p_r, c.p_r_cut = nl[-r:], nr[:r], (nr[1 : r + 1] if c.r_space else nr[:r])
        c.phone_on = c.card_on = False
        if "phone" in self.kinds:
            c.phone_on = bool(_PHONE_ENDS.search(_PHONE_RUN.match(c.p_l[::-1]).group())
                              or _DIGIT.search(_PHONE_RUN.match(c.p_r).group()))
        if "card" in self.kinds:
            c.card_on = bool(_DIGIT.search(_CARD_RUN.match(c.p_l[::-1]).group())
                             or _DIGIT.search(_CARD_RUN.match(c.p_r).group()))
        return c

    # ------------------------------------------------------------------------------------ checks

    def _exact(self, c: _Context, nt: str, email: bool, phone: bool, card: bool) -> bool:
        """Does ``norm(left + t + right)`` hold an occurrence touching ``t`` that is not inside ``t``?
        (Those inside ``t`` are the static mask's.) ``nt`` is ``t``'s normalised text."""
        if c.l_space and nt.startswith(" "):
            nt = nt[1:]
        cut = c.r_space and (nt.endswith(" ") if nt else c.l_space)  # the right's leading space collapses
        if c.conts:  # a phrase that starts in the left context and runs into t (or, t empty, past it)
            tail = nt + (c.nr_ph_cut if cut else c.nr_ph)
            for cont in c.conts:
                if tail.startswith(cont):
                    return True
        if nt:  # a phrase that starts in t and runs into the right context
            for head in c.heads_cut if cut else c.heads:
                if nt.endswith(head):
                    return True
        if email:
            window = c.e_l + nt + (c.e_r_cut if cut else c.e_r)
            if "@" in window and _touches(_ANY["email"], window, len(c.e_l), len(c.e_l) + len(nt)):
                return True
        if phone or card:
            window = c.p_l + nt + (c.p_r_cut if cut else c.p_r)
            s, e = len(c.p_l), len(c.p_l) + len(nt)
            if phone and _touches(_ANY["phone"], window, s, e):
                return True
            if card and _touches(_ANY["card"], window, s, e):
                return True
        return False

    def _dynamic_uncached(self, left: str, right: str, left_bytes: bytes, right_bytes: bytes) -> tuple[int, ...]:
        """The non-static forbidden tokens: the exact check run on a candidate set that holds them all.

        Why the candidates hold every forbidden token that is not static. Let ``o`` be an occurrence
        touching ``t`` but not inside it, and ``t'`` the normalised ``t`` once its leading space has
        collapsed into the left's. If ``t'`` is empty (EMPTY, or a space after a space), ``t`` is in
        ``exact``, always checked. Otherwise ``o`` crosses an edge of ``t'``:

        * a phrase crossing the left edge begins with a suffix of the left context that is a proper
          prefix of it, and goes on with ``t'[0]``: ``t`` is in ``first[_after_space][c]`` for a ``c``
          drawn from ``conts``. One crossing the right edge (and not the left) starts inside ``t'`` and
          ends with a proper suffix that the right context starts with, after ``t'[-1]``: ``t`` is in
          ``last[c]`` for a ``c`` drawn from ``heads`` (``heads_cut`` when ``t`` ends with a space and
          the right's leading space collapses).
        * an email match holds exactly one "@" (neither part may). In the left context: the left ends
          with a local-part character, "@" and domain characters (``email_dom``) and ``t'[0]`` is a
          domain character, and then every such ``t`` is forbidden (``first_c2``). In the right: it
          starts with local-part characters, "@" and a domain character (``email_loc``), ``t'[-1]``
          is a local-part character, and every such ``t`` is forbidden (``last_c1``). In ``t``: ``at``.
        * a phone (card) match starts with "+" or a digit (a digit) and ends with a digit, and holds
          only phone (card) characters. Crossing ``t``'s left edge, its part in the left context lies in
          the left's trailing run of such characters and starts with one of those; crossing the right
          edge, its part in the right lies in the right's leading run and ends with a digit
          (``phone_on`` / ``card_on``). And ``t'`` either holds the match's first or last character,
          so a digit or "+" (a digit), or lies wholly inside the match, so it is all phone (card)
          characters: the ``phone`` (``card``) group.

        Each candidate is checked only for the kinds whose case above admits it.
        """
        if left_bytes or right_bytes:
            return self._dynamic_bytes(left, right, left_bytes, right_bytes)
        t = self.table
        c = self._context(left, right)
        cand = set(t.exact)
        first = t.first_after_space if c.l_space else t.first
        for ch in {cont[0] for cont in c.conts}:
            cand.update(first.get(ch, ()))
        for ch in {head[-1] for head in c.heads}:
            if ch != " ":
                cand.update(t.last.get(ch, ()))
        if any(head[-1] == " " for head in c.heads_cut):  # tokens ending with a space see the cut right
            cand.update(t.last.get(" ", ()))
        out = set(self._static_ragged)
        if c.email_dom:
            out.update(t.first_c2)
        if c.email_loc:
            out.update(t.last_c1)
        if self.email:
            cand |= t.at
        if c.phone_on:
            cand |= t.phone
        if c.card_on:
            cand |= t.card
        cand -= self._static_set
        cand -= out
        norm = t.norm
        for i in cand:
            anyway = i in t.exact
            if self._exact(c, norm[i], self.email and (anyway or i in t.at), c.phone_on and (anyway or i in t.phone),
                           c.card_on and (anyway or i in t.card)):
                out.add(i)
        return tuple(sorted(out))

    def _dynamic_bytes(self, left: str, right: str, left_bytes: bytes, right_bytes: bytes) -> tuple[int, ...]:
        """Tokens whose bytes cannot join the neighbours' decode as in the plain case; the others see
        the neighbours' bytes decoded on their own (the decoder resynchronises at their first byte)."""
        t = self.table
        ragged = (t.ragged_left if left_bytes else frozenset()) | (t.ragged_right if right_bytes else frozenset())
        plain_left = left + left_bytes.decode("utf-8", "replace")
        plain_right = right_bytes.decode("utf-8", "replace") + right
        out = set(self._dynamic(plain_left, plain_right, b"", b"")) - ragged
        out.update(i for i in ragged
                   if i not in self._static_set and self._byte_forbidden(left, i, right, left_bytes, right_bytes))
        return tuple(sorted(out))

    def _byte_forbidden(self, left: str, token_id: int, right: str, left_bytes: bytes, right_bytes: bytes) -> bool:
        """The definition, literally, for a token whose bytes join its neighbours': ``t``'s span is the
        characters holding one of its bytes, or (no bytes) the one character bridging it."""
        data = left_bytes + self.table.data[token_id] + right_bytes
        i0, i1 = len(left_bytes), len(data) - len(right_bytes)
        chars = utf8_chars(data)
        mid = "".join(ch for ch, _, _ in chars)
        inside = [n for n, (_, a, b) in enumerate(chars) if (a < i1 and b > i0) or a < i0 < b]
        if inside:
            s, e = inside[0], inside[-1] + 1
        else:
            s = e = sum(1 for _, _, b in chars if b <= i0)
        norm, origin = normalize(left + mid + right)
        ns, ne = bisect_left(origin, len(left) + s), bisect_left(origin, len(left) + e)
        for p in self.phrases:
            i = norm.find(p, max(0, ns - len(p) + 1))
            while i != -1 and i < max(ns, ne):
                if i + len(p) > ns:
                    return True
                i = norm.find(p, i + 1)
        return any(_touches(_ANY[kind], norm, ns, ne) for kind in self.kinds)

    # ------------------------------------------------------------------------------------ public

    def dynamic(self, left: str, right: str, left_bytes: bytes = b"", right_bytes: bytes = b"") -> tuple[int, ...]:
        """The forbidden tokens that are not in ``static_ids``, between these contexts (cached)."""
        return self._dynamic(self.trim_left(left), self.trim_right(right), left_bytes, right_bytes)

    def forbidden(self, left: str, right: str, *, left_bytes: bytes = b"", right_bytes: bytes = b"") -> list[int]:
        """Every token id forbidden between ``left`` and ``right`` (sorted)."""
        return sorted(self._static_set.union(self.dynamic(left, right, left_bytes, right_bytes)))

    def allows(self, left: str, token_id: int, right: str, *, left_bytes: bytes = b"",
               right_bytes: bytes = b"") -> bool:
        """The exact check of one token (what ``admissible`` asks at each commit). An id the tokenizer
        does not know (a model's padding rows) has no text to check: never allowed."""
        t = self.table
        if token_id in self._static_set or not 0 <= token_id < len(t.data):
            return False
        left, right = self.trim_left(left), self.trim_right(right)
        if (left_bytes and token_id in t.ragged_left) or (right_bytes and token_id in t.ragged_right):
            return not self._byte_forbidden(left, token_id, right, left_bytes, right_bytes)
        if token_id in self._static_ragged:
            return False
        left += left_bytes.decode("utf-8", "replace")
        right = right_bytes.decode("utf-8", "replace") + right
        c = self._context(left, right)
        return not self._exact(c, t.norm[token_id], self.email, "phone" in self.kinds, "card" in self.kinds)


def _touches(rx: re.Pattern, text: str, s: int, e: int) -> bool:
    """Does a match of ``rx`` (a lookahead capturing group 1) overlap ``[s, e)``, or, when ``s == e``,
    strictly straddle ``s``?"""
    stop = max(s, e)
    for m in rx.finditer(text):
        a = m.start()
        if a >= stop:
            return False
        if m.end(1) > s and (e > s or a < s):
            return True
    return False


@lru_cache(maxsize=16)
def text_guard(targets: SafetyTargets, tokenizer: Tokenizer) -> TextGuard:
    """The compiled guard for ``targets`` over ``tokenizer``'s vocabulary, cached."""
    return TextGuard(targets, tokenizer)
