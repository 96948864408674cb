"""Headless Chromium for the page tests (loaded as a pytest plugin from tests/conftest.py): the ``browser``
fixture and what every page test listens to.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and Playwright for Python (the ``dev`` extra);
Playwright drives the system browser, so ``playwright install`` is never run. A missing browser fails the
test, it never skips it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("REDRAFT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# An init script: every Content-Security-Policy violation of the page, as "directive: blocked URI", in
# window.cspViolations.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.cspViolations.push(`${e.violatedDirective}: ${e.blockedURI || "inline"}`));
"""


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"the browser test needs Chromium at {CHROMIUM}: `apt-get install -y chromium` "
                    "(or point REDRAFT_CHROMIUM at a Chromium binary)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser test needs Playwright for Python: `pip install -e '.[dev]'` "
                    "(it drives the system Chromium; do not run `playwright install`)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def watch_errors(page, *, responses: bool = True) -> list[str]:
    """The page's errors as they happen: uncaught exceptions, console errors and, with ``responses``, every
    HTTP answer of 400 or more. The list fills in while the test runs."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    if responses:
        page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    return errors
