"""The one settings object (redraft/settings.py): every field is read from its environment variable through
pydantic-settings, a bad value is refused at start-up naming the setting, and the defaults are declared in one
place (Settings) and hold together. tests/test_readme.py checks that every setting is documented."""

from __future__ import annotations

import ast
import functools
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Union, get_args, get_origin

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import AliasChoices, ValidationError
from pydantic_settings import SettingsError

from redraft.settings import DEFAULT_MODEL_DIR, REPO_ROOT, Settings, get_settings

FIELDS = Settings.model_fields
# Text an environment variable can hold (no NUL, no lone surrogates).
ENV_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=24)
BOOLS = [
    ("true", True),
    ("false", False),
    ("1", True),
    ("0", False),
    ("yes", True),
    ("no", False),
    ("on", True),
    ("off", False),
    ("TRUE", True),
]
SOURCE_PACKAGES = ("redraft", "api", "workers", "constraints", "storage")


def env_names(name: str) -> list[str]:
    """The variables a field is read from: its alias choices, else REDRAFT_ and the name in capitals."""
    alias = FIELDS[name].validation_alias
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    return [f"REDRAFT_{name.upper()}"]


ALL_ENV_NAMES = {env for name in FIELDS for env in env_names(name)}


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Exactly ``values`` as the settings' environment: every other REDRAFT_* (and DATABASE_URL / REDIS_URL) unset."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.upper().startswith("REDRAFT_") or name.upper() in ALL_ENV_NAMES:
                mp.delenv(name)
        for name, value in values.items():
            mp.setenv(name, value)
        get_settings.cache_clear()
        try:
            yield
        finally:
            get_settings.cache_clear()


def _bounds(name: str) -> dict[str, float]:
    return {
        kind: getattr(m, kind)
        for m in FIELDS[name].metadata
        for kind in ("ge", "gt", "le", "lt")
        if getattr(m, kind, None) is not None
    }


def _base_type(name: str) -> type:
    annotation = FIELDS[name].annotation
    if get_origin(annotation) in (Union, type(str | None)):  # str | None, Path | None
        return next(a for a in get_args(annotation) if a is not type(None))
    return annotation


def fits_the_defaults(name: str, value: object) -> bool:
    """Whether ``value`` for this one setting agrees with every other setting's default (Settings refuses
    pairs that do not, e.g. REDRAFT_DEFAULT_STEPS above REDRAFT_MAX_STEPS: test_inconsistent_pairs_...)."""
    try:
        Settings(**{name: value})
    except ValidationError:
        return False
    return True


def valid_values(name: str) -> st.SearchStrategy[tuple[str, object]]:
    """(the variable's text, the value the field must then hold), within the field's declared bounds and
    consistent with the other settings' defaults."""
    return _values_within_bounds(name).filter(lambda pair: fits_the_defaults(name, pair[1]))


def _values_within_bounds(name: str) -> st.SearchStrategy[tuple[str, object]]:
    kind, b = _base_type(name), _bounds(name)
    default_model = FIELDS["default_model"].default
    if name == "default_model":  # must name one of REDRAFT_MODELS, whose default holds only this one
        return st.just((default_model, default_model))
    if kind is bool:
        return st.sampled_from(BOOLS)
    if kind is int:
        lo = b["ge"] if "ge" in b else b["gt"] + 1 if "gt" in b else -(2**40)
        hi = b["le"] if "le" in b else b["lt"] - 1 if "lt" in b else 2**40
        return st.integers(int(lo), int(hi)).map(lambda v: (str(v), v))
    if kind is float:
        floats = st.floats(
            min_value=b.get("ge", b.get("gt", -1e9)),
            max_value=b.get("le", b.get("lt", 1e9)),
            exclude_min="gt" in b,
            exclude_max="lt" in b,
            allow_nan=False,
        )
        return floats.map(lambda v: (repr(v), v))
    if get_origin(kind) is Literal:
        return st.sampled_from(get_args(kind)).map(lambda v: (v, v))
    if kind is str:
        return ENV_TEXT.map(lambda v: (v, v))
    if kind is Path:
        return ENV_TEXT.map(lambda v: (v, Path(v)))
    if get_origin(kind) is dict:  # REDRAFT_MODELS: JSON, name -> directory
        models = st.dictionaries(ENV_TEXT, ENV_TEXT, max_size=3).map(lambda d: {**d, default_model: "models/x"})
        return models.map(lambda d: (json.dumps(d), {k: Path(v) for k, v in d.items()}))
    raise AssertionError(f"no strategy for the setting {name} ({kind}): add one")


def invalid_values(name: str) -> st.SearchStrategy[str] | None:
    """Text the field must refuse, or None for free text (str and Path fields take anything)."""
    kind, b = _base_type(name), _bounds(name)
    if kind in (int, float):
        wrong = [st.sampled_from(["", "not-a-number", "1,5", "ten"])]
        number = st.integers if kind is int else lambda **k: st.floats(allow_nan=False, allow_infinity=False, **k)
        if "ge" in b:
            wrong.append(
                number(
                    max_value=(b["ge"] - 1) if kind is int else b["ge"],
                    **({} if kind is int else {"exclude_max": True}),
                )
            )
        if "gt" in b:
            wrong.append(number(max_value=int(b["gt"]) if kind is int else b["gt"]))
        if "le" in b:
            wrong.append(
                number(
                    min_value=(b["le"] + 1) if kind is int else b["le"],
                    **({} if kind is int else {"exclude_min": True}),
                )
            )
        if kind is float and b:
            wrong.append(st.just("nan"))  # compares false with any bound
        if kind is float and "le" in b:
            wrong.append(st.sampled_from(["inf", "1e400"]))
        return st.one_of(*(s.map(str) for s in wrong))
    if kind is bool:
        return st.sampled_from(["maybe", "2", "", "enabled"])
    if get_origin(kind) is Literal:
        text = ENV_TEXT.map(str.upper) if name == "log_level" else ENV_TEXT  # the level is read in capitals
        return text.filter(lambda v: v not in get_args(kind))
    return None


# ---- read from the environment ----------------------------------------------------------------------


@functools.cache
def unset() -> dict[str, object]:
    """Every field's value with no settings variable set."""
    with environment():
        return dict(Settings())


@pytest.mark.parametrize("name,env", [(n, e) for n in FIELDS for e in env_names(n)])
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_every_setting_is_read_from_its_environment_variable(name, env, data):
    text, expected = data.draw(valid_values(name), label=env)
    with environment(**{env: text}):
        read = dict(get_settings())
    assert read[name] == expected
    assert {n: v for n, v in read.items() if n != name} == {n: v for n, v in unset().items() if n != name}


@pytest.mark.parametrize("name", [n for n in FIELDS if invalid_values(n) is not None])
@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_a_bad_value_is_refused_at_start_up_naming_the_setting(name, data):
    env = env_names(name)[0]
    text = data.draw(invalid_values(name), label=env)
    with environment(**{env: text}), pytest.raises(ValidationError) as refused:
        get_settings()
    (error,) = refused.value.errors()
    assert error["loc"] == (name,) and error["input"] == text
    assert name in str(refused.value)


@pytest.mark.parametrize(
    "env,message",
    [
        ({"REDRAFT_DEFAULT_MODEL": "llada"}, "REDRAFT_DEFAULT_MODEL 'llada' is not one of REDRAFT_MODELS"),
        ({"REDRAFT_DEFAULT_STEPS": "2000"}, "REDRAFT_DEFAULT_STEPS=2000 is above REDRAFT_MAX_STEPS=1024"),
        ({"REDRAFT_MAX_STEPS": "8"}, "REDRAFT_DEFAULT_STEPS=32 is above REDRAFT_MAX_STEPS=8"),
        ({"REDRAFT_DEFAULT_GAP_TOKENS": "300"}, "REDRAFT_DEFAULT_GAP_TOKENS=300 is above REDRAFT_MAX_GAP_TOKENS=256"),
        ({"REDRAFT_WORKER_RESTART_DELAY_S": "90"}, "REDRAFT_WORKER_RESTART_DELAY_S=90.0 is above"),
        ({"REDRAFT_WORKER_HEARTBEAT_TTL_S": "1"}, "REDRAFT_WORKER_HEARTBEAT_TTL_S=1.0 must be longer than"),
        ({"REDRAFT_WORKER_HEARTBEAT_INTERVAL_S": "5"}, "must be longer than REDRAFT_WORKER_HEARTBEAT_INTERVAL_S=5.0"),
    ],
)
def test_inconsistent_pairs_are_refused_at_start_up_naming_both(env, message):
    with environment(**env), pytest.raises(ValidationError, match=message):
        get_settings()


def test_a_default_model_among_the_models_is_read():
    models = json.dumps({"a": "models/a", "b": "models/b"})
    with environment(REDRAFT_MODELS=models, REDRAFT_DEFAULT_MODEL="b"):
        assert get_settings().default_model == "b" and set(get_settings().models) == {"a", "b"}


@pytest.mark.parametrize("text", ["debug", "Info", "WARNING"])
def test_the_log_level_is_read_in_any_letter_case(text):
    with environment(REDRAFT_LOG_LEVEL=text):
        assert get_settings().log_level == text.upper()


def test_an_empty_metrics_dir_is_the_default():
    with environment(REDRAFT_METRICS_DIR=""):
        assert get_settings().metrics_dir is None


@pytest.mark.parametrize(
    "text,error,message",
    [
        ("{}", ValidationError, "REDRAFT_MODELS is empty: give at least one name -> local model directory"),
        ("models/redraft-tiny", SettingsError, 'error parsing value for field "models"'),  # not JSON
        ('["models/redraft-tiny"]', ValidationError, "models"),  # JSON, not an object
    ],
)
def test_bad_models_are_refused_with_what_is_wrong(text, error, message):
    with environment(REDRAFT_MODELS=text), pytest.raises(error, match=message):
        Settings()


@pytest.mark.parametrize("name", [n for n in FIELDS if len(env_names(n)) > 1])
def test_the_conventional_name_wins_when_both_are_set(name):
    first, second = env_names(name)
    with environment(**{first: "redis://first/0", second: "redis://second/0"}):
        assert getattr(Settings(), name) == "redis://first/0"


def test_settings_are_read_once_until_the_cache_is_cleared():
    with environment(REDRAFT_QUEUE_NAME="first"):
        read = get_settings()
        os.environ["REDRAFT_QUEUE_NAME"] = "second"  # (undone by environment())
        assert get_settings() is read and read.queue_name == "first"  # bad config fails at start-up, not later
        get_settings.cache_clear()
        assert get_settings().queue_name == "second"


# ---- defaults -------------------------------------------------------------------------------------------


def test_unset_settings_take_the_defaults_declared_in_settings():
    with environment():
        s = get_settings()
    assert {n: getattr(s, n) for n in FIELDS} == {
        n: f.get_default(call_default_factory=True) for n, f in FIELDS.items()
    }
    assert s.models == {"redraft-tiny": DEFAULT_MODEL_DIR} and (DEFAULT_MODEL_DIR / "config.json").is_file()
    assert s.redis_url is None  # `redraft serve` starts an embedded Redis
    assert s.metrics_dir is None and s.var_dir == REPO_ROOT / "var"


def test_every_default_passes_its_own_validation():
    """pydantic does not validate defaults: passing each one explicitly must be accepted unchanged."""
    with environment():
        defaults = {n: f.get_default(call_default_factory=True) for n, f in FIELDS.items()}
        assert {n: getattr(Settings(**defaults), n) for n in FIELDS} == defaults


def test_the_defaults_hold_together():
    with environment():
        s = Settings()
    assert s.default_model in s.models
    assert 1 <= s.default_gap_tokens <= s.max_gap_tokens and 1 <= s.default_steps <= s.max_steps
    assert s.worker_heartbeat_interval_s < s.worker_heartbeat_ttl_s  # a live worker beats before its key expires
    assert s.worker_restart_delay_s <= s.worker_restart_max_delay_s
    assert s.visibility_timeout_s > s.job_timeout_s > 0 and s.heartbeat_timeout_s > 0 and s.max_attempts >= 1


@settings(max_examples=30)
@given(job_timeout_s=st.integers(1, 10**7))
def test_the_visibility_timeout_sits_above_the_job_timeout(job_timeout_s):
    assert Settings(job_timeout_s=job_timeout_s).visibility_timeout_s > job_timeout_s


def _environment_reads(tree: ast.AST) -> Iterator[tuple[int, str, ast.expr | None]]:
    """(line, variable, default) of each ``os.environ.get / os.getenv / os.environ.setdefault`` of a constant name."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args):
            continue
        func, name = node.func, node.args[0]
        target = ast.unparse(func.value)
        reads = (target.endswith("environ") and func.attr in ("get", "setdefault")) or (
            target == "os" and func.attr == "getenv"
        )
        if reads and isinstance(name, ast.Constant) and isinstance(name.value, str):
            default = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords), None)
            yield node.lineno, name.value, default


def test_no_module_gives_a_setting_a_second_default():
    """Settings are read through Settings only: a module reading a setting's variable itself with a default
    of its own would make two defaults that can drift apart."""
    found = []
    for package in SOURCE_PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if path == REPO_ROOT / "redraft" / "settings.py":
                continue
            for line, name, default in _environment_reads(ast.parse(path.read_text(), str(path))):
                if name in ALL_ENV_NAMES and isinstance(default, ast.Constant):
                    found.append(f"{path.relative_to(REPO_ROOT)}:{line} reads {name} with default {default.value!r}")
    assert not found, found


def test_the_scan_finds_a_second_default():
    """The scan above can fail: it does find one in a module that has it."""
    code = 'import os\nq = os.environ.get("REDRAFT_QUEUE_NAME", "gpu")\nu = os.getenv("REDIS_URL")\n'
    assert [(n, d.value if isinstance(d, ast.Constant) else d) for _, n, d in _environment_reads(ast.parse(code))] == [
        ("REDRAFT_QUEUE_NAME", "gpu"),
        ("REDIS_URL", None),
    ]
