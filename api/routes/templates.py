"""/v1/templates: a tenant's saved Jinja2 templates, validated on save."""

from __future__ import annotations

from fastapi import APIRouter

from redraft.api.deps import CurrentTenant, SessionDep
from redraft.api.schemas import (
    AUTHED_ERRORS,
    BODY_ERRORS,
    TemplateCreate,
    TemplatePublic,
    TemplatesPublic,
    error_responses,
)
from redraft.api.submit import check_text
from redraft.constraints.templates import validate_template
from redraft.storage import repo
from redraft.storage.tables import Template

router = APIRouter(prefix="/v1/templates", tags=["templates"], responses=AUTHED_ERRORS)


def template_public(row: Template) -> TemplatePublic:
    return TemplatePublic(name=row.name, source=row.source, description=row.description, created_at=row.created_at,
                          updated_at=row.updated_at)


@router.post("", status_code=201, response_model=TemplatePublic, responses={**BODY_ERRORS, 201: {
    "description": "saved", "links": {"GetTemplate": {"operationId": "get_template_v1_templates__name__get",
                                                      "parameters": {"name": "$response.body#/name"}}}}})
def save_template(body: TemplateCreate, session: SessionDep, tenant: CurrentTenant) -> TemplatePublic:
    """Save (or replace) a template; use it with {"kind": "generate", "template_name": ...}."""
    check_text(body.model_dump(exclude_none=True), "template")
    validate_template(body.source)
    row = repo.save_template(session, tenant.id, body.name, body.source, body.description)
    session.commit()
    return template_public(row)


@router.get("", response_model=TemplatesPublic)
def list_templates(session: SessionDep, tenant: CurrentTenant) -> TemplatesPublic:
    """The tenant's templates, by name."""
    rows = repo.list_templates(session, tenant.id)
    return TemplatesPublic(data=[template_public(r) for r in rows], count=len(rows))


@router.get("/{name}", response_model=TemplatePublic, responses=error_responses(404))
def get_template(name: str, session: SessionDep, tenant: CurrentTenant) -> TemplatePublic:
    """One saved template."""
    return template_public(repo.get_template(session, tenant.id, name))
