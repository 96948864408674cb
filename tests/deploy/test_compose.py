"""There is no Docker engine here: check what can be checked of docker-compose.yml without one."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_are_the_production_set():
    assert set(COMPOSE["services"]) == {"api", "worker", "redis", "postgres", "migrate"}


def test_every_project_command_exists():
    """Each command of a service built from this repo names a module or app that imports."""
    services = COMPOSE["services"]
    assert services["migrate"]["command"] == ["python", "-m", "redraft.storage.migrate"]
    importlib.import_module("redraft.storage.migrate")
    api_cmd = services["api"]["command"]
    module, attr = api_cmd[1].split(":")
    assert api_cmd[0] == "uvicorn" and hasattr(importlib.import_module(module), attr)
    worker = services["worker"]["command"]
    assert worker[:3] == ["celery", "-A", "redraft.workers.tasks"] and "-Q" in worker and "--pool=threads" in worker
    assert worker[worker.index("-Q") + 1] == "gpu"
    assert shutil.which("celery", path=str(Path(__import__("sys").executable).parent)) is not None


def test_worker_reserves_a_gpu_and_everything_runs_offline():
    worker = COMPOSE["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    for name in ("api", "worker", "migrate"):
        env = COMPOSE["services"][name]["environment"]
        assert env["HF_HUB_OFFLINE"] == "1" and env["DATABASE_URL"].startswith("postgresql+psycopg://")


def test_the_image_copies_every_package():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("redraft", "api", "workers", "constraints", "storage", "models"):
        assert f"COPY {package} {package}" in dockerfile


def test_the_diffusiongemma_override_serves_one_model_list_on_api_and_workers():
    """docker-compose.diffusiongemma.yml: the API and the workers list the same models (the API validates what
    workers run), the checkpoint lies under the read-only /models mount, and the worker's thread pool matches
    its batch size."""
    override = yaml.safe_load((ROOT / "docker-compose.diffusiongemma.yml").read_text())
    api, worker = override["services"]["api"], override["services"]["worker"]
    assert api["environment"]["REDRAFT_MODELS"] == worker["environment"]["REDRAFT_MODELS"]
    import json

    models = json.loads(api["environment"]["REDRAFT_MODELS"])
    assert models[api["environment"]["REDRAFT_DEFAULT_MODEL"]].startswith("/models/")
    assert "./models:/models:ro" in api["volumes"]
    assert "./models:/models:ro" in COMPOSE["services"]["worker"]["volumes"]
    batch = worker["environment"]["REDRAFT_WORKER_BATCH_SIZE"]
    assert f"--concurrency={batch}" in worker["command"]
    from redraft.settings import Settings

    settings = Settings(models=models, max_gap_tokens=int(api["environment"]["REDRAFT_MAX_GAP_TOKENS"]))
    assert settings.max_gap_tokens >= 1024


def test_long_running_services_come_back_and_the_worker_is_watched():
    services = COMPOSE["services"]
    for name in ("api", "worker", "redis", "postgres"):
        assert services[name]["restart"] == "unless-stopped", name
    assert services["migrate"]["restart"] == "no"  # a one-shot
    assert services["worker"]["healthcheck"]["test"] == ["CMD", "python", "-m", "redraft.queue", "alive"]


def test_the_worker_health_check_reads_the_heartbeat(monkeypatch):
    """``python -m redraft.queue alive`` (the worker's health check) fails until a worker process on this
    host beats into Redis, then passes; against the real Redis."""
    import uuid

    from redraft.queue import Heartbeat, main
    from redraft.settings import get_settings
    from tests.utils.service import REDIS_URL

    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    monkeypatch.setenv("REDRAFT_QUEUE_NAME", f"health-{uuid.uuid4().hex[:8]}")
    get_settings.cache_clear()
    try:
        assert main(["alive"]) == 1
        beat = Heartbeat(get_settings())
        beat.beat()
        assert main(["alive"]) == 0
        beat.stop()  # a worker that shuts down removes its heartbeat
        assert main(["alive"]) == 1
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
