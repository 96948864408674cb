"""Safety targets as a request gives them: ``banned`` phrases and ``pii`` kinds, validated and normalised
(``parse_safety``). The definitions are in the package's docstring (``constraints/safety/__init__.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redraft.constraints.safety.text import _norm
from redraft.errors import InvalidRequest

KINDS = ("email", "phone", "card")
MAX_PHRASES = 200
MAX_PHRASE_CHARS = 200


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
