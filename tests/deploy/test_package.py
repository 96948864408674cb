"""The installed distribution is one namespace: a wheel built from this tree holds ``redraft/`` and nothing else at
its top level (no ``api``, ``workers``, ``storage`` or ``constraints`` to collide with a user's packages), and the
product's folders are inside it with their data files (migrations, web templates)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_wheel_installs_one_namespace(tmp_path):
    """Built from a copy of what the Dockerfile copies (no build/ of the checkout's is reused), offline."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("redraft", "api", "workers", "constraints", "storage"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out)], check=True, timeout=300)
    (wheel,) = out.glob("redraft-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"redraft", wheel.name.split("-py")[0] + ".dist-info"}
    for path in ("redraft/api/main.py", "redraft/workers/tasks.py", "redraft/constraints/safety/guard.py",
                 "redraft/storage/migrate.py", "redraft/storage/migrations/env.py", "redraft/api/templates/base.html",
                 "redraft/workers/policies/uniform_noise.py", "redraft/api/openai/routes.py"):
        assert path in names, path
    assert any(n.startswith("redraft/storage/migrations/versions/0001") for n in names)


def test_a_checkout_imports_the_same_modules_under_the_namespace():
    """In a checkout the folders stay at the top level and are found as ``redraft.*``; nothing imports them
    under their bare names."""
    code = ("import importlib.util, sys, redraft.api.main, redraft.workers.tasks, redraft.storage.migrate; "
            "assert redraft.api.main.__file__.endswith('api/main.py'); "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('api', 'workers', 'storage', 'constraints')]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={"REDIS_URL": "redis://127.0.0.1:6379/0",
                                                                           "PATH": "/usr/bin:/bin"}, timeout=120)
