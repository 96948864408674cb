"""Every parameter the official `openai` client can send has a decision: a field of the request schema (so it is
never refused as unknown nor silently dropped) and a row in the README's table. A new SDK field fails here."""

from __future__ import annotations

import inspect
from pathlib import Path

import openai
import pytest

from redraft.api.openai.schemas import IGNORED, REJECTED, ChatCompletionCreate, CompletionCreate

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()
SECTION = README[README.index("## OpenAI-compatible API"):README.index("## Python client and CLI")]
TRANSPORT = {"extra_headers", "extra_query", "extra_body", "timeout"}  # the SDK's own, never sent as fields


def sdk_params(method) -> set[str]:
    return set(inspect.signature(method).parameters) - TRANSPORT


client = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9")


@pytest.mark.parametrize("method,schema", [(client.chat.completions.create, ChatCompletionCreate),
                                           (client.completions.create, CompletionCreate)])
def test_every_sdk_parameter_is_a_field_and_has_a_readme_decision(method, schema):
    fields = {f.alias or name for name, f in schema.model_fields.items()}
    params = sdk_params(method)
    assert params <= fields, f"no decision for {sorted(params - fields)}: add each to api/openai/schemas.py"
    missing = sorted(p for p in params if f"`{p}`" not in SECTION)
    assert not missing, f"the README's OpenAI table does not mention {missing}"


def test_rejected_and_ignored_fields_are_in_the_readme():
    assert not [p for p in (*REJECTED, *IGNORED) if f"`{p}`" not in SECTION]
