"""The ``redraft`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_train(args: argparse.Namespace) -> int:
    from redraft.training.train import TrainConfig, export, train

    cfg = TrainConfig(steps=args.steps) if args.steps else TrainConfig()
    train(Path(args.build_dir), cfg, max_minutes=args.max_minutes)
    if args.export:
        export(Path(args.build_dir), Path(args.export))
        print(f"exported to {args.export}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redraft", description="Redraft: controllable diffusion LM service")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train Redraft's small model from the packaged corpus (resumable)")
    p.add_argument("--build-dir", default="build/train", help="corpus, tokenizer and checkpoint directory")
    p.add_argument("--steps", type=int, default=None, help="total optimiser steps (default: TrainConfig.steps)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this long; run again to resume")
    p.add_argument("--export", default=None, metavar="DIR", help="write the Hugging Face model here when done")
    p.set_defaults(func=_cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
