"""Submit one infill job to a running Redraft and print the filled text (used by quickstart.sh)."""

from __future__ import annotations

import argparse
import sys
import time

import httpx

TEXT = "The capital of France is [[gap:4]]. It is known for the [[gap:6]] and its museums."


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True)
    parser.add_argument("--text", default=TEXT)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.key}"}
    with httpx.Client(base_url=args.url, headers=headers, timeout=30) as client:
        r = client.post("/v1/jobs", json={"kind": "infill", "text": args.text, "steps": 16})
        if r.status_code != 202:
            print(f"submission failed: {r.status_code} {r.text}", file=sys.stderr)
            return 1
        job = r.json()
        print(f"  job {job['id']} queued: {args.text}")
        deadline = time.monotonic() + args.timeout
        while job["status"] in ("queued", "running"):
            if time.monotonic() > deadline:
                print("  timed out waiting for the job", file=sys.stderr)
                return 1
            time.sleep(0.5)
            job = client.get(f"/v1/jobs/{job['id']}").json()
        if job["status"] != "succeeded":
            print(f"  job {job['status']}: {job['error']}", file=sys.stderr)
            return 1
        print(f"  filled in {job['timings']['steps_run']} steps: {job['result']['text']}")
        print(f"  gaps: {job['result']['gaps']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
