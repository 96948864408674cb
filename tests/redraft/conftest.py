from __future__ import annotations

import pytest

from redraft.client import Client
from tests.utils.service import Service

# A scorer directory that does not exist: any job with `safety.avoid` fails in the worker (model_error) after
# denoising, which gives the tests a real failed job without touching anything else.
BROKEN_SCORER = "classifier:/nonexistent/redraft-test-scorer"


@pytest.fixture(scope="module")
def service(tiny_model_dir, tmp_path_factory):
    """A running Redraft (API + one worker) on a SQLite file, one per test module."""
    work = tmp_path_factory.mktemp("client")
    svc = Service(f"sqlite:///{work / 'redraft.db'}", tiny_model_dir, work,
                  REDRAFT_SAFETY_SCORER=BROKEN_SCORER).start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def key(service):
    return service.new_key("acme")


@pytest.fixture(scope="module")
def rd(service, key):
    with Client(service.url, key) as client:
        yield client
