#!/usr/bin/env bash
# Create .venv and install Redraft with its test tools. Idempotent; torch is the CPU 2.13.0 build
# where a local file provides it (a bare `torch` would pull a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p var
[ -x .venv/bin/python ] || python3 -m venv .venv
if ! .venv/bin/python -c "import redraft, torch, fastapi, celery, hypothesis" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  echo "installing into .venv (log: var/install.log) ..."
  {
    .venv/bin/pip install --upgrade pip
    .venv/bin/pip install "torch==2.13.0"
    .venv/bin/pip install -e ".[dev]"
  } > var/install.log 2>&1 || { tail -30 var/install.log; echo "install failed; see var/install.log"; exit 1; }
  touch .venv/.installed
fi
# The browser test drives Debian's Chromium through Playwright (never `playwright install`).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium for the browser test (log: var/install.log) ..."
  { apt-get update -qq && apt-get install -y -qq chromium; } >> var/install.log 2>&1 \
    || echo "could not install chromium; tests/web will fail until /usr/bin/chromium exists"
fi
