"""Infill requests: text with ``[[gap]]`` / ``[[gap:N]]`` markers, or a list of segments, to a canvas."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tokenizers import Tokenizer

from redraft.constraints.canvas import Canvas, CanvasBuilder
from redraft.errors import InvalidRequest
from redraft.families import ModelInfo

# Anything that looks like a gap marker; the inside is validated separately so that a typo such as
# [[gap:ten]] is an error rather than silently kept as literal text.
MARKER = re.compile(r"\[\[\s*gap\b([^\]]*)\]\]")


@dataclass(frozen=True)
class Gap:
    max_tokens: int


def parse_text(text: str, default_tokens: int, max_tokens: int) -> list[str | Gap]:
    """Split ``text`` into literal strings and gaps."""
    segments: list[str | Gap] = []
    pos = 0
    for m in MARKER.finditer(text):
        inner = m.group(1).strip()
        if inner == "":
            n = default_tokens
        elif re.fullmatch(r":\s*\d+", inner):
            digits = inner[1:].strip()
            if len(digits) > 9:  # int() of thousands of digits is slow and refuses; no gap is that big
                raise InvalidRequest(f"a gap holds 1 to {max_tokens} tokens; got a {len(digits)}-digit number")
            n = int(digits)
        else:
            raise InvalidRequest(
                f"bad gap marker {m.group(0)!r} at character {m.start()}: write [[gap]] or [[gap:N]] with N a "
                f"whole number of tokens"
            )
        segments.append(text[pos : m.start()])
        segments.append(gap(n, max_tokens))
        pos = m.end()
    segments.append(text[pos:])
    if not any(isinstance(s, Gap) for s in segments):
        raise InvalidRequest(
            "the text has no gap to fill: mark each gap with [[gap]] (up to the default number of tokens) "
            "or [[gap:N]] (up to N tokens)"
        )
    return [s for s in segments if s != ""]


def gap(n: int, max_tokens: int) -> Gap:
    if not 1 <= n <= max_tokens:
        raise InvalidRequest(f"a gap holds 1 to {max_tokens} tokens; got {n}")
    return Gap(n)


def compile_infill(segments: list[str | Gap], tokenizer: Tokenizer, info: ModelInfo) -> Canvas:
    builder = CanvasBuilder(tokenizer, info)
    n_gaps = 0
    for seg in segments:
        if isinstance(seg, Gap):
            builder.slot(f"gap{n_gaps}", seg.max_tokens)
            n_gaps += 1
        else:
            builder.text(seg)
    return builder.build()
