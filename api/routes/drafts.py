"""/v1/drafts: versions of a text, with parents."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentTenant, SessionDep
from api.routes.jobs import draft_public
from api.schemas import DraftPublic
from storage import repo

router = APIRouter(prefix="/v1/drafts", tags=["drafts"])


@router.get("/{draft_id}", response_model=DraftPublic)
def get_draft(draft_id: str, session: SessionDep, tenant: CurrentTenant) -> DraftPublic:
    """One draft: its text, tokens, version and parent."""
    return draft_public(repo.get_draft(session, draft_id, tenant.id))
