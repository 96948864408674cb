"""The ``redraft`` command line."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path


def _cmd_train(args: argparse.Namespace) -> int:
    from redraft.training.train import TrainConfig, export, train

    cfg = TrainConfig(steps=args.steps) if args.steps else TrainConfig()
    train(Path(args.build_dir), cfg, max_minutes=args.max_minutes,
          init_from=Path(args.init_from) if args.init_from else None)
    if args.export:
        export(Path(args.build_dir), Path(args.export))
        print(f"exported to {args.export}")
    return 0


def _cmd_keys_create(args: argparse.Namespace) -> int:
    from storage import repo
    from storage.db import session_scope
    from storage.migrate import upgrade

    upgrade()
    with session_scope() as s:
        key, _ = repo.create_api_key(s, args.tenant)
    print(key)
    return 0


def _cmd_migrate(_: argparse.Namespace) -> int:
    from storage.migrate import upgrade

    upgrade()
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    """Embedded default: migrate, start redis (unless REDIS_URL is set), one worker, and the API."""
    import uvicorn

    from redraft.embedded import start_redis, start_worker
    from redraft.settings import get_settings
    from storage.migrate import upgrade

    settings = get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    upgrade()
    redis_proc = None
    if settings.redis_url is None:
        redis_proc, url = start_redis(settings.var_dir)
        os.environ["REDIS_URL"] = url
        get_settings.cache_clear()
        print(f"embedded redis-server at {url}", flush=True)
    env = {"REDIS_URL": os.environ.get("REDIS_URL", settings.redis_url or ""), "DATABASE_URL": settings.database_url}
    workers = [start_worker(env, settings.var_dir / "worker.log", settings.queue_name) for _ in range(args.workers)]
    print(f"{args.workers} worker(s) started (log: {settings.var_dir / 'worker.log'}); API on "
          f"http://{args.host}:{args.port}", flush=True)
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; with this handler that becomes a
    # SystemExit, so the cleanup below runs instead of the process dying with children left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        from api.main import create_app

        uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info")
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from redraft.training.train import export

    export(Path(args.build_dir), Path(args.out))
    print(f"exported {args.build_dir}/checkpoint.pt to {args.out}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from redraft.training.report import run_report

    print(run_report(Path(args.model_dir), Path(args.build_dir)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redraft", description="Redraft: controllable diffusion LM service")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the whole service: embedded redis (unless REDIS_URL), worker, API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="worker processes (one per GPU)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("keys", help="API keys")
    keys = p.add_subparsers(dest="keys_command", required=True)
    k = keys.add_parser("create", help="create a key for a tenant (created if new) and print it once")
    k.add_argument("--tenant", required=True)
    k.set_defaults(func=_cmd_keys_create)

    p = sub.add_parser("migrate", help="bring the database schema up to date (alembic upgrade head)")
    p.set_defaults(func=_cmd_migrate)

    p = sub.add_parser("train", help="train Redraft's small model from the packaged corpus (resumable)")
    p.add_argument("--build-dir", default="build/train", help="corpus, tokenizer and checkpoint directory")
    p.add_argument("--steps", type=int, default=None, help="total optimiser steps (default: TrainConfig.steps)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this long; run again to resume")
    p.add_argument("--export", default=None, metavar="DIR", help="write the Hugging Face model here when done")
    p.add_argument("--init-from", default=None, metavar="DIR",
                   help="warm-start from an exported model when the build dir has no checkpoint")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("export-model", help="write the latest checkpoint as a Hugging Face model directory")
    p.add_argument("--build-dir", default="build/train")
    p.add_argument("--out", default="models/redraft-tiny")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("model-report", help="held-out accuracy vs a unigram baseline, and sample infills")
    p.add_argument("--model-dir", default="models/redraft-tiny")
    p.add_argument("--build-dir", default="build/train", help="where `redraft train` put the tokenised corpus")
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
