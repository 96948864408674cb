"""The "No" -> "Yes" case end to end on the shipped model: a left-to-right model cannot take back a word
it has written; a diffusion model re-masks it and writes it again in context."""

from __future__ import annotations

import pytest

from redraft.settings import DEFAULT_MODEL_DIR
from tests.utils.service import running_service, wait_for

TEMPLATE = "Do you like pizza? {{ slot('answer', max_tokens=1, choices=['No']) }}, I love pizza! It is my favourite food."


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    with running_service("sqlite", DEFAULT_MODEL_DIR, tmp_path_factory.mktemp("shipped")) as svc:
        with svc.client(svc.new_key("acme")) as client:
            yield client


def run(client, **body):
    r = client.post("/v1/jobs", json={"steps": 8, **body})
    assert r.status_code == 202, r.text
    done = wait_for(client, r.json()["id"])
    assert done["status"] == "succeeded", done["error"]
    return done


@pytest.mark.parametrize("how", ["auto", "spans"])
def test_a_forced_wrong_answer_is_changed_and_the_rest_kept(shipped, how):
    # The template forces the answer "No": the model did not believe it, and its confidence says so.
    forced = run(shipped, kind="generate", template=TEMPLATE)
    text = forced["result"]["text"]
    assert text == "Do you like pizza? No, I love pizza! It is my favourite food."
    draft = shipped.get(f"/v1/drafts/{forced['result']['draft_id']}").json()
    ((start, end, confidence),) = draft["layout"]["written"]
    assert text[start:end].strip() == "No"
    what = {"auto": {"least_confident": 1}} if how == "auto" else {"spans": [{"start": start, "end": end}]}
    revised = run(shipped, kind="revise", draft_id=draft["id"], **what)
    (edit,) = revised["result"]["edits"]
    assert edit["old"].strip() == "No" and edit["new"].strip() not in ("", "No")
    new = revised["result"]["text"]
    assert new == text[:start] + edit["new"] + text[end:]
    assert new.endswith(", I love pizza! It is my favourite food.") and new.startswith("Do you like pizza?")
    new_draft = shipped.get(f"/v1/drafts/{revised['result']['draft_id']}").json()
    new_conf = next(c for s, e, c in new_draft["layout"]["written"] if s >= start)  # the rewrite's first token
    assert new_conf > confidence, "the model is surer of its own answer than of the forced one"
