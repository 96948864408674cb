"""Dependencies as ``Annotated`` aliases, so a handler's signature says what it needs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from redraft.errors import Unauthorized
from redraft.settings import Settings, get_settings
from redraft.storage import repo
from redraft.storage.db import get_sessionmaker
from redraft.storage.tables import Tenant


def get_session() -> Iterator[Session]:
    with get_sessionmaker()() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


# Declares the bearer scheme in the OpenAPI document; the header itself is read below, so that each way of
# getting it wrong has its own message (HTTPBearer's own errors say less).
bearer = HTTPBearer(auto_error=False, description="an API key from `redraft keys create --tenant NAME`")


def current_tenant(session: SessionDep, _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
                   authorization: Annotated[str | None, Header(include_in_schema=False)] = None) -> Tenant:
    if not authorization:
        raise Unauthorized(
            "missing API key: send `Authorization: Bearer <key>`; create a key with `redraft keys create --tenant NAME`"
        )
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("malformed Authorization header: expected `Authorization: Bearer <key>`")
    tenant = repo.tenant_for_key(session, key.strip())
    if tenant is None:
        raise Unauthorized("unknown or revoked API key; create one with `redraft keys create --tenant NAME`")
    return tenant


CurrentTenant = Annotated[Tenant, Depends(current_tenant)]
