#!/usr/bin/env bash
# Fresh machine -> running service: install, start `redraft serve` (SQLite file, embedded Redis,
# API, one worker), create an API key, run a first infill job, then keep serving (Ctrl-C stops).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PORT="${PORT:-8000}"
mkdir -p var
.venv/bin/redraft serve --host 127.0.0.1 --port "$PORT" > var/serve.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT INT TERM
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  kill -0 $SERVER 2>/dev/null || { cat var/serve.log; exit 1; }
  sleep 0.5
done
KEY=$(.venv/bin/redraft keys create --tenant demo)
echo "API key for tenant 'demo': $KEY"
echo "First job:"
.venv/bin/python scripts/first_job.py --url "http://127.0.0.1:$PORT" --key "$KEY"
echo "Redraft is serving on http://127.0.0.1:$PORT (logs in var/). Ctrl-C stops it."
wait $SERVER
