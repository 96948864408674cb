"""Python client for the Redraft job API: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Both have the same methods and return the API's own response models (``redraft.api.schemas``, torch-free), so a
result is typed and validated exactly as the server describes it::

    from redraft.client import Client

    with Client() as rd:                                  # $REDRAFT_URL, $REDRAFT_API_KEY
        job = rd.infill("The capital of France is [[gap:4]].", steps=16, wait=True)
        print(job.result.text)

Errors, one family (``RedraftClientError``):

- ``RedraftAPIError`` for every non-2xx answer: ``status_code``, the API's stable ``code`` and its
  ``message`` (the response's ``detail``);
- ``RedraftConnectionError`` when the server cannot be reached or does not answer in time (names the URL);
- ``JobFailed`` from ``wait`` when the job failed (its error ``code`` and ``message``, and the job);
- ``WaitTimeout`` (also a ``TimeoutError``) when ``wait`` gives up on a job that is still queued or running.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from redraft.api.schemas import (
    DiffPublic,
    DraftPublic,
    DraftsPublic,
    JobPublic,
    JobsPublic,
    LineagePublic,
    ModelsPublic,
    StepPublic,
    StepsPublic,
    TemplatePublic,
    TemplatesPublic,
)
from redraft.jobs import LAST_EVENTS, TERMINAL, JobEvent, JobStatus

__all__ = [
    "AsyncClient",
    "CanvasReplay",
    "Client",
    "Event",
    "JobFailed",
    "RedraftAPIError",
    "RedraftClientError",
    "RedraftConnectionError",
    "TERMINAL",
    "WaitTimeout",
]

DEFAULT_URL = "http://127.0.0.1:8000"
# The server pings an idle event stream every 15 s (sse-starlette), so a read waiting longer than this is a
# dead connection, whatever the client's ordinary timeout is.
EVENTS_READ_TIMEOUT_S = 60.0

M = TypeVar("M", bound=BaseModel)


# ------------------------------------------------------------------------------------------------ errors


class RedraftClientError(Exception):
    """Base of everything this client raises on purpose."""


class RedraftAPIError(RedraftClientError):
    """The API answered with a non-2xx status. ``code`` is the API's stable machine-readable code
    (``invalid_request``, ``not_found``, ``unauthorized``, ``conflict``, ...; ``http_error`` when the body
    carried none) and ``message`` its human ``detail``."""

    def __init__(self, status_code: int, code: str, message: str, *, method: str = "", url: str = "") -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code, self.code, self.message = status_code, code, message
        self.method, self.url = method, url

    @property
    def is_client_error(self) -> bool:
        """A 4xx: the request was wrong (input, key, id, state); sending it again will not help."""
        return 400 <= self.status_code < 500


class RedraftConnectionError(RedraftClientError):
    """No HTTP answer: the server is down, unreachable, or did not answer within the timeout."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class JobFailed(RedraftClientError):
    """The job ended ``failed``; ``code`` and ``message`` are the job's error, ``job`` the job itself."""

    def __init__(self, job: JobPublic) -> None:
        self.job = job
        self.code = job.error.code if job.error else JobStatus.FAILED
        self.message = job.error.message if job.error else "the job failed without an error message"
        super().__init__(f"job {job.id} failed: {self.code}: {self.message}")


class WaitTimeout(RedraftClientError, TimeoutError):
    """``wait`` gave up; ``job`` is the last state seen (still queued or running: the job goes on)."""

    def __init__(self, job: JobPublic, timeout: float) -> None:
        self.job = job
        super().__init__(f"job {job.id} is still {job.status} after {timeout:g} s (it keeps running; wait again "
                         f"or cancel it)")


# ------------------------------------------------------------------------------------------------ events


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event of ``/v1/jobs/{id}/events``.

    ``event`` is ``step`` (``data`` a ``StepPublic``), ``done`` (the finished ``JobPublic``: succeeded or
    cancelled) or ``failed`` (the failed ``JobPublic``). An event name this client does not know carries
    its data as parsed JSON (or the raw string), so a newer server does not break an older client.
    """

    event: str
    data: Any
    id: str | None = None

    @property
    def terminal(self) -> bool:
        return self.event in LAST_EVENTS


class _SSEParser:
    """The text/event-stream format, line by line (comments and ``retry`` ignored; multi-line data joined)."""

    def __init__(self) -> None:
        self.event, self.data, self.id = "message", [], None

    def feed(self, line: str) -> Event | None:
        if not line:
            if not self.data:
                self.event = "message"
                return None
            event = _typed_event(self.event, "\n".join(self.data), self.id)
            self.event, self.data = "message", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        elif name == "id":
            self.id = value
        return None


def _typed_event(name: str, raw: str, event_id: str | None) -> Event:
    if name == JobEvent.STEP:
        return Event(name, StepPublic.model_validate_json(raw), event_id)
    if name in LAST_EVENTS:
        return Event(name, JobPublic.model_validate_json(raw), event_id)
    try:
        return Event(name, json.loads(raw), event_id)
    except ValueError:
        return Event(name, raw, event_id)


# ------------------------------------------------------------------------------------------------ canvas


# Special tokens as tokenizers spell them ("[MASK]", "[EMPTY]", "<|endoftext|>", "</s>"): never shown.
_SPECIAL_TEXT = re.compile(r"\[[A-Z][A-Z0-9_]*\]|<\|[^|<>\s]+\|>|</?s>|<(?:pad|unk|mask)>")


class CanvasReplay:
    """A job's canvas replayed step by step, from ``GET /v1/jobs/{id}/steps`` and its ``step`` events.

    ``apply`` a step (its ``committed`` tokens, then its ``remasked`` positions, as the server records
    them); ``masks_left`` counts free positions still masked and ``render`` draws the canvas as text: fixed
    tokens from the server's ``canvas_text``, written tokens from the steps' token text, masks as ``mask``.
    Token texts that spell a special token (the empty token an unused gap position resolves to, BOS, ...)
    render as nothing. This is a view: the exact output is the job's ``result.text``.
    """

    def __init__(self, steps: StepsPublic, placeholder: str = "·") -> None:
        self.mask_id = steps.mask_id
        self.tokens = list(steps.canvas)
        self.fixed = list(steps.fixed)
        canvas_text = list(getattr(steps, "canvas_text", None) or [])
        if len(canvas_text) != len(self.tokens):  # the server could not decode (model no longer served)
            canvas_text = [placeholder if f else "" for f in self.fixed]
        self.texts = [_shown(t) if f else "" for t, f in zip(canvas_text, self.fixed)]
        self.total = self.masks_left
        self.step = -1

    @property
    def masks_left(self) -> int:
        return sum(1 for t, f in zip(self.tokens, self.fixed) if not f and t == self.mask_id)

    def apply(self, step: StepPublic) -> None:
        """Apply one step; positions outside the canvas (it was rebuilt after it was read) are ignored."""
        n = len(self.tokens)
        for position, token, text, _confidence in step.committed:
            if 0 <= position < n:
                self.tokens[position], self.texts[position] = token, _shown(text)
        for position, _token in step.remasked:
            if 0 <= position < n:
                self.tokens[position], self.texts[position] = self.mask_id, ""
        self.step = step.step

    def render(self, mask: str = "_") -> str:
        return "".join(mask if not f and t == self.mask_id else s
                       for t, f, s in zip(self.tokens, self.fixed, self.texts))


def _shown(text: str) -> str:
    return "" if _SPECIAL_TEXT.fullmatch(text) else text


# ------------------------------------------------------------------------------------------------ shared


def _resolve(url: str | None, key: str | None) -> tuple[str, str | None]:
    base = (url or os.environ.get("REDRAFT_URL") or DEFAULT_URL).rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"Redraft URL must start with http:// or https://, got {base!r}")
    return base, key if key is not None else (os.environ.get("REDRAFT_API_KEY") or None)


def _headers(key: str | None, extra: dict[str, str] | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "redraft-client"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return {**headers, **(extra or {})}


def _p(value: str) -> str:
    """One path segment, escaped."""
    return quote(str(value), safe="")


def _job_body(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """A job request: ``kind`` plus every parameter given (``None`` means "not given": the server's default)."""
    return {"kind": kind, **{k: v for k, v in params.items() if v is not None}}


def _dump(body: dict[str, Any] | BaseModel) -> dict[str, Any]:
    if isinstance(body, BaseModel):
        return body.model_dump(mode="json", exclude_unset=True)
    return dict(body)


def _api_error(resp: httpx.Response) -> RedraftAPIError:
    """The API's ``{"detail", "code"}`` body as an exception (anything else: the status and the text)."""
    code, message = "http_error", resp.reason_phrase or f"HTTP {resp.status_code}"
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        message = detail if isinstance(detail, str) else json.dumps(detail)
        code = str(body.get("code") or code)
    elif resp.text.strip():
        message = resp.text.strip()[:500]
    return RedraftAPIError(resp.status_code, code, message, method=resp.request.method, url=str(resp.request.url))


def _transport_error(exc: httpx.TransportError, base: str, method: str, path: str) -> RedraftConnectionError:
    url = f"{base}{path}"
    if isinstance(exc, httpx.TimeoutException):
        msg = f"Redraft at {base} did not answer {method} {path} in time ({type(exc).__name__})"
    else:
        msg = f"cannot reach Redraft at {base} ({method} {path}): {exc or type(exc).__name__}"
    return RedraftConnectionError(msg, url=url)


def _parse(resp: httpx.Response, model: type[M]) -> M:
    if not resp.is_success:
        raise _api_error(resp)
    return model.model_validate(resp.json())


def _failed_or(job: JobPublic, raise_on_failure: bool) -> JobPublic:
    if raise_on_failure and job.status == JobStatus.FAILED:
        raise JobFailed(job)
    return job


# ------------------------------------------------------------------------------------------------ sync


class Client:
    """A blocking client. ``url`` defaults to ``$REDRAFT_URL`` (else http://127.0.0.1:8000), ``key`` to
    ``$REDRAFT_API_KEY``; ``timeout`` is seconds per HTTP request. Use it as a context manager or ``close``."""

    def __init__(self, url: str | None = None, key: str | None = None, *, timeout: float = 30.0,
                 headers: dict[str, str] | None = None) -> None:
        self.url, self.key = _resolve(url, key)
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.url, headers=_headers(self.key, headers), timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, model: type[M], **kwargs: Any) -> M:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.url, method, path) from exc
        return _parse(resp, model)

    # jobs
    def submit(self, body: dict[str, Any] | BaseModel) -> JobPublic:
        """Queue a job (``{"kind": "infill" | "generate" | "revise", ...}``, or a ``*JobCreate`` model);
        returns it as queued. Bad input raises ``RedraftAPIError`` (422) and nothing is written."""
        return self._request("POST", "/v1/jobs", JobPublic, json=_dump(body))

    def infill(self, text: str | None = None, *, wait: bool = False, **params: Any) -> JobPublic:
        """An infill job: ``text`` with ``[[gap]]`` / ``[[gap:N]]`` markers (or ``segments=[...]``), plus any
        sampling parameter (``steps``, ``seed``, ``temperature``, ``model``, ``safety``, ...). ``wait=True``
        returns the finished job (see ``wait``)."""
        job = self.submit(_job_body("infill", {"text": text, **params}))
        return self.wait(job.id) if wait else job

    def generate(self, *, wait: bool = False, **params: Any) -> JobPublic:
        """A generate job: ``template=`` (with ``variables=``), ``template_name=`` or ``prompt=`` (with
        ``target={"regex": ...}`` and ``max_tokens=``), plus sampling parameters."""
        job = self.submit(_job_body("generate", params))
        return self.wait(job.id) if wait else job

    def revise(self, draft_id: str | None = None, text: str | None = None, *, wait: bool = False,
               **params: Any) -> JobPublic:
        """A revise job on a draft (``draft_id``) or any ``text``, with ``spans=``, ``auto=``, ``targets=``
        and/or ``safety=``."""
        job = self.submit(_job_body("revise", {"draft_id": draft_id, "text": text, **params}))
        return self.wait(job.id) if wait else job

    def job(self, job_id: str) -> JobPublic:
        return self._request("GET", f"/v1/jobs/{_p(job_id)}", JobPublic)

    def jobs(self, limit: int = 50, offset: int = 0) -> JobsPublic:
        """The tenant's jobs, newest first (``limit`` 1-200)."""
        return self._request("GET", "/v1/jobs", JobsPublic, params={"limit": limit, "offset": offset})

    def cancel(self, job_id: str) -> JobPublic:
        """A queued job never runs; a running one stops at its next step. A finished one: 409."""
        return self._request("POST", f"/v1/jobs/{_p(job_id)}/cancel", JobPublic)

    def wait(self, job_id: str, timeout: float = 600.0, poll: float = 0.25, *,
             raise_on_failure: bool = True) -> JobPublic:
        """Poll until the job is ``succeeded``, ``failed`` or ``cancelled`` and return it. A failed job
        raises ``JobFailed`` unless ``raise_on_failure=False``; still unfinished after ``timeout`` seconds
        raises ``WaitTimeout`` (the job itself goes on)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job.status in TERMINAL:
                return _failed_or(job, raise_on_failure)
            if time.monotonic() >= deadline:
                raise WaitTimeout(job, timeout)
            time.sleep(max(0.0, min(poll, deadline - time.monotonic())))

    def events(self, job_id: str) -> Iterator[Event]:
        """The job's Server-Sent Events: every step so far, each new ``step``, then one ``done`` or
        ``failed``, after which the iterator ends (for a finished job: its stored steps, then the end)."""
        path = f"/v1/jobs/{_p(job_id)}/events"
        timeout = httpx.Timeout(self.timeout, read=max(self.timeout, EVENTS_READ_TIMEOUT_S))
        try:
            with self._http.stream("GET", path, headers={"Accept": "text/event-stream"}, timeout=timeout) as resp:
                if not resp.is_success:
                    resp.read()
                    raise _api_error(resp)
                parser = _SSEParser()
                for line in resp.iter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        yield event
                        if event.terminal:
                            return
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.url, "GET", path) from exc
        raise RedraftConnectionError(f"the event stream of job {job_id} ended before `done` or `failed`",
                                     url=f"{self.url}{path}")

    def steps(self, job_id: str) -> StepsPublic:
        """The starting canvas and every step so far (see ``CanvasReplay``)."""
        return self._request("GET", f"/v1/jobs/{_p(job_id)}/steps", StepsPublic)

    # drafts
    def drafts(self, job_id: str) -> DraftsPublic:
        """The drafts a job produced (a revise of ``text`` makes the imported version 1 and its revision)."""
        return self._request("GET", f"/v1/jobs/{_p(job_id)}/drafts", DraftsPublic)

    def draft(self, draft_id: str) -> DraftPublic:
        return self._request("GET", f"/v1/drafts/{_p(draft_id)}", DraftPublic)

    def diff(self, draft_id: str, against: str) -> DiffPublic:
        """Character-level ops from ``against`` to ``draft_id``."""
        return self._request("GET", f"/v1/drafts/{_p(draft_id)}/diff", DiffPublic, params={"against": against})

    def lineage(self, draft_id: str) -> LineagePublic:
        return self._request("GET", f"/v1/drafts/{_p(draft_id)}/lineage", LineagePublic)

    # models and templates
    def models(self) -> ModelsPublic:
        return self._request("GET", "/v1/models", ModelsPublic)

    def save_template(self, name: str, source: str, description: str | None = None) -> TemplatePublic:
        """Save (or replace) a template for ``generate(template_name=name)``; validated on save (422)."""
        body = {"name": name, "source": source, **({"description": description} if description is not None else {})}
        return self._request("POST", "/v1/templates", TemplatePublic, json=body)

    def templates(self) -> TemplatesPublic:
        return self._request("GET", "/v1/templates", TemplatesPublic)

    def template(self, name: str) -> TemplatePublic:
        return self._request("GET", f"/v1/templates/{_p(name)}", TemplatePublic)


# ------------------------------------------------------------------------------------------------ async


class AsyncClient:
    """``Client``'s methods as coroutines (``events`` is an async iterator), on ``httpx.AsyncClient``.
    Use ``async with`` or ``await aclose()``."""

    def __init__(self, url: str | None = None, key: str | None = None, *, timeout: float = 30.0,
                 headers: dict[str, str] | None = None) -> None:
        self.url, self.key = _resolve(url, key)
        self.timeout = timeout
        self._http = httpx.AsyncClient(base_url=self.url, headers=_headers(self.key, headers), timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, model: type[M], **kwargs: Any) -> M:
        try:
            resp = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.url, method, path) from exc
        return _parse(resp, model)

    # jobs
    async def submit(self, body: dict[str, Any] | BaseModel) -> JobPublic:
        """See ``Client.submit``."""
        return await self._request("POST", "/v1/jobs", JobPublic, json=_dump(body))

    async def infill(self, text: str | None = None, *, wait: bool = False, **params: Any) -> JobPublic:
        """See ``Client.infill``."""
        job = await self.submit(_job_body("infill", {"text": text, **params}))
        return await self.wait(job.id) if wait else job

    async def generate(self, *, wait: bool = False, **params: Any) -> JobPublic:
        """See ``Client.generate``."""
        job = await self.submit(_job_body("generate", params))
        return await self.wait(job.id) if wait else job

    async def revise(self, draft_id: str | None = None, text: str | None = None, *, wait: bool = False,
                     **params: Any) -> JobPublic:
        """See ``Client.revise``."""
        job = await self.submit(_job_body("revise", {"draft_id": draft_id, "text": text, **params}))
        return await self.wait(job.id) if wait else job

    async def job(self, job_id: str) -> JobPublic:
        return await self._request("GET", f"/v1/jobs/{_p(job_id)}", JobPublic)

    async def jobs(self, limit: int = 50, offset: int = 0) -> JobsPublic:
        return await self._request("GET", "/v1/jobs", JobsPublic, params={"limit": limit, "offset": offset})

    async def cancel(self, job_id: str) -> JobPublic:
        return await self._request("POST", f"/v1/jobs/{_p(job_id)}/cancel", JobPublic)

    async def wait(self, job_id: str, timeout: float = 600.0, poll: float = 0.25, *,
                   raise_on_failure: bool = True) -> JobPublic:
        """See ``Client.wait``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            job = await self.job(job_id)
            if job.status in TERMINAL:
                return _failed_or(job, raise_on_failure)
            if loop.time() >= deadline:
                raise WaitTimeout(job, timeout)
            await asyncio.sleep(max(0.0, min(poll, deadline - loop.time())))

    async def events(self, job_id: str) -> AsyncIterator[Event]:
        """See ``Client.events``."""
        path = f"/v1/jobs/{_p(job_id)}/events"
        timeout = httpx.Timeout(self.timeout, read=max(self.timeout, EVENTS_READ_TIMEOUT_S))
        try:
            async with self._http.stream("GET", path, headers={"Accept": "text/event-stream"},
                                         timeout=timeout) as resp:
                if not resp.is_success:
                    await resp.aread()
                    raise _api_error(resp)
                parser = _SSEParser()
                async for line in resp.aiter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        yield event
                        if event.terminal:
                            return
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.url, "GET", path) from exc
        raise RedraftConnectionError(f"the event stream of job {job_id} ended before `done` or `failed`",
                                     url=f"{self.url}{path}")

    async def steps(self, job_id: str) -> StepsPublic:
        return await self._request("GET", f"/v1/jobs/{_p(job_id)}/steps", StepsPublic)

    # drafts
    async def drafts(self, job_id: str) -> DraftsPublic:
        return await self._request("GET", f"/v1/jobs/{_p(job_id)}/drafts", DraftsPublic)

    async def draft(self, draft_id: str) -> DraftPublic:
        return await self._request("GET", f"/v1/drafts/{_p(draft_id)}", DraftPublic)

    async def diff(self, draft_id: str, against: str) -> DiffPublic:
        return await self._request("GET", f"/v1/drafts/{_p(draft_id)}/diff", DiffPublic, params={"against": against})

    async def lineage(self, draft_id: str) -> LineagePublic:
        return await self._request("GET", f"/v1/drafts/{_p(draft_id)}/lineage", LineagePublic)

    # models and templates
    async def models(self) -> ModelsPublic:
        return await self._request("GET", "/v1/models", ModelsPublic)

    async def save_template(self, name: str, source: str, description: str | None = None) -> TemplatePublic:
        body = {"name": name, "source": source, **({"description": description} if description is not None else {})}
        return await self._request("POST", "/v1/templates", TemplatePublic, json=body)

    async def templates(self) -> TemplatesPublic:
        return await self._request("GET", "/v1/templates", TemplatesPublic)

    async def template(self, name: str) -> TemplatePublic:
        return await self._request("GET", f"/v1/templates/{_p(name)}", TemplatePublic)
