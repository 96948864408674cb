from __future__ import annotations

import pytest

from tests.utils.fixtures import *  # noqa: F401,F403
from tests.utils.service import Service, create_pg_database, drop_pg_database


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request, tiny_model_dir, tmp_path_factory):
    """A running Redraft (API + one worker) on each database backend."""
    work = tmp_path_factory.mktemp(f"service-{request.param}")
    pg_name = None
    if request.param == "sqlite":
        url = f"sqlite:///{work / 'redraft.db'}"
    else:
        pg_name, url = create_pg_database()
    svc = Service(url, tiny_model_dir, work).start(workers=1)
    yield svc
    svc.stop()
    if pg_name:
        drop_pg_database(pg_name)


@pytest.fixture(scope="module")
def key(service):
    return service.new_key("acme")


@pytest.fixture(scope="module")
def client(service, key):
    with service.client(key) as c:
        yield c
