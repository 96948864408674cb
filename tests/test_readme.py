"""The README stays a true map: every setting is documented, every path the map names exists (no services)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices

from redraft.settings import REPO_ROOT, Settings

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
BACKTICKED = re.compile(r"`([^`\s]+)`")
FILE_SUFFIXES = (".py", ".md", ".toml", ".yml", ".yaml", ".sh", ".ini", ".json", ".html", ".js", ".css")


def section(title: str) -> str:
    """The text under the README's ``## title`` heading, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def env_names(name: str) -> set[str]:
    """What a Settings field is read from: REDRAFT_<NAME>, or its alias choices (DATABASE_URL, REDIS_URL)."""
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return {choice for choice in alias.choices if isinstance(choice, str)}
    if isinstance(alias, str):
        return {alias}
    return {f"REDRAFT_{name.upper()}"}


def test_every_setting_is_in_the_configuration_or_limits_table():
    documented = {
        token
        for row in table_rows(section("Configuration")) + table_rows(section("Limits"))
        for token in BACKTICKED.findall(row)
    }
    missing = {name: sorted(env_names(name)) for name in Settings.model_fields if not env_names(name) & documented}
    assert not missing, (
        f"settings missing from README.md's Configuration (or Limits) table: {missing}; add a row with the "
        "variable, its default and what it does")


def looks_like_path(token: str) -> bool:
    if token.startswith(("/", "http", "$")) or "://" in token:
        return False  # routes (/v1/jobs), URLs, shell variables
    return "/" in token or token.endswith(FILE_SUFFIXES)


def map_paths() -> list[tuple[str, Path]]:
    """Every backticked path in the "Where is what" section, resolved. A bare file name (``schedule.py``) in a
    row is relative to the last folder the row named before it (``workers/policies/``)."""
    found = []
    for line in section("Where is what").splitlines():
        folder = REPO_ROOT
        for token in BACKTICKED.findall(line):
            if not looks_like_path(token):
                continue
            path = (folder / token) if "/" not in token else (REPO_ROOT / token)
            found.append((token, path))
            if token.endswith("/"):
                folder = path
    return found


def test_the_map_names_only_real_paths():
    paths = map_paths()
    assert len(paths) > 30, "the README's 'Where is what' map names too few paths: did its format change?"
    missing = [token for token, path in paths if not (path.is_dir() if token.endswith("/") else path.is_file())]
    assert not missing, f"README.md's 'Where is what' map names paths that do not exist: {missing}; fix the map"


def test_looks_like_path():
    assert looks_like_path("workers/sampler.py") and looks_like_path("api/openai/") and looks_like_path("stream.py")
    assert not looks_like_path("/v1/jobs") and not looks_like_path("JobStatus") and not looks_like_path("vocab")
