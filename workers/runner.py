"""Runs one job by id: the real logic behind the Celery task (which only passes the id).

Idempotent by job id: ``storage.repo.claim_job`` decides whether this delivery runs (a finished job,
a cancelled one, or one another live worker holds is skipped), and a re-run after a dead attempt
starts from a clean slate, so steps and drafts are never duplicated.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis
import torch

from constraints.canvas import Canvas
from redraft.errors import Conflict, JobCancelled, RedraftError
from redraft.models import load_tokenizer, special_ids
from redraft.queue import job_channel
from redraft.settings import Settings, get_settings
from storage import repo
from storage.db import session_scope
from storage.models import Job
from constraints.generate import slot_values
from workers.adapters import get_adapter
from workers.constrained import SlotTargets, SlotVocabulary, constrained_slots
from workers.sampler import ForbidTokens, SamplerConfig, StepRecord, denoise

log = logging.getLogger(__name__)


class JobTimeout(RedraftError):
    code = "timeout"


class Publisher:
    """Publishes job events on Redis pub/sub; the database stays the source of truth."""

    def __init__(self, settings: Settings) -> None:
        self.client = redis.Redis.from_url(settings.redis_url) if settings.redis_url else None

    def publish(self, job_id: str, event: str, data: dict[str, Any]) -> None:
        if self.client is None:
            return
        try:
            self.client.publish(job_channel(job_id), json.dumps({"event": event, "data": data}))
        except redis.RedisError:  # events are a wake-up signal; readers fall back to the database
            log.warning("could not publish %s for job %s", event, job_id)


def run_job(job_id: str, settings: Settings | None = None) -> str:
    """Run a job to a terminal state; returns the status it ended in (or "skipped")."""
    settings = settings or get_settings()
    publisher = Publisher(settings)
    with session_scope() as s:
        row = s.get(Job, job_id)
        model = row.model if row else None
    # Load the model (lazily, once per process) before claiming, so a slow first load does not
    # look like a dead worker to the reaper.
    adapter, load_error = None, None
    try:  # any failure here fails the job below (after the claim), never loses it
        if model not in settings.models:
            raise RedraftError(f"this worker does not serve model {model!r}", code="unknown_model")
        adapter = get_adapter(model, settings.models[model], settings.device)
    except Exception as exc:
        load_error = exc
    with session_scope() as s:
        job = repo.claim_job(s, job_id, settings.max_attempts, settings.heartbeat_timeout_s)
        if job is None:
            return "skipped"
        attempt = job.attempts
        kind, params, canvas_json = job.kind, dict(job.params), job.canvas
    started = time.monotonic()
    try:
        if load_error is not None:
            raise load_error
        tokenizer = load_tokenizer(adapter.info.path)
        canvas = Canvas.from_json(canvas_json)
        cfg = SamplerConfig(
            steps=params["steps"],
            block_size=params.get("block_size"),
            temperature=params.get("temperature", 0.0),
            remasking=params.get("remasking", "low_confidence"),
        )
        device = adapter.device
        x = torch.tensor([canvas.token_ids], device=device)  # (1, L)
        fixed = torch.tensor([canvas.fixed], device=device)  # (1, L)
        gen = torch.Generator().manual_seed(int(params.get("seed", 0)))

        def on_step(step: int, records: list[StepRecord | None]) -> None:
            rec = records[0]
            if rec is None:
                return
            committed = [
                [p, t, tokenizer.decode([t], skip_special_tokens=False), round(c, 5)]
                for p, t, c in zip(rec.positions, rec.tokens, rec.confidences)
            ]
            with session_scope() as s:
                if not repo.still_owner(s, job_id, attempt):
                    raise JobCancelled("another attempt owns this job now", code="superseded")
                if repo.cancel_requested(s, job_id):
                    raise JobCancelled("cancelled by the client")
                repo.add_step(s, job_id, step, committed)
                repo.set_steps_run(s, job_id, step + 1)
            publisher.publish(job_id, "step", {"step": step, "committed": committed, "remasked": []})
            if time.monotonic() - started > settings.job_timeout_s:
                raise JobTimeout(f"the job ran longer than {settings.job_timeout_s} s and was stopped")

        special = special_ids(adapter.info)
        processors = [ForbidTokens(special, adapter.info.vocab_size)]
        targets = constrained_slots(canvas, tokenizer, adapter.info, special)
        vocabularies = SlotVocabulary.for_canvas(canvas, tokenizer, adapter.info, special)
        if vocabularies is not None:
            processors.append(vocabularies)
        if targets:
            processors.append(SlotTargets({0: targets}, adapter.info.empty_id))
        result = denoise(adapter.logits, x, fixed, adapter.info.mask_id, cfg, [gen], processors, on_step=on_step)
        tokens = result.tokens[0].tolist()
        text, values = canvas.render(tokens, tokenizer, adapter.info)
        extra = {"gaps": values} if kind == "infill" else {"slots": slot_values(canvas, values)}
        with session_scope() as s:
            draft = repo.finish_job(s, job_id, text=text, token_ids=tokens, result_extra=extra,
                                    steps_run=len(result.history[0]))
            draft_id = draft.id
        publisher.publish(job_id, "done", {"status": "succeeded", "draft_id": draft_id, "text": text})
        return "succeeded"
    except JobCancelled as exc:
        if exc.code == "superseded":
            return "skipped"
        with session_scope() as s:
            repo.mark_cancelled(s, job_id)
        publisher.publish(job_id, "done", {"status": "cancelled"})
        return "cancelled"
    except Conflict:  # finished meanwhile (e.g. cancelled after the last step): nothing left to write
        return "skipped"
    except RedraftError as exc:
        _fail(job_id, exc.code, exc.message, publisher)
        return "failed"
    except Exception as exc:  # a bug must fail the job visibly, never lose it
        log.exception("job %s failed", job_id)
        _fail(job_id, "internal_error", f"{type(exc).__name__}: {exc}", publisher)
        return "failed"


def _fail(job_id: str, code: str, message: str, publisher: Publisher) -> None:
    with session_scope() as s:
        repo.fail_job(s, job_id, code, message)
    publisher.publish(job_id, "failed", {"status": "failed", "error": {"code": code, "message": message}})
