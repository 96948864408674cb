"""What the tables declare, on migrated SQLite and PostgreSQL databases: Python-side defaults, unique and not-null
constraints, foreign keys with their ON DELETE rules, JSON columns and the UTC timestamp type."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from redraft.storage.db import get_sessionmaker
from redraft.storage.tables import (
    ApiKey,
    Draft,
    Job,
    Step,
    Template,
    Tenant,
    UTCDateTime,
    new_id,
    utcnow,
)


def tenant(s: Session, name: str = "acme") -> Tenant:
    t = Tenant(name=name)
    s.add(t)
    s.flush()
    return t


def job(s: Session, tenant_id: str, **values) -> Job:
    j = Job(tenant_id=tenant_id, kind="infill", model="m", request={}, params={}, canvas={}, **values)
    s.add(j)
    s.flush()
    return j


def count(s: Session, table) -> int:
    return s.scalar(select(func.count()).select_from(table))


def test_new_rows_get_their_ids_and_defaults(session, database_url):
    before = utcnow()
    t = tenant(session)
    j = job(session, t.id)
    session.add_all([Step(job_id=j.id, step=0, committed=[[0, 5, "a", 0.5]]), Step(job_id=j.id, step=1, committed=[])])
    session.commit()
    after = utcnow()
    with get_sessionmaker(database_url)() as other:  # what the database holds
        t, j = other.get_one(Tenant, t.id), other.get_one(Job, j.id)
        first, second = other.scalars(select(Step).order_by(Step.step)).all()
        assert len(t.id) == 32 and int(t.id, 16) >= 0 and t.id != j.id
        assert (j.status, j.attempts, j.cancel_requested, j.steps_run) == ("queued", 0, False, 0)
        assert (j.result, j.error_code, j.error_message, j.started_at, j.finished_at, j.enqueued_at) == (None,) * 6
        for stamp in (t.created_at, j.created_at, j.updated_at, first.created_at):
            assert before <= stamp <= after
        assert isinstance(first.id, int) and second.id > first.id  # steps number themselves
        assert first.remasked == [] and second.remasked == []
    fresh = [Step(job_id=j.id, step=2, committed=[]), Step(job_id=j.id, step=3, committed=[])]
    session.add_all(fresh)
    session.flush()
    fresh[0].remasked.append([0, 5])  # the default is a new list per row, never one shared list
    assert fresh[1].remasked == []
    session.rollback()


def test_new_id_is_a_fresh_uuid4_in_hex():
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 32 and i[12] == "4" for i in ids)


DUPLICATES = {
    "tenant name": lambda t, j: Tenant(name="acme"),
    "api key hash": lambda t, j: ApiKey(tenant_id=t.id, prefix="rdk_b", key_hash="f" * 64),
    "draft version per job": lambda t, j: Draft(tenant_id=t.id, job_id=j.id, version=1, text="b", token_ids=[]),
    "step per job": lambda t, j: Step(job_id=j.id, step=0, committed=[]),
    "template name per tenant": lambda t, j: Template(tenant_id=t.id, name="letter", source="b"),
}


def refused(session: Session, row) -> bool:
    """Whether the database refuses ``row`` (an IntegrityError at flush); the transaction is rolled back."""
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        return True
    finally:
        session.rollback()
    return False


def test_unique_constraints(session):
    t = tenant(session)
    j = job(session, t.id)
    session.add_all(
        [
            ApiKey(tenant_id=t.id, prefix="rdk_a", key_hash="f" * 64),
            Draft(tenant_id=t.id, job_id=j.id, version=1, text="a", token_ids=[]),
            Step(job_id=j.id, step=0, committed=[]),
            Template(tenant_id=t.id, name="letter", source="a"),
        ]
    )
    session.commit()
    assert [name for name, make in DUPLICATES.items() if not refused(session, make(t, j))] == []
    assert not refused(session, Tenant(name="acme2"))  # what is refused is the duplicate, not any new row


def test_uniqueness_is_per_job_and_per_tenant(session):
    a, b = tenant(session, "a"), tenant(session, "b")
    ja, jb = job(session, a.id), job(session, a.id)
    session.add_all(
        [
            Template(tenant_id=a.id, name="letter", source="x"),
            Template(tenant_id=b.id, name="letter", source="y"),
            Draft(tenant_id=a.id, job_id=ja.id, version=1, text="x", token_ids=[]),
            Draft(tenant_id=a.id, job_id=jb.id, version=1, text="y", token_ids=[]),
            Step(job_id=ja.id, step=0, committed=[]),
            Step(job_id=jb.id, step=0, committed=[]),
        ]
    )
    session.commit()
    assert (count(session, Template), count(session, Draft), count(session, Step)) == (2, 2, 2)


def test_required_columns_are_not_null(session):
    t = tenant(session)
    session.commit()
    rows = {
        "tenant without name": Tenant(),
        "job without model": Job(tenant_id=t.id, kind="infill", request={}, params={}, canvas={}),
        "draft without job": Draft(tenant_id=t.id, job_id=None, version=1, text="", token_ids=[]),
        "template without source": Template(tenant_id=t.id, name="n"),
    }
    assert [name for name, row in rows.items() if not refused(session, row)] == []


def test_foreign_keys_are_enforced(session):
    rows = {
        "job of a missing tenant": Job(tenant_id="nobody", kind="infill", model="m", request={}, params={}, canvas={}),
        "step of a missing job": Step(job_id="nojob", step=0, committed=[]),
        "key of a missing tenant": ApiKey(tenant_id="nobody", prefix="p", key_hash="0" * 64),
    }
    assert [name for name, row in rows.items() if not refused(session, row)] == []
    t = tenant(session)
    assert not refused(session, ApiKey(tenant_id=t.id, prefix="p", key_hash="0" * 64))


def test_deleting_a_tenant_deletes_everything_it_owns_and_nothing_else(session):
    kept = tenant(session, "kept")
    kept_job = job(session, kept.id)
    for owner in (tenant(session, "gone"), kept):
        j = job(session, owner.id) if owner is not kept else kept_job
        session.add_all(
            [
                ApiKey(tenant_id=owner.id, prefix="p", key_hash=new_id() * 2),
                Template(tenant_id=owner.id, name="t", source="s"),
                Step(job_id=j.id, step=0, committed=[]),
                Draft(tenant_id=owner.id, job_id=j.id, version=1, text="d", token_ids=[1]),
            ]
        )
    session.commit()
    session.execute(delete(Tenant).where(Tenant.name == "gone"))  # the database cascades, not the ORM
    session.commit()
    session.expire_all()
    counts = [count(session, table) for table in (Tenant, ApiKey, Template, Job, Step, Draft)]
    assert counts == [1, 1, 1, 1, 1, 1]
    assert session.scalars(select(Job.tenant_id)).all() == [kept.id]


def test_deleting_a_job_deletes_its_steps_and_drafts(session):
    t = tenant(session)
    j = job(session, t.id)
    session.add_all(
        [Step(job_id=j.id, step=0, committed=[]), Draft(tenant_id=t.id, job_id=j.id, version=1, text="d", token_ids=[])]
    )
    session.commit()
    session.execute(delete(Job).where(Job.id == j.id))
    session.commit()
    assert (count(session, Step), count(session, Draft), count(session, Tenant)) == (0, 0, 1)


def test_deleting_a_draft_detaches_its_children(session):
    t = tenant(session)
    j = job(session, t.id)
    parent = Draft(tenant_id=t.id, job_id=j.id, version=1, text="v1", token_ids=[])
    session.add(parent)
    session.flush()
    child = Draft(tenant_id=t.id, job_id=j.id, parent_id=parent.id, version=2, text="v2", token_ids=[])
    session.add(child)
    session.commit()
    session.execute(delete(Draft).where(Draft.id == parent.id))
    session.commit()
    session.expire_all()
    assert session.get_one(Draft, child.id).parent_id is None


def test_json_columns_round_trip_nested_values(session, database_url):
    value = {
        "text": "Grüße, 世界 🙂",
        "gaps": [{"name": "a", "max": 16}, None],
        "temperature": 0.7,
        "greedy": True,
        "nested": {"empty": [], "zero": 0, "neg": -1.5e-7},
    }
    t = tenant(session)
    j = job(session, t.id, result=value)
    session.add(
        Draft(
            tenant_id=t.id,
            job_id=j.id,
            version=1,
            text="x",
            token_ids=[0, 8191, 4],
            layout={"written": [[0, 1, 0.25]], "slots": []},
        )
    )
    session.commit()
    with get_sessionmaker(database_url)() as other:  # read back from the database, not the identity map
        assert other.get_one(Job, j.id).result == value
        draft = other.scalars(select(Draft)).one()
        assert draft.token_ids == [0, 8191, 4] and draft.layout == {"written": [[0, 1, 0.25]], "slots": []}


def test_a_naive_datetime_is_refused(session):
    t = tenant(session)
    t.created_at = datetime(2026, 1, 1, 12, 0)  # no zone: which instant is meant is unknown
    with pytest.raises(StatementError, match="naive datetime"):
        session.flush()
    session.rollback()


def test_an_aware_datetime_in_any_zone_comes_back_as_the_same_instant_in_utc(session, database_url):
    t = tenant(session)
    j = job(session, t.id, started_at=datetime(2026, 6, 1, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=-7))))
    session.commit()
    with get_sessionmaker(database_url)() as other:
        started = other.get_one(Job, j.id).started_at
    assert started == datetime(2026, 6, 1, 16, 30, 15, 123456, tzinfo=UTC) and started.tzinfo == UTC


# fixed UTC offsets (any, to the microsecond): no time-zone database needed
FIXED_OFFSETS = st.builds(timezone, st.timedeltas(-timedelta(hours=23, minutes=59), timedelta(hours=23, minutes=59)))


@settings(max_examples=100, deadline=None)
@given(st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1), timezones=FIXED_OFFSETS))
def test_utc_datetime_binds_and_reads_back_the_same_instant_on_each_dialect(value):
    column = UTCDateTime()
    lite = column.process_bind_param(value, sqlite.dialect())
    assert lite.tzinfo is None and lite == value.astimezone(UTC).replace(tzinfo=None)  # SQLite stores naive UTC
    for dialect, bound in (
        (sqlite.dialect(), lite),
        (postgresql.dialect(), column.process_bind_param(value, postgresql.dialect())),
    ):
        back = column.process_result_value(bound, dialect)
        assert back == value.astimezone(UTC) and back.tzinfo == UTC
    assert column.process_bind_param(None, sqlite.dialect()) is None
    assert column.process_result_value(None, sqlite.dialect()) is None
