"""Character diffs between drafts are exact and bounded (issue 12: the diff was quadratic, over 40 s at 10k
characters): the common prefix and suffix are found in linear time and difflib only sees the changed middle,
within a budget; past it the middle is one replace. Either way, applying the ops to the old text gives the new."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.api.routes.drafts import char_diff

texts = st.text(alphabet="ab c\n", max_size=60)


def apply(old: str, ops) -> str:
    out, at = [], 0
    for op in ops:
        assert op.a[0] == at, "ops cover the old text in order, without gaps"
        out.append(old[op.a[0]:op.a[1]] if op.op == "equal" else op.new)
        if op.op in ("replace", "delete"):
            assert op.old == old[op.a[0]:op.a[1]]
        at = op.a[1]
    assert at == len(old)
    return "".join(out)


@settings(max_examples=300, deadline=None)
@given(a=texts, b=texts, budget=st.sampled_from([0, 10, 4_000_000]))
def test_applying_the_ops_to_the_old_text_gives_the_new(a, b, budget):
    ops = char_diff(a, b, budget=budget)
    assert apply(a, ops) == b
    assert all(op.op in ("equal", "insert", "delete", "replace") for op in ops)
    assert all(op.a[0] < op.a[1] or op.b[0] < op.b[1] for op in ops)  # no empty op


def test_a_large_unrelated_pair_is_one_replace_between_its_common_ends():
    a = "Intro. " + "x" * 20_000 + " Outro."
    b = "Intro. " + "y" * 20_000 + " Outro."
    ops = char_diff(a, b)
    assert [op.op for op in ops] == ["equal", "replace", "equal"]
    assert apply(a, ops) == b
