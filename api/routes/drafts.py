"""/v1/drafts: versions of a text, with parents, lineage and character-level diffs."""

from __future__ import annotations

import difflib
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CurrentTenant, SessionDep
from api.routes.jobs import draft_public
from api.schemas import DiffOp, DiffPublic, DraftPublic, LineagePublic
from storage import repo

router = APIRouter(prefix="/v1/drafts", tags=["drafts"])


@router.get("/{draft_id}", response_model=DraftPublic)
def get_draft(draft_id: str, session: SessionDep, tenant: CurrentTenant) -> DraftPublic:
    """One draft: its text, tokens, version, parent and layout."""
    return draft_public(repo.get_draft(session, draft_id, tenant.id))


@router.get("/{draft_id}/lineage", response_model=LineagePublic)
def get_lineage(draft_id: str, session: SessionDep, tenant: CurrentTenant) -> LineagePublic:
    """The drafts this one was revised from (root first) and every revision made from it."""
    draft = repo.get_draft(session, draft_id, tenant.id)
    ancestors, descendants = repo.lineage(session, draft)
    return LineagePublic(draft_id=draft.id, ancestors=[draft_public(d) for d in ancestors],
                         descendants=[draft_public(d) for d in descendants])


@router.get("/{draft_id}/diff", response_model=DiffPublic)
def get_diff(draft_id: str, session: SessionDep, tenant: CurrentTenant,
             against: Annotated[str, Query(description="the draft to compare with (usually the parent)")]) -> DiffPublic:
    """Character-level diff from ``against`` to this draft: apply the ops' ``new`` over ``old`` in order."""
    draft = repo.get_draft(session, draft_id, tenant.id)
    other = repo.get_draft(session, against, tenant.id)
    return DiffPublic(draft_id=draft.id, against=other.id, changed=draft.text != other.text,
                      ops=char_diff(other.text, draft.text))


def char_diff(a: str, b: str) -> list[DiffOp]:
    """difflib's opcodes at character level (no junk heuristics, so the result is exact)."""
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return [
        DiffOp(op=tag, a=(i1, i2), b=(j1, j2), old="" if tag in ("equal", "insert") else a[i1:i2],
               new="" if tag in ("equal", "delete") else b[j1:j2])
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
    ]
