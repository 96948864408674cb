"""Request limits, as pure ASGI middlewares that answer before any route runs: the body's size (``BodyLimit``)
and a NUL character in the URL (``NoNulInUrl``), which no id, name or query value holds and PostgreSQL refuses."""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """Refuse a request whose body is over ``limit`` bytes with a 413 that names the limit.

    A declared ``Content-Length`` over the limit is refused at once; otherwise the body is read (never more
    than ``limit`` + one chunk) and handed to the app whole, so a chunked upload cannot get past it either.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(body)
            more = message.get("more_body", False)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"detail": f"the request body is over {self.limit:,} bytes (REDRAFT_MAX_BODY_BYTES); "
                                           "send less text, or split the document into several jobs",
                                 "code": "body_too_large"}, status_code=413)
        await response(scope, receive, send)


class NoNulInUrl:
    """A NUL character in the path is a 404 (no id or name holds one: on SQLite the lookup finds nothing, on
    PostgreSQL it would be an error, since text never holds NUL); one in the query string is a 400 naming it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"").lower()
        if "\x00" in scope["path"]:
            response = JSONResponse({"detail": "not found: the URL's path holds a NUL character (%00), which no id "
                                               "or name does", "code": "not_found"}, status_code=404)
        elif b"%00" in query or b"\x00" in query:
            response = JSONResponse({"detail": "a query parameter holds a NUL character (%00): leave it out",
                                     "code": "invalid_query"}, status_code=400)
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
