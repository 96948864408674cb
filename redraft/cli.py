"""The ``redraft`` command line."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import types
import typing
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO


def _cmd_train(args: argparse.Namespace) -> int:
    from redraft.errors import TrainingError

    try:
        return _train_command(args)
    except TrainingError as exc:
        print(f"redraft: {exc.message}", file=sys.stderr)
        return 2


def _train_command(args: argparse.Namespace) -> int:
    from redraft.training.data import pack, unpack
    from redraft.training.train import config_for, export, prepare_build, train

    build = Path(args.build_dir)
    cfg = config_for(args.size, steps=args.steps, token_budget=args.token_budget, batch_size=args.batch_size)
    if args.from_pack and not (build / "train_wiki.pt").exists():
        unpack(Path(args.from_pack), build)
        print(f"unpacked {args.from_pack} into {build}")
    init_from = Path(args.init_from) if args.init_from else None
    tokenizer_from = Path(args.tokenizer_from) if args.tokenizer_from else None
    if args.prepare_only:
        prepare_build(build, init_from, tokenizer_from)
    else:
        print(f"training {args.size}: {cfg.steps} steps of {cfg.tokens_per_step} tokens "
              f"({cfg.steps * cfg.tokens_per_step / 1e6:.1f}M tokens)")
        train(build, cfg, max_minutes=args.max_minutes, init_from=init_from, device=args.device,
              tokenizer_from=tokenizer_from)
    if args.pack:
        print(f"packed {build} into {pack(build, Path(args.pack))}")
    if args.export and not args.prepare_only:
        export(build, Path(args.export))
        print(f"exported to {args.export}")
    return 0


def _cmd_keys_create(args: argparse.Namespace) -> int:
    from redraft.storage import repo
    from redraft.storage.db import session_scope
    from redraft.storage.migrate import upgrade

    upgrade()
    with session_scope() as s:
        key, _ = repo.create_api_key(s, args.tenant)
    print(key)
    return 0


def _admin_command(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run an operator command on the database (migrated first); its refusals print to stderr and exit 2."""

    def run(args: argparse.Namespace) -> int:
        from redraft.errors import RedraftError
        from redraft.storage.migrate import upgrade

        upgrade()
        try:
            return func(args)
        except RedraftError as exc:
            print(f"redraft: {exc.message}", file=sys.stderr)
            return 2 if exc.status_code < 500 else 1

    return run


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment is not None else ""


def _cmd_keys_revoke(args: argparse.Namespace) -> int:
    from redraft.storage import repo
    from redraft.storage.db import session_scope
    from redraft.storage.tables import Tenant

    with session_scope() as s:
        row, now = repo.revoke_api_key(s, args.key)
        tenant = s.get_one(Tenant, row.tenant_id).name
    if now:
        print(f"revoked {row.prefix} (tenant {tenant}, created {_when(row.created_at)}); it is refused from now on")
    else:
        print(f"{row.prefix} (tenant {tenant}) was already revoked at {_when(row.revoked_at)}")
    return 0


def _cmd_keys_list(args: argparse.Namespace) -> int:
    from redraft.storage import repo
    from redraft.storage.db import session_scope

    with session_scope() as s:
        rows = repo.list_api_keys(s, repo.get_tenant(s, args.tenant).id)
    if getattr(args, "json", False):
        print(json.dumps([{"prefix": r.prefix, "created_at": r.created_at.isoformat(),
                           "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None} for r in rows], indent=2))
        return 0
    for r in rows:
        state = f"revoked {_when(r.revoked_at)}" if r.revoked_at else "active"
        print(f"{r.prefix}  created {_when(r.created_at)}  {state}")
    print(f"{len(rows)} key(s) for tenant {args.tenant} (only prefixes are kept; a key is shown once, when created)",
          file=sys.stderr)
    return 0


def _cmd_tenants_delete(args: argparse.Namespace) -> int:
    import time

    from redraft.storage import repo
    from redraft.storage.db import session_scope

    with session_scope() as s:
        tenant_id = repo.get_tenant(s, args.tenant).id
        usage = repo.tenant_usage(s, tenant_id)
        running = repo.running_job_ids(s, tenant_id)
    if running and not args.force:
        print(f"redraft: tenant {args.tenant!r} has {len(running)} running job(s) ({', '.join(running[:5])}"
              f"{', ...' if len(running) > 5 else ''}); wait for them to finish, or pass --force to cancel them "
              "first", file=sys.stderr)
        return 2
    what = ", ".join(f"{usage[k]} {k}" for k in ("keys", "jobs", "steps", "drafts", "templates"))
    if not args.yes:
        print(f"This deletes tenant {args.tenant!r} and all its data: {what}.", file=sys.stderr)
        print("Type the tenant's name to confirm: ", end="", file=sys.stderr, flush=True)
        answer = sys.stdin.readline().strip()
        if answer != args.tenant:
            print("redraft: not deleted (the name did not match; --yes skips this question)", file=sys.stderr)
            return 1
    if args.force:
        with session_scope() as s:
            if repo.cancel_tenant_jobs(s, tenant_id):
                print(f"cancel requested for the tenant's queued and running jobs; waiting up to {args.wait:g} s "
                      "for running ones to stop", file=sys.stderr)
        deadline = time.monotonic() + args.wait
        while running and time.monotonic() < deadline:
            time.sleep(0.5)
            with session_scope() as s:
                running = repo.running_job_ids(s, tenant_id)
        if running:
            print(f"{len(running)} job(s) still running; deleting anyway (their workers drop them at the next step)",
                  file=sys.stderr)
    with session_scope() as s:
        usage = repo.delete_tenant(s, tenant_id, allow_running=args.force)
    print(f"deleted tenant {args.tenant}: " + ", ".join(f"{usage[k]} {k}" for k in
                                                         ("keys", "jobs", "steps", "drafts", "templates")))
    return 0


def _cmd_migrate(_: argparse.Namespace) -> int:
    from redraft.storage.migrate import upgrade

    upgrade()
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    """Embedded default: migrate, start redis (unless REDIS_URL is set), the workers (restarted when one
    dies, ``redraft.embedded.Supervisor``), and the API."""
    import uvicorn

    from redraft.embedded import Supervisor, start_redis, start_worker
    from redraft.settings import get_settings
    from redraft.storage.migrate import upgrade

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
    workers = Supervisor(lambda: start_worker(env, settings.var_dir / "worker.log", settings.queue_name),
                         count=args.workers, delay_s=settings.worker_restart_delay_s,
                         max_delay_s=settings.worker_restart_max_delay_s).run()
    print(f"{args.workers} worker(s) started (log: {settings.var_dir / 'worker.log'}; one that exits is restarted); "
          f"API on http://{args.host}:{args.port}", flush=True)
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; with this handler that becomes a
    # SystemExit, so the cleanup below runs instead of the process dying with children left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        from redraft.api.main import create_app

        uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info")
    finally:
        workers.stop()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
    return 0


def _token_count(text: str) -> int:
    """``300M``, ``1.5G``, ``250k`` or a plain integer: a number of training tokens."""
    scale = {"k": 10**3, "m": 10**6, "g": 10**9}.get(text[-1:].lower(), 1)
    try:
        n = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a token count: {text!r} (examples: 300M, 250k, 1000000)") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"a token budget must be at least 1; got {text!r}")
    return int(n)


def _cmd_export(args: argparse.Namespace) -> int:
    from redraft.training.train import export

    export(Path(args.build_dir), Path(args.out))
    print(f"exported {args.build_dir}/checkpoint.pt to {args.out}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from redraft.errors import RedraftError
    from redraft.training.report import run_report

    # action="append" adds to a default list rather than replacing it, so the default is filled in here
    model_dirs = [Path(d) for d in (args.model_dir or ["models/redraft-tiny"])]
    try:
        report = run_report(model_dirs, Path(args.build_dir))
        print(report)
        if args.card:
            from redraft.training.card import model_card
            from redraft.training.report import load_model

            parameters = sum(p.numel() for p in load_model(model_dirs[-1]).adapter.model.parameters())
            Path(args.card).write_text(model_card(model_dirs[-1], Path(args.build_dir), report, parameters))
            print(f"wrote the model card of {model_dirs[-1]} to {args.card}", file=sys.stderr)
    except RedraftError as exc:  # models that cannot be compared, a model or build directory that is not one
        print(f"redraft: {exc.message}", file=sys.stderr)
        return 2
    return 0


# ------------------------------------------------------------------------------------------------ API client
# Subcommands that talk to a running Redraft through redraft.client. Output contract: the result text on
# stdout (``--json``: the API's JSON), progress on stderr; an error prints the API's message to stderr and
# exits 2 for a 4xx (the request was wrong) and 1 otherwise (server, connection, failed or cancelled job).

_SAMPLING_DEST = "sampling__"  # argparse dests of the options generated from api.schemas.SamplingParams


def _client(args: argparse.Namespace):
    from redraft.client import Client

    return Client(args.url, args.key)


def _client_command(func: Callable[[Any, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run ``func(client, args)``, turning the client's errors into a message on stderr and an exit code."""

    def run(args: argparse.Namespace) -> int:
        from redraft.client import JobFailed, RedraftAPIError, RedraftClientError

        try:
            with _client(args) as client:
                return func(client, args)
        except RedraftAPIError as exc:
            print(f"redraft: {exc.message} ({exc.code}, HTTP {exc.status_code})", file=sys.stderr)
            return 2 if exc.is_client_error else 1
        except JobFailed as exc:
            print(f"redraft: job {exc.job.id} failed: {exc.message} ({exc.code})", file=sys.stderr)
            return 1
        except (RedraftClientError, ValueError) as exc:
            print(f"redraft: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # a submitted job goes on in the service; `redraft jobs` shows it
            print("redraft: interrupted", file=sys.stderr)
            return 130

    return run


def _print_job(job, args: argparse.Namespace) -> int:
    """A finished (or, with --no-wait, just queued) job: its text, its id, or its JSON."""
    from redraft.jobs import ACTIVE, JobStatus

    if args.json:
        print(job.model_dump_json(indent=2))
    elif job.status in ACTIVE:
        print(job.id)
    elif job.status == JobStatus.SUCCEEDED and job.result is not None:
        print(job.result.text)
    if job.status == JobStatus.CANCELLED:
        print(f"redraft: job {job.id} was cancelled", file=sys.stderr)
        return 1
    return 0


def _run_job(client, args: argparse.Namespace, body: dict[str, Any]) -> int:
    body = {**body, **_sampling_params(args)}
    job = client.submit(body)
    if args.wait:
        job = client.wait(job.id, timeout=args.timeout)
    return _print_job(job, args)


def _sampling_params(args: argparse.Namespace) -> dict[str, Any]:
    params = {k[len(_SAMPLING_DEST):]: v for k, v in vars(args).items()
              if k.startswith(_SAMPLING_DEST) and v is not None}
    for key, value in args.param or []:
        params[key] = value
    return params


def _cmd_infill(client, args: argparse.Namespace) -> int:
    return _run_job(client, args, {"kind": "infill", "text": args.text})


def _cmd_generate(client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"kind": "generate"}
    if args.template is not None:
        body["template"] = args.template
    elif args.template_name is not None:
        body["template_name"] = args.template_name
    else:
        body["prompt"] = args.prompt
    variables = dict(args.var or []) | dict(args.var_json or [])
    if variables:
        body["variables"] = variables
    if args.regex is not None:
        body["target"] = {"regex": args.regex}
    elif args.choices is not None:
        body["target"] = {"choices": args.choices}
    elif args.json_schema is not None:
        body["target"] = {"json_schema": args.json_schema}
    if args.max_tokens is not None:
        body["max_tokens"] = args.max_tokens
    if args.min_tokens is not None:
        body["min_tokens"] = args.min_tokens
    return _run_job(client, args, body)


def _cmd_revise(client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"kind": "revise"}
    if args.draft is not None:
        body["draft_id"] = args.draft
    else:
        body["text"] = args.text
    if args.span:
        body["spans"] = args.span
    if args.auto_below is not None:
        body["auto"] = {"confidence_below": args.auto_below}
    elif args.least_confident is not None:
        body["auto"] = {"least_confident": args.least_confident}
    return _run_job(client, args, body)


def _cmd_jobs(client, args: argparse.Namespace) -> int:
    page = client.jobs(limit=args.limit, offset=args.offset)
    if args.json:
        print(page.model_dump_json(indent=2))
        return 0
    for job in page.data:
        text = job.result.text if job.result else (job.error.message if job.error else "")
        text = " ".join(text.split())
        text = text if len(text) <= 60 else text[:59] + "…"
        print(f"{job.id}  {job.kind:<8}  {job.status:<9}  {job.timings.created_at:%Y-%m-%d %H:%M:%S}  {text}")
    shown = f"{args.offset + 1}-{args.offset + len(page.data)}" if page.data else "none"
    print(f"{shown} of {page.count} job(s)", file=sys.stderr)
    return 0


class _CanvasView:
    """Draws a ``CanvasReplay`` on a terminal stream with a tqdm bar of the masks left.

    On a terminal each frame replaces the last one (ANSI cursor moves) above the bar; elsewhere (a pipe,
    a log) frames are appended, each under a ``--- step N ---`` header, and the bar is off.
    """

    def __init__(self, stream: TextIO, total: int) -> None:
        from tqdm import tqdm

        self.stream, self.tty, self.rows = stream, stream.isatty(), 0
        self.bar = tqdm(total=total, file=stream, unit="tok", dynamic_ncols=True, leave=self.tty,
                        disable=not self.tty, bar_format="{desc} |{bar}| {n_fmt}/{total_fmt} written")

    def show(self, frame: str, masks_left: int, step: int) -> None:
        self.bar.set_description_str(f"{masks_left} masks left", refresh=False)
        self.bar.n = self.bar.total - masks_left
        if not self.tty:
            label = "start" if step < 0 else f"step {step}"
            self.stream.write(f"--- {label}, {masks_left} masks left ---\n{frame}\n")
            self.stream.flush()
            return
        width, height = shutil.get_terminal_size()
        lines = frame.split("\n")
        if _rows(lines, width) > height - 2:  # keep the tail on screen: cursor moves cannot scroll back
            while lines and _rows(lines, width) > height - 3:
                lines.pop(0)
            lines.insert(0, "…")
        self.bar.clear()
        self._erase()
        self.stream.write("\n".join(lines) + "\n")
        self.rows = _rows(lines, width)
        self.bar.refresh()

    def _erase(self) -> None:
        if self.rows:
            self.stream.write(f"\x1b[{self.rows}A\x1b[J")

    def close(self, clear: bool) -> None:
        if self.tty and clear:
            self.bar.clear()
            self._erase()
            self.rows = 0
        self.bar.close()
        self.stream.flush()


def _rows(lines: list[str], width: int) -> int:
    return sum(max(1, math.ceil(len(line) / max(1, width))) for line in lines)


def _cmd_watch(client, args: argparse.Namespace) -> int:
    from redraft.client import CanvasReplay
    from redraft.jobs import JobEvent, JobStatus

    canvas = CanvasReplay(client.steps(args.job))
    view = _CanvasView(sys.stderr, canvas.total)
    view.show(canvas.render(), canvas.masks_left, -1)
    job = None
    try:
        for event in client.events(args.job):
            if event.event == JobEvent.STEP:
                canvas.apply(event.data)
                view.show(canvas.render(), canvas.masks_left, canvas.step)
            elif event.terminal:
                job = event.data
    finally:
        view.close(clear=job is not None and job.status == JobStatus.SUCCEEDED)
    if job.status == JobStatus.FAILED:
        if args.json:
            print(job.model_dump_json(indent=2))
        err = job.error
        print(f"redraft: job {job.id} failed: {err.message if err else ''} ({err.code if err else JobStatus.FAILED})",
              file=sys.stderr)
        return 1
    return _print_job(job, args)


# --- argument types: a bad value is an argparse error (usage on stderr, exit 2)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _key_json(text: str) -> tuple[str, Any]:
    key, value = _key_value(text)
    try:
        return key, json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{key}: the value is not JSON ({exc}); quote strings: {key}='\"text\"'")


def _span(text: str) -> dict[str, int]:
    parts = text.split(":")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (2, 3) or min(numbers) < 0:
        raise argparse.ArgumentTypeError(f"expected START:END or START:END:MAX_TOKENS (non-negative integers), "
                                         f"got {text!r}")
    span = {"start": numbers[0], "end": numbers[1]}
    if len(numbers) == 3:
        span["max_tokens"] = numbers[2]
    return span


def _choices(text: str) -> list[str]:
    choices = [c for c in text.split(",") if c]
    if not choices:
        raise argparse.ArgumentTypeError("expected comma-separated choices, e.g. Yes,No")
    return choices


def _json_file(path: str) -> Any:
    try:
        return json.loads(sys.stdin.read() if path == "-" else Path(path).read_text())
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc.strerror}")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{path} is not JSON: {exc}")


def _text_or_file(value: str) -> str:
    """``@FILE`` reads the file; anything else is the text itself."""
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text()
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {value[1:]}: {exc.strerror}")
    return value


def _scalar_type(annotation: Any) -> tuple[Any, list | None] | None:
    """(argparse type, choices) for a scalar field annotation (``int``, ``float | None``, ``Literal``...)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is typing.Literal:
        values = list(typing.get_args(annotation))
        return (type(values[0]), values) if values and len({type(v) for v in values}) == 1 else None
    if annotation in (int, float, str):
        return annotation, None
    if annotation is bool:
        return bool, None
    return None


def _add_sampling_options(p: argparse.ArgumentParser) -> None:
    """One option per scalar field of ``redraft.api.schemas.SamplingParams`` (``--steps``, ``--seed``, ...), so the CLI
    offers exactly what the API accepts; structured fields (``safety``) and anything else go via ``--param``."""
    from redraft.api.schemas import SamplingParams

    g = p.add_argument_group("sampling (sent only when given; the server's defaults otherwise)")
    for name, field in SamplingParams.model_fields.items():
        scalar = _scalar_type(field.annotation)
        if scalar is None:
            continue
        kind, choices = scalar
        flag = "--" + name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": _SAMPLING_DEST + name, "default": None, "help": field.description}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(type=kind, choices=choices, metavar=None if choices else name.upper())
        try:
            g.add_argument(flag, **kwargs)
        except argparse.ArgumentError:  # the name is taken by a CLI option: reachable through --param
            continue
    g.add_argument("--param", action="append", type=_key_json, metavar="KEY=JSON",
                   help="any other request field, its value as JSON, e.g. --param 'safety={\"banned\": [\"x\"]}'")


def _connection_parent() -> argparse.ArgumentParser:
    """--url/--key/--json, accepted after the subcommand too (SUPPRESS: not given there keeps the global)."""
    parent = argparse.ArgumentParser(add_help=False)
    g = parent.add_argument_group("connection and output")
    g.add_argument("--url", default=argparse.SUPPRESS,
                   help="API base URL (default: $REDRAFT_URL, else http://127.0.0.1:8000)")
    g.add_argument("--key", default=argparse.SUPPRESS, help="API key (default: $REDRAFT_API_KEY)")
    g.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="print the API's JSON instead of text")
    return parent


def _add_job_options(p: argparse.ArgumentParser) -> None:
    _add_sampling_options(p)
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                   help="wait for the job and print its text (--no-wait: print the job id at once)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the job (default 600)")


def _add_client_commands(sub: argparse._SubParsersAction) -> None:
    parent = [_connection_parent()]

    p = sub.add_parser("infill", parents=parent, help="fill the [[gap]]s of a text (needs a running API)",
                       description="Submit an infill job and print the filled text.")
    p.add_argument("text", help="text with [[gap]] or [[gap:N]] markers")
    _add_job_options(p)
    p.set_defaults(func=_client_command(_cmd_infill))

    p = sub.add_parser("generate", parents=parent, help="template or prompt-constrained generation",
                       description="Submit a generate job: a Jinja2 template with slot() calls, a saved "
                                   "template, or a prompt with an optional regex / choices / JSON-schema target.")
    form = p.add_mutually_exclusive_group(required=True)
    form.add_argument("--template", type=_text_or_file, metavar="SOURCE",
                      help="Jinja2 source with {{ slot(...) }} calls, or @FILE")
    form.add_argument("--template-name", metavar="NAME", help="a template saved with POST /v1/templates")
    form.add_argument("--prompt", metavar="TEXT", help="fixed context; the answer follows it")
    p.add_argument("--var", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="a template variable (a string); repeatable")
    p.add_argument("--var-json", action="append", type=_key_json, metavar="KEY=JSON",
                   help="a template variable given as JSON (lists, numbers); repeatable")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--regex", help="prompt form: the answer fullmatches this regex")
    target.add_argument("--choices", type=_choices, metavar="A,B,...", help="prompt form: the answer is one of these")
    target.add_argument("--json-schema", type=_json_file, metavar="FILE",
                        help="prompt form: the answer is JSON valid against this schema file (- for stdin)")
    p.add_argument("--max-tokens", type=int, help="prompt form: room for the answer")
    p.add_argument("--min-tokens", type=int, help="prompt form: the answer holds at least this many tokens")
    _add_job_options(p)
    p.set_defaults(func=_client_command(_cmd_generate))

    p = sub.add_parser("revise", parents=parent, help="re-mask and rewrite parts of a draft or a text",
                       description="Submit a revise job. Say what to rewrite with --span and/or "
                                   "--auto-below / --least-confident (or --param targets=... / safety=...).")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--draft", metavar="ID", help="a draft Redraft wrote")
    source.add_argument("--text", help="any text")
    p.add_argument("--span", action="append", type=_span, metavar="START:END[:MAX]",
                   help="rewrite characters [START, END) in at most MAX tokens; repeatable")
    auto = p.add_mutually_exclusive_group()
    auto.add_argument("--auto-below", type=float, metavar="X",
                      help="rewrite the tokens the model wrote with confidence below X (drafts only)")
    auto.add_argument("--least-confident", type=int, metavar="K", help="rewrite the K least confident tokens")
    _add_job_options(p)
    p.set_defaults(func=_client_command(_cmd_revise))

    p = sub.add_parser("jobs", parents=parent, help="list your jobs, newest first")
    p.add_argument("--limit", type=int, default=20, help="at most this many (1-200, default 20)")
    p.add_argument("--offset", type=int, default=0)
    p.set_defaults(func=_client_command(_cmd_jobs))

    p = sub.add_parser("watch", parents=parent, help="draw a job's canvas as its steps arrive, then print its text",
                       description="Stream a job's canvas on stderr (masks as _, a progress bar of masks left) "
                                   "and print the final text on stdout; a finished job is replayed.")
    p.add_argument("job", help="job id")
    p.set_defaults(func=_client_command(_cmd_watch))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redraft", description="Redraft: controllable diffusion LM service")
    parser.add_argument("--url", default=None, help="API base URL for the client commands (default: $REDRAFT_URL, "
                                                    "else http://127.0.0.1:8000)")
    parser.add_argument("--key", default=None, help="API key for the client commands (default: $REDRAFT_API_KEY)")
    parser.add_argument("--json", action="store_true", help="client commands: print the API's JSON")
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
    k = keys.add_parser("revoke", help="revoke a key: every request with it is refused (401) from now on",
                        description="Revoke a key, given whole or by the prefix `keys list` shows.")
    k.add_argument("key", metavar="KEY_OR_PREFIX", help="the key, or its prefix (at least 8 characters, rdk_...)")
    k.set_defaults(func=_admin_command(_cmd_keys_revoke))
    k = keys.add_parser("list", help="a tenant's keys: prefix, created, revoked (never the key itself)")
    k.add_argument("--tenant", required=True)
    k.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    k.set_defaults(func=_admin_command(_cmd_keys_list))

    p = sub.add_parser("tenants", help="tenants")
    tenants = p.add_subparsers(dest="tenants_command", required=True)
    t = tenants.add_parser("delete", help="delete a tenant and all its data (keys, jobs, steps, drafts, templates)",
                           description="Delete a tenant with everything it owns. Asks for the tenant's name to "
                                       "confirm unless --yes; refuses while it has running jobs unless --force.")
    t.add_argument("tenant", metavar="NAME")
    t.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    t.add_argument("--force", action="store_true",
                   help="cancel the tenant's queued and running jobs first, wait for running ones to stop "
                        "(--wait), then delete")
    t.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                   help="with --force: how long to wait for running jobs to stop (default 30)")
    t.set_defaults(func=_admin_command(_cmd_tenants_delete))

    p = sub.add_parser("migrate", help="bring the database schema up to date (alembic upgrade head)")
    p.set_defaults(func=_cmd_migrate)

    p = sub.add_parser("train", help="train Redraft's own model from the packaged corpus (resumable)")
    p.add_argument("--build-dir", default="build/train", help="corpus, tokenizer and checkpoint directory")
    p.add_argument("--size", default="tiny", choices=["tiny", "small"],
                   help="model size and recipe (redraft/training/train.py SIZES; default tiny)")
    p.add_argument("--steps", type=int, default=None, help="total optimiser steps (default: the size's own)")
    p.add_argument("--token-budget", type=_token_count, default=None, metavar="N",
                   help="train on N tokens (e.g. 300M), rounded up to whole steps; instead of --steps")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="windows a step (default: the size's own; a CPU run goes faster with fewer, e.g. 64)")
    p.add_argument("--device", default="auto", help="auto (CUDA where present), cpu or cuda")
    p.add_argument("--tokenizer-from", default=None, metavar="DIR",
                   help="a model directory whose tokenizer a new build directory uses (none: train one)")
    p.add_argument("--prepare-only", action="store_true",
                   help="make the build directory's tokenizer and tokenised corpus, then stop")
    p.add_argument("--pack", default=None, metavar="FILE",
                   help="also write the tokenised corpus and tokenizer as one file, for a host without the sources")
    p.add_argument("--from-pack", default=None, metavar="FILE",
                   help="fill an empty build directory from a --pack file instead of reading the sources")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this long; run again to resume")
    p.add_argument("--export", default=None, metavar="DIR", help="write the Hugging Face model here when done")
    p.add_argument("--init-from", default=None, metavar="DIR",
                   help="warm-start from an exported model when the build dir has no checkpoint")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("export-model", help="write the latest checkpoint as a Hugging Face model directory")
    p.add_argument("--build-dir", default="build/train")
    p.add_argument("--out", default="models/redraft-tiny")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("model-report", help="held-out accuracy vs a unigram baseline, and sample infills",
                       description="A markdown quality report of one or more models, all measured on the same "
                                   "held-out windows and positions (they must share the build directory's "
                                   "tokenizer vocabulary).")
    p.add_argument("--model-dir", action="append", default=None, metavar="DIR",
                   help="a model directory (named by its directory's name); give it again to compare several "
                        "(default: models/redraft-tiny)")
    p.add_argument("--build-dir", default="build/train", help="where `redraft train` put the tokenised corpus")
    p.add_argument("--card", default=None, metavar="FILE",
                   help="also write the last --model-dir's whole model card (its README.md) here")
    p.set_defaults(func=_cmd_report)

    _add_client_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a reader that went away shows here, inside the try, not at interpreter exit
    except BrokenPipeError:
        # `redraft --json jobs | head`: the reader closed the pipe; stop quietly, with no traceback. Python
        # flushes stdout again at exit, so point it at devnull first (the recipe in the docs of `signal`).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
