from __future__ import annotations

import pytest

from tests.utils.service import running_service


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request, tiny_model_dir, tmp_path_factory):
    """A running Redraft (API + one worker) on each database backend."""
    with running_service(request.param, tiny_model_dir, tmp_path_factory.mktemp(request.param)) as svc:
        yield svc


@pytest.fixture(scope="module")
def key(service):
    return service.new_key("acme")


@pytest.fixture(scope="module")
def client(service, key):
    with service.client(key) as c:
        yield c
