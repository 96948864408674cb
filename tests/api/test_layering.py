"""The API process never imports torch: it validates and compiles, the workers denoise."""

from __future__ import annotations

import subprocess
import sys


def test_api_does_not_import_torch():
    code = "import redraft.api.main, sys; assert 'torch' not in sys.modules, 'api imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
