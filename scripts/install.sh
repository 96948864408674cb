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
# The browser tests (tests/web, tests/api/test_main.py) drive Debian's Chromium through Playwright (never
# `playwright install`). Where /usr/bin/chromium is missing, this installs the `chromium` package SYSTEM-WIDE with
# apt-get (outside .venv; it needs root). REDRAFT_SKIP_CHROMIUM=1 skips that: the service runs without it, only the
# browser tests fail until /usr/bin/chromium exists. CI (.ci/run) installs it either way.
if [ "${REDRAFT_SKIP_CHROMIUM:-0}" = 1 ]; then
  [ -x /usr/bin/chromium ] || echo "not installing chromium (REDRAFT_SKIP_CHROMIUM=1); the browser tests need it"
elif [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium system-wide with apt-get, for the browser tests (log: var/install.log;" \
       "REDRAFT_SKIP_CHROMIUM=1 skips this) ..."
  { apt-get update -qq && apt-get install -y -qq chromium; } >> var/install.log 2>&1 \
    || echo "could not install chromium; the browser tests will fail until /usr/bin/chromium exists"
fi
