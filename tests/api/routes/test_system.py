"""Models, liveness and readiness (api/routes/system.py) through the running API on both database backends:
/v1/models is the served models' cards (behind a key), /healthz answers with no key and no dependency, and /readyz
says which of the database, Redis and the workers answer, with the queue depth. (Readiness with a real worker, and
with Redis or the database hung, is in tests/faults/test_readyz.py.)"""

from __future__ import annotations

import httpx
import pytest

from redraft.families import load_model_info
from tests.utils.service import running_service


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request, tiny_model_dir, tmp_path_factory):
    """The API on each backend with no worker: not ready, by design."""
    with running_service(request.param, tiny_model_dir, tmp_path_factory.mktemp(request.param), workers=0) as svc:
        yield svc


def test_models_health_and_readiness(service, client):
    models = client.get("/v1/models").json()
    assert models["count"] == 1
    m = models["data"][0]
    assert m["name"] == "tiny-random" and m["mask_token"] == "[MASK]" and m["context_length"] == 256
    assert m["random_weights"] is True
    assert httpx.get(f"{service.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{service.url}/readyz").json()
    assert ready["checks"]["database"] == ready["checks"]["redis"] == "ok" and "workers" in ready["checks"]


def test_a_model_card_is_the_models_own_description(client, tiny_model_dir):
    (card,) = client.get("/v1/models").json()["data"]
    info = load_model_info("tiny-random", tiny_model_dir)
    assert card == info.public()
    assert (card["family"], card["noise"], card["canvas_length"]) == (info.family, "mask", None)
    assert card["vocab_size"] == info.vocab_size and card["description"] == info.description


def test_the_models_need_a_key_and_health_does_not(service):
    with service.client(None) as anon:
        r = anon.get("/v1/models")
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        for _ in range(3):
            health = anon.get("/healthz")
            assert health.status_code == 200 and health.json() == {"status": "ok"}


def test_without_a_live_worker_it_is_not_ready_and_says_why(service, client):
    with service.client(None) as anon:
        r = anon.get("/readyz")
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "not ready" and body["workers"] == 0
        assert body["checks"] == {
            "database": "ok",
            "redis": "ok",
            "workers": "error: no live worker (no heartbeat in Redis)",
        }
        depth = body["queue_depth"]
        assert client.post("/v1/jobs", json={"kind": "infill", "text": "a [[gap:2]]"}).status_code == 202
        assert anon.get("/readyz").json()["queue_depth"] == depth + 1  # the job waits: no worker takes it


def test_the_probes_are_not_in_the_openapi_documents_authenticated_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "security" not in paths["/healthz"]["get"] and "security" not in paths["/readyz"]["get"]
    assert "503" in paths["/readyz"]["get"]["responses"]
    assert paths["/v1/models"]["get"]["security"] == [{"HTTPBearer": []}]
