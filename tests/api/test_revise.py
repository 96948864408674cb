"""Revise jobs, draft lineage and diffs, self-correction and safety targets through the running service."""

from __future__ import annotations

import re

import pytest

from redraft.constraints.safety import find_violations, parse_safety
from tests.utils.service import wait_for

TEXT = "Dear team, the [[gap:4]] is ready. Please [[gap]] by Friday."
SOURCE = "Is the report ready? No, it is not. We will send it on Friday."


def submit(client, **body):
    r = client.post("/v1/jobs", json={"steps": 8, **body})
    assert r.status_code == 202, r.text
    return wait_for(client, r.json()["id"])


def apply_diff(old: str, ops: list[dict]) -> str:
    out = []
    for op in ops:
        out.append(old[op["a"][0] : op["a"][1]] if op["op"] == "equal" else op["new"])
    return "".join(out)


def test_revising_a_draft_keeps_everything_outside_the_span(client):
    first = submit(client, kind="infill", text=TEXT, seed=2)
    text, draft_id = first["result"]["text"], first["result"]["draft_id"]
    start = text.index(" is ready")  # rewrite " is ready" and nothing else
    end = start + len(" is ready")
    done = submit(client, kind="revise", draft_id=draft_id, spans=[{"start": start, "end": end, "max_tokens": 4}],
                  seed=5)
    assert done["status"] == "succeeded", done["error"]
    new = done["result"]["text"]
    (edit,) = done["result"]["edits"]
    assert edit["old"] == text[start:end] and edit["reason"] == "span"
    assert new == text[:start] + edit["new"] + text[end:]
    draft = client.get(f"/v1/drafts/{done['result']['draft_id']}").json()
    assert draft["parent_id"] == draft_id and draft["version"] == 2
    diff = client.get(f"/v1/drafts/{draft['id']}/diff", params={"against": draft_id}).json()
    assert apply_diff(text, diff["ops"]) == new and diff["changed"] == (new != text)
    assert all(op["a"][0] >= start and op["a"][1] <= end for op in diff["ops"] if op["op"] != "equal")
    lineage = client.get(f"/v1/drafts/{draft['id']}/lineage").json()
    assert [d["id"] for d in lineage["ancestors"]] == [draft_id] and lineage["descendants"] == []
    root = client.get(f"/v1/drafts/{draft_id}/lineage").json()
    assert root["ancestors"] == [] and [d["id"] for d in root["descendants"]] == [draft["id"]]


def test_revising_text_imports_it_as_the_parent(client):
    start = SOURCE.index("No")
    done = submit(client, kind="revise", text=SOURCE, spans=[{"start": start, "end": start + 2}])
    assert done["status"] == "succeeded", done["error"]
    new = done["result"]["text"]
    assert new.startswith(SOURCE[:start]) and new.endswith(SOURCE[start + 2 :])
    drafts = client.get(f"/v1/jobs/{done['id']}/drafts").json()["data"]
    assert [(d["version"], d["layout"] is None) for d in drafts] == [(1, True), (2, False)]
    assert drafts[0]["text"] == SOURCE and drafts[1]["parent_id"] == drafts[0]["id"]


def test_auto_rewrites_the_least_confident_token(client):
    first = submit(client, kind="infill", text=TEXT, seed=4, temperature=1.0)
    draft = client.get(f"/v1/drafts/{first['result']['draft_id']}").json()
    written = draft["layout"]["written"]
    assert written and all(0.0 <= c <= 1.0 for _, _, c in written)
    lowest = min(written, key=lambda w: (w[2], w[0]))
    done = submit(client, kind="revise", draft_id=draft["id"], auto={"least_confident": 1})
    (edit,) = done["result"]["edits"]
    assert (edit["start"], edit["end"], edit["reason"]) == (lowest[0], lowest[1], "auto")
    text = draft["text"]
    assert done["result"]["text"] == text[: lowest[0]] + edit["new"] + text[lowest[1] :]


def test_steps_replay_with_self_correction(client):
    done = submit(client, kind="infill", text="One [[gap:12]] two [[gap:12]] three.", steps=8, temperature=1.0,
                  remask_budget=6, remask_below=0.9, seed=3)
    steps = client.get(f"/v1/jobs/{done['id']}/steps").json()
    canvas = list(steps["canvas"])
    remasked = 0
    for st in steps["data"]:
        for pos, token, _text, _conf in st["committed"]:
            assert canvas[pos] == steps["mask_id"] and not steps["fixed"][pos]
            canvas[pos] = token
        for pos, token in st["remasked"]:
            assert canvas[pos] == token and not steps["fixed"][pos]
            canvas[pos] = steps["mask_id"]
            remasked += 1
    assert 0 < remasked <= 6
    assert canvas == client.get(f"/v1/drafts/{done['result']['draft_id']}").json()["token_ids"]


def test_banned_phrases_and_pii_never_appear(client):
    done = submit(client, kind="infill", text="Write to me at [[gap:8]] or call [[gap:8]]. The [[gap:6]] word.",
                  safety={"banned": ["the", "and"], "pii": True}, temperature=1.0, seed=9)
    assert done["status"] == "succeeded", done["error"]
    gaps = done["result"]["gaps"]
    assert not any(w in g.lower() for g in gaps for w in ("the", "and"))
    text = done["result"]["text"]
    fixed = [(m.start(), m.end()) for m in re.finditer(r"Write to me at |or call |\. The | word\.", text)]
    assert find_violations(text, parse_safety({"banned": ["the", "and"], "pii": True}), fixed) == []


def test_revise_with_safety_rewrites_the_violation(client):
    text = "Contact jane.doe@example.com for the damn report."
    done = submit(client, kind="revise", text=text, safety={"banned": ["damn"], "pii": ["email"]})
    assert done["status"] == "succeeded", done["error"]
    new = done["result"]["text"]
    assert "damn" not in new.lower() and "@example.com" not in new
    assert new.startswith("Contact ") and new.endswith(" report.")
    assert sorted(e["reason"] for e in done["result"]["edits"]) == ["banned", "email"]


def test_revise_with_avoid_rewrites_only_the_sentence_on_the_topic(client):
    text = "We went hiking in the hills. He shot the man with a gun. Then we ate lunch by the lake."
    done = submit(client, kind="revise", text=text,
                  safety={"avoid": ["violence and weapons"], "avoid_threshold": 0.3, "avoid_rounds": 2})
    assert done["status"] == "succeeded", done["error"]
    rounds = done["result"]["safety_rounds"]
    assert [r["text"] for r in rounds[0]["rewritten"]] == ["He shot the man with a gun."]
    assert rounds[0]["max_score"] > 0.3
    (edit,) = done["result"]["edits"]
    assert edit["old"] == "He shot the man with a gun." and edit["reason"] == "avoid"
    new = done["result"]["text"]
    assert new == text[: edit["start"]] + edit["new"] + text[edit["end"] :]
    assert all(r["round"] == i for i, r in enumerate(rounds)) and len(rounds) <= 3


def test_revise_with_avoid_carries_the_drafts_confidences_to_where_the_kept_text_now_is(client):
    """The rewritten sentence changes length, so the kept text after it moves: the confidences the source draft
    had for its model-written tokens must follow it (they are what a later `auto` revision reads)."""
    source = submit(client, kind="infill", text="We went hiking in the hills. He shot the man with a gun. Then we "
                                                "[[gap:6]] by the lake.")
    assert source["status"] == "succeeded", source["error"]
    (parent,) = client.get(f"/v1/jobs/{source['id']}/drafts").json()["data"]
    done = submit(client, kind="revise", draft_id=parent["id"],
                  safety={"avoid": ["violence and weapons"], "avoid_threshold": 0.3, "avoid_rounds": 1})
    assert done["status"] == "succeeded", done["error"]
    (edit,) = [e for e in done["result"]["edits"] if e["reason"] == "avoid"]
    assert edit["old"] == "He shot the man with a gun." and len(edit["new"]) != len(edit["old"])
    (child,) = client.get(f"/v1/jobs/{done['id']}/drafts").json()["data"]
    shift = len(edit["new"]) - len(edit["old"])
    carried = {(s + shift, e + shift, c) for s, e, c in parent["layout"]["written"] if s >= edit["end"]}
    assert carried and carried <= {tuple(w) for w in child["layout"]["written"]}
    for s, e, _ in carried:
        assert child["text"][s:e] == parent["text"][s - shift:e - shift]


BAD = [
    ({"kind": "revise", "text": SOURCE}, "say what to reconsider"),
    ({"kind": "revise", "spans": [{"start": 0, "end": 1}]}, "exactly one of `draft_id`"),
    ({"kind": "revise", "text": SOURCE, "spans": [{"start": 5, "end": 500}]}, "outside the text"),
    ({"kind": "revise", "text": SOURCE, "auto": {"confidence_below": 0.5}}, "only for text Redraft wrote"),
    ({"kind": "revise", "text": SOURCE, "auto": {}}, "exactly one of"),
    ({"kind": "revise", "draft_id": "nope", "spans": [{"start": 0, "end": 1}]}, "not found"),
    ({"kind": "revise", "text": "Code 12345", "targets": [{"span": {"start": 5, "end": 10}, "regex": r"\d{5}"}]},
     "nothing to revise"),
    ({"kind": "revise", "text": SOURCE, "targets": [{"slot": "a", "regex": "x"}]}, "no slot 'a'"),
    ({"kind": "revise", "text": SOURCE, "targets": [{"span": {"start": 0, "end": 2}}]}, "exactly one of `regex`"),
    ({"kind": "infill", "text": "x [[gap]]", "safety": {"banned": [""]}}, "banned"),
    ({"kind": "infill", "text": "x [[gap]]", "safety": {"pii": ["ssn"]}}, "pii"),
    ({"kind": "infill", "text": "x [[gap]]", "safety": {"avoid": ["x"], "avoid_rounds": 0}}, "avoid_rounds"),
    ({"kind": "infill", "text": "x [[gap]]", "remask_budget": -1}, "remask_budget"),
]


@pytest.mark.parametrize("body,match", BAD)
def test_bad_revise_and_safety_input_is_a_clear_422_and_writes_nothing(client, body, match):
    before = client.get("/v1/jobs").json()["count"]
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    assert match in r.json()["detail"], r.json()["detail"]
    assert client.get("/v1/jobs").json()["count"] == before


def test_other_tenants_drafts_are_invisible(service, client):
    done = submit(client, kind="infill", text=TEXT)
    draft_id = done["result"]["draft_id"]
    with service.client(service.new_key("rival-co")) as other:
        for path in (f"/v1/drafts/{draft_id}/lineage", f"/v1/drafts/{draft_id}/diff?against={draft_id}"):
            assert other.get(path).status_code == 404, path
        r = other.post("/v1/jobs", json={"kind": "revise", "draft_id": draft_id, "spans": [{"start": 0, "end": 1}]})
        assert r.status_code == 422 and "not found" in r.json()["detail"]
        mine = submit(other, kind="infill", text=TEXT)["result"]["draft_id"]
        assert other.get(f"/v1/drafts/{mine}/diff", params={"against": draft_id}).status_code == 404
