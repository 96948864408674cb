"""``GET /metrics`` for Prometheus, and what the API observes about each request (its log line, its rejections).

A scrape adds up the files every process wrote (``redraft.metrics``: step latency and forward time from the
workers, compile time and rejections from the API) and reads a few gauges live: jobs by state from the database
and the queue's depth from Redis, each under ``settings.metrics_scrape_timeout_s``, and the automaton cache's size
from this process. A source that does not answer is left out and reported as ``redraft_metrics_source_up 0``;
the scrape itself always answers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager

import redis
from fastapi import APIRouter, Response
from kombu.transport.redis import Channel
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from redraft import metrics
from redraft.api.deps import SettingsDep
from redraft.jobs import JobStatus
from redraft.logs import configure_logging
from redraft.queue import broker_client, queue_depth
from redraft.settings import Settings
from redraft.storage.db import database_engine
from redraft.storage.tables import Job

log = logging.getLogger(__name__)
access_log = logging.getLogger("redraft.access")

router = APIRouter(include_in_schema=False)

JOB_STATES = tuple(JobStatus)  # every state is reported, 0 when no job is in it
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes: logged at DEBUG
_MAX_ERROR_BODY = 64 * 1024  # a 4xx body longer than this is not parsed for its `code`


def observe_compile() -> AbstractContextManager:
    """Time one request's compilation into ``redraft_compile_seconds`` (refused ones too)::

        with observe_compile():
            canvas = compile_request(req, info, settings, saved)
    """
    return metrics.COMPILE_SECONDS.time()


class LiveGauges(Collector):
    """Gauges read at scrape time: jobs by state, queue depth, the automaton cache, and which sources answered."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("redraft_metrics_source_up", "Whether a source of the live gauges answered this "
                               "scrape (1) or was left out (0)", labels=["source"])
        for source, read in (("database", self._jobs), ("redis", self._queue), ("automaton_cache", self._cache)):
            try:
                families = read()
            except Exception as exc:  # a scrape must answer whatever is down; say what was left out
                first_line = str(exc).splitlines()[0] if str(exc) else ""
                log.warning("metrics: %s left out of this scrape: %s: %s", source, type(exc).__name__, first_line)
                up.add_metric([source], 0)
                continue
            up.add_metric([source], 1)
            yield from families
        yield up

    def _jobs(self) -> list[Metric]:
        engine = database_engine(self.settings.database_url)
        with engine.connect() as conn, conn.begin():
            if conn.dialect.name == "postgresql":  # SQLite readers never wait in WAL mode
                ms = int(self.settings.metrics_scrape_timeout_s * 1000)
                conn.execute(text(f"SET LOCAL statement_timeout = {ms}"))
            counts = dict(conn.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        gauge = GaugeMetricFamily("redraft_jobs", "Jobs in the database by state", labels=["state"])
        for state in (*JOB_STATES, *sorted(set(counts) - set(JOB_STATES))):
            gauge.add_metric([state], counts.get(state, 0))
        return [gauge]

    def _queue(self) -> list[Metric]:
        """Messages waiting in the Celery queue (kombu's Redis layout: one list per priority step) and messages
        delivered to a worker but not yet acknowledged."""
        if not self.settings.redis_url:
            raise redis.ConnectionError("REDIS_URL is not set")
        queue = self.settings.queue_name
        with broker_client(self.settings, timeout_s=self.settings.metrics_scrape_timeout_s) as client:
            waiting, unacked = queue_depth(client, queue), client.hlen(Channel.unacked_key)
        depth = GaugeMetricFamily("redraft_queue_depth", "Job messages waiting in the queue", labels=["queue"])
        depth.add_metric([queue], waiting)
        held = GaugeMetricFamily("redraft_queue_unacked", "Job messages delivered to workers and not yet "
                                 "acknowledged (all queues on this Redis)")
        held.add_metric([], unacked)
        return [depth, held]

    def _cache(self) -> list[Metric]:
        """The compiled-automaton cache of this API process (read through the cache's own lock)."""
        from redraft.constraints import automaton

        with automaton._lock:
            size = automaton._cached_bytes()
            entries = sum(len(per_tokenizer) for per_tokenizer in automaton._automata.values())
        nbytes = GaugeMetricFamily("redraft_automaton_cache_bytes", "Bytes of tables in the automaton cache")
        nbytes.add_metric([], size)
        count = GaugeMetricFamily("redraft_automaton_cache_entries", "Compiled automata in the cache")
        count.add_metric([], entries)
        return [nbytes, count]


def render(settings: Settings) -> bytes:
    """The exposition text: every process's metrics files (or this process's metrics) and the live gauges."""
    live = CollectorRegistry(auto_describe=False)
    live.register(LiveGauges(settings))
    if not metrics.MULTIPROCESS:
        return generate_latest(REGISTRY) + generate_latest(live)
    for attempt in range(2):
        files = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(files, path=str(metrics.metrics_dir(settings)))
        try:
            return generate_latest(files) + generate_latest(live)
        except FileNotFoundError:  # a starting process removed a dead one's file mid-read: read again
            if attempt:
                raise
    raise AssertionError("unreachable")


@router.get("/metrics")
def scrape(settings: SettingsDep) -> Response:
    """Prometheus exposition (unauthenticated, as Prometheus expects; REDRAFT_METRICS_ENABLED=false removes it)."""
    return Response(render(settings), media_type=CONTENT_TYPE_LATEST)


class RequestObserver:
    """Pure ASGI middleware around the whole app (add it last, so it is outermost).

    For each HTTP request it writes one ``redraft.access`` record (``method``, ``path``, ``status``,
    ``duration_ms``; at DEBUG for probes and scrapes) and counts a 4xx in ``redraft_rejections_total`` by the
    ``code`` of its JSON body, whichever part of the app refused it (a handler, the body limit, a quota). When the
    ASGI lifespan starts it sets up logging (``redraft.logs``), after the server has set up its own.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            configure_logging(self.settings)
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, error_body, is_json = 500, bytearray(), False

        async def observed(message: Message) -> None:
            nonlocal status, is_json
            if message["type"] == "http.response.start":
                status = message["status"]
                content_type = dict(message.get("headers") or []).get(b"content-type", b"")
                is_json = content_type.startswith(b"application/json")
            elif message["type"] == "http.response.body" and 400 <= status < 500 and is_json:
                if len(error_body) <= _MAX_ERROR_BODY:
                    error_body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    _count_rejection(status, bytes(error_body))
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            path = scope.get("path", "")
            access_log.log(logging.DEBUG if path in QUIET_PATHS else logging.INFO, "%s %s %d %.1f ms",
                           scope.get("method", ""), path, status, duration_ms,
                           extra={"method": scope.get("method", ""), "path": path, "status": status,
                                  "duration_ms": duration_ms})


def _count_rejection(status: int, body: bytes) -> None:
    try:
        parsed = json.loads(body) if len(body) <= _MAX_ERROR_BODY else {}
        # Redraft's shape {"detail", "code"}, or OpenAI's {"error": {"message", "code", ...}} under /openai/v1
        code = parsed.get("code") or (parsed.get("error") or {}).get("code")
    except (ValueError, AttributeError):
        code = None
    metrics.REJECTIONS.labels(code=str(code) if isinstance(code, str) else "unknown", status=str(status)).inc()
