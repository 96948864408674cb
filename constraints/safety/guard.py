"""The text guard: which tokens may be written between two known contexts under a job's targets (``TextGuard``,
built and cached by ``text_guard``); the workers' ``SafetyGuard`` applies it as token masks. The definitions and
the proof that checking at commit time is complete are in the package's docstring."""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from functools import lru_cache

from tokenizers import Tokenizer

from redraft.constraints.safety.targets import KINDS, SafetyTargets, normalize_phrase
from redraft.constraints.safety.text import (
    _ANY,
    _C1,
    _C2,
    _C2_RUN,
    _CARD_RUN,
    _DIGIT,
    _EMAIL_BREAK,
    _EMAIL_RUN,
    _FIND,
    _PHONE_ENDS,
    _PHONE_RUN,
    _nonws,
    _norm,
    normalize,
    utf8_chars,
)
from redraft.constraints.safety.tokens import token_table
from redraft.errors import InvalidRequest

CONTEXT_CHARS = 256  # non-whitespace characters of context kept on each side (> MAX_PHRASE_CHARS)
PATTERN_RADIUS = 32  # >= 26: the longest 7-digit phone sub-match ("+" and 3 separators between digits)


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
    starting the right one (``redraft.workers.processors.safety_guard.CanvasText.context`` computes all four).
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
