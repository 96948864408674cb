"""Chat messages rendered with the model directory's own chat template, as transformers renders them.

The template is the model's: ``chat_template.jinja`` in its directory, else the ``chat_template`` of its
``tokenizer_config.json``. It runs in Jinja2's immutable sandbox with the variables transformers gives it
(``messages``, ``add_generation_prompt``, ``bos_token``, ``eos_token``, and ``raise_exception``), so a
conversation renders to the same text the model was trained on. Torch-free: the API renders at submission.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Template, TemplateError, TemplateSyntaxError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from redraft.errors import InvalidRequest
from redraft.families import ModelInfo, load_tokenizer

MAX_RENDERED_CHARS = 1_000_000  # a rendered conversation longer than this is refused before tokenising it


def _raise_exception(message: Any) -> None:
    """The template's own way to refuse a conversation (e.g. roles that do not alternate)."""
    raise InvalidRequest(f"the model's chat template refused the messages: {message}", code="chat_template_error")


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    """transformers' tojson: plain json.dumps (Jinja's own escapes <, > and & for HTML)."""
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


_ENV = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
_ENV.globals["raise_exception"] = _raise_exception
_ENV.filters["tojson"] = _tojson


def _no_template(info: ModelInfo, why: str) -> InvalidRequest:
    return InvalidRequest(
        f"model {info.name!r} cannot take `messages`: {why}; use `prompt` (the conversation as plain text) instead",
        code="no_chat_template")


@lru_cache(maxsize=32)
def _tokenizer_config(path: Path) -> dict[str, Any]:
    file = path / "tokenizer_config.json"
    return json.loads(file.read_text()) if file.exists() else {}


@lru_cache(maxsize=32)
def _template_source(path: Path) -> str | list | None:
    """The directory's chat template as stored: a string, a list of named templates, or None."""
    file = path / "chat_template.jinja"
    return file.read_text() if file.exists() else _tokenizer_config(path).get("chat_template")


def load_chat_template(info: ModelInfo) -> str:
    """The model directory's chat template source (read once per directory); 422 ``no_chat_template``
    when it has none."""
    source = _template_source(Path(info.path))
    if isinstance(source, list):  # transformers' named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
        if not isinstance(named.get("default"), str):
            raise _no_template(info, f"its tokenizer_config.json names chat templates {sorted(map(str, named))} "
                                     "but none 'default'")
        source = named["default"]
    if not isinstance(source, str) or not source.strip():
        raise _no_template(info, "its directory has no chat_template.jinja and its tokenizer_config.json no "
                                 "chat_template")
    return source


@lru_cache(maxsize=32)
def _compile(source: str) -> Template:
    return _ENV.from_string(source)


def _token_text(info: ModelInfo, key: str, token_id: int | None) -> str:
    """``bos_token`` / ``eos_token`` as the template sees it: tokenizer_config.json's, else the id's token."""
    value = _tokenizer_config(Path(info.path)).get(key)
    if isinstance(value, dict):  # {"content": "<s>", "lstrip": ...}
        value = value.get("content")
    if isinstance(value, str):
        return value
    if token_id is not None:
        return load_tokenizer(info.path).id_to_token(token_id) or ""
    return ""


def _text_of(content: str | list[dict[str, Any]]) -> str:
    """A message's content as plain text: a string as it is, text parts joined by newlines (as vLLM does)."""
    if isinstance(content, str):
        return content
    for part in content:
        if part.get("type") != "text":
            raise InvalidRequest(f"only text parts are supported in message content; got a {part.get('type')!r} part")
    return "\n".join(part["text"] for part in content)


def render_chat(info: ModelInfo, messages: list[dict[str, Any]]) -> str:
    """The conversation rendered by the model's chat template, ready for the answer to follow.

    ``messages`` are ``{"role", "content"}`` with content a string or a list of ``{"type": "text", "text"}``
    parts. When the canvas starts with the model's BOS token (``info.bos_id``) and the template writes it too,
    the template's is dropped so the canvas holds one.
    """
    source = load_chat_template(info)
    turns = [{"role": m["role"], "content": _text_of(m["content"])} for m in messages]
    where = f"the chat template of model {info.name!r}"
    try:
        template = _compile(source)
        chunks, size = [], 0
        for chunk in template.generate(messages=turns, add_generation_prompt=True,
                                       bos_token=_token_text(info, "bos_token", info.bos_id),
                                       eos_token=_token_text(info, "eos_token", info.eos_id)):
            size += len(chunk)
            if size > MAX_RENDERED_CHARS:
                raise InvalidRequest(f"the rendered conversation is over {MAX_RENDERED_CHARS:,} characters; "
                                     "send fewer or shorter messages", code="chat_too_long")
            chunks.append(chunk)
    except TemplateSyntaxError as exc:
        raise InvalidRequest(f"{where} has a syntax error on line {exc.lineno}: {exc.message}",
                             code="chat_template_error") from exc
    except SecurityError as exc:
        raise InvalidRequest(f"{where} does something the sandbox forbids: {exc}", code="chat_template_error") from exc
    except InvalidRequest:
        raise
    except TemplateError as exc:
        raise InvalidRequest(f"{where} failed to render: {exc.message}", code="chat_template_error") from exc
    except Exception as exc:  # any other error raised while rendering the template is the template's
        raise InvalidRequest(f"{where} failed to render: {type(exc).__name__}: {exc}",
                             code="chat_template_error") from exc
    rendered = "".join(chunks)
    if info.bos_id is not None:  # CanvasBuilder already starts the canvas with this token
        bos = load_tokenizer(info.path).id_to_token(info.bos_id)
        if bos and rendered.startswith(bos):
            rendered = rendered[len(bos):]
    return rendered
