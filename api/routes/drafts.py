"""/v1/drafts: versions of a text, with parents, lineage and character-level diffs."""

from __future__ import annotations

import difflib
import os
from typing import Annotated

from fastapi import APIRouter, Query

from redraft.api.deps import CurrentTenant, SessionDep
from redraft.api.routes.jobs import draft_public
from redraft.api.schemas import AUTHED_ERRORS, DiffOp, DiffPublic, DraftPublic, LineagePublic, error_responses
from redraft.storage import repo

# Every route here names a draft: 404 when the tenant has none by that id.
router = APIRouter(prefix="/v1/drafts", tags=["drafts"], responses={**AUTHED_ERRORS, **error_responses(404)})


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


# SequenceMatcher is quadratic in the worst case: it only ever sees the changed middle of two drafts (what
# lies between their common prefix and suffix), and only while (middle of a) x (middle of b) stays within this.
DIFF_BUDGET = 4_000_000


def char_diff(a: str, b: str, budget: int = DIFF_BUDGET) -> list[DiffOp]:
    """Character-level opcodes from ``a`` to ``b``: exact (applying them to ``a`` gives ``b``) and bounded.

    The common prefix and suffix are equal runs found in linear time; the middle is diffed by difflib (no junk
    heuristics) when it fits the budget, and is one replace otherwise (a revision rewrites a few spans, so its
    middle is small; two unrelated 10k-character texts are not worth seconds of CPU).
    """
    p = len(os.path.commonprefix([a, b]))
    s = len(os.path.commonprefix([a[p:][::-1], b[p:][::-1]]))
    a_mid, b_mid = a[p:len(a) - s], b[p:len(b) - s]
    ops: list[DiffOp] = []
    if p:
        ops.append(DiffOp(op="equal", a=(0, p), b=(0, p), old="", new=""))
    if len(a_mid) * len(b_mid) <= budget:
        matcher = difflib.SequenceMatcher(None, a_mid, b_mid, autojunk=False)
        codes = matcher.get_opcodes()
    else:
        codes = [("replace", 0, len(a_mid), 0, len(b_mid))]
    for tag, i1, i2, j1, j2 in codes:
        if i1 == i2 and j1 == j2:
            continue
        if tag == "replace" and i1 == i2:
            tag = "insert"
        elif tag == "replace" and j1 == j2:
            tag = "delete"
        ops.append(DiffOp(op=tag, a=(p + i1, p + i2), b=(p + j1, p + j2),
                          old="" if tag in ("equal", "insert") else a_mid[i1:i2],
                          new="" if tag in ("equal", "delete") else b_mid[j1:j2]))
    if s:
        ops.append(DiffOp(op="equal", a=(len(a) - s, len(a)), b=(len(b) - s, len(b)), old="", new=""))
    return ops
