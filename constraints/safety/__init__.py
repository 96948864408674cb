"""Safety targets that hold *during* decoding: banned phrases and PII never appear in model-written text.

``banned`` is a list of phrases; ``pii`` is ``true`` (all kinds) or a list of kinds among ``email``,
``phone`` and ``card``, each a conservative regex (a near miss is blocked rather than let through).
Both are enforced as token masks while the canvas is denoised (``redraft.workers.processors.safety_guard.SafetyGuard``), and
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

The package, by seam: ``targets`` (what a request asks for: ``parse_safety``), ``text`` (finding violations in
finished text: ``find_violations``, normalisation, the kinds' patterns), ``tokens`` (per-tokenizer token tables)
and ``guard`` (the text guard the workers' ``SafetyGuard`` applies). Its public names are importable from here.
"""

from redraft.constraints.safety.guard import CONTEXT_CHARS, PATTERN_RADIUS, TextGuard, text_guard
from redraft.constraints.safety.targets import (
    KINDS,
    MAX_PHRASE_CHARS,
    MAX_PHRASES,
    SAFETY_KEYS,
    SafetyTargets,
    normalize_phrase,
    parse_safety,
)
from redraft.constraints.safety.text import PATTERNS, Violation, find_violations, normalize, split_pending, utf8_chars
from redraft.constraints.safety.tokens import TokenTable, token_table

__all__ = [
    "CONTEXT_CHARS", "KINDS", "MAX_PHRASES", "MAX_PHRASE_CHARS", "PATTERNS", "PATTERN_RADIUS", "SAFETY_KEYS",
    "SafetyTargets", "TextGuard", "TokenTable", "Violation", "find_violations", "normalize", "normalize_phrase",
    "parse_safety", "split_pending", "text_guard", "token_table", "utf8_chars",
]
