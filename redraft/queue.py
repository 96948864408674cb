"""The Celery app: configuration shared by the API (which only enqueues) and the workers.

Messages carry only job ids. Long GPU jobs need ``acks_late`` + ``task_reject_on_worker_lost`` +
prefetch 1, and a Redis visibility timeout above the longest job, or Redis re-delivers a job that is
still running.
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from redraft.settings import Settings, get_settings

RUN_JOB = "redraft.run_job"


def make_celery(settings: Settings) -> Celery:
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set: workers and the API need the broker's URL")
    app = Celery("redraft", broker=settings.redis_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.queue_name,
        task_routes={RUN_JOB: {"queue": settings.queue_name}},
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


@lru_cache(maxsize=1)
def get_celery() -> Celery:
    return make_celery(get_settings())


def enqueue(job_id: str) -> None:
    """Send a job id to the GPU queue. Call only after the job row is committed."""
    get_celery().send_task(RUN_JOB, args=[job_id], queue=get_settings().queue_name)


def job_channel(job_id: str) -> str:
    """Redis pub/sub channel on which a job's step and done events are published."""
    return f"redraft:job:{job_id}"
