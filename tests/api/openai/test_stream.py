"""What the OpenAI stream sends as final is final: properties of the step replay (api/openai/stream.py::AnswerReplay),
with brute-force references. (The stop-string cut, api/openai/jobs.py::safe_prefix: tests/api/openai/test_jobs.py.)"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.api.openai.stream import UNDECIDED, AnswerReplay
from redraft.constraints.generate import compile_generate, prompt_slot
from redraft.families import load_model_info, load_tokenizer, special_ids
from redraft.settings import DEFAULT_MODEL_DIR


def _replay_steps(info, canvas, final, schedule, rng):
    """Steps committing ``final``'s slot tokens in ``schedule`` (lists of positions per step); for block diffusion,
    also provisional tokens shown and re-masked before a window's last step, as the uniform-noise policy records."""
    steps = []
    for group in schedule:
        if info.noise == "uniform":  # a provisional proposal in the window, then taken back
            p = rng.choice(group)
            steps.append({"committed": [[p, rng.randrange(info.vocab_size), "", 0.5]], "remasked": []})
            steps.append({"committed": [], "remasked": [[p, 0]]})
        steps.append({"committed": [[p, final[p], "", 1.0] for p in group], "remasked": []})
    return steps


def _check_replay(info, tokenizer, prompt, size, seed, windows):
    rng = random.Random(seed)
    canvas = compile_generate([prompt, prompt_slot(None, size, 0, 256)], tokenizer, info)
    banned = set(special_ids(info))
    vocab = [t for t in range(min(info.vocab_size, tokenizer.get_vocab_size())) if t not in banned]
    slot = canvas.slot_positions(0)
    final = list(canvas.token_ids)
    for p in slot:
        final[p] = info.empty_id if rng.random() < 0.2 else rng.choice(vocab)
    if windows:  # windows of canvas_length, left to right, each committed in a few steps in any order
        length = info.canvas_length
        schedule = []
        for w in range(0, len(slot), length):
            window = slot[w:w + length]
            rng.shuffle(window)
            cuts = sorted(rng.sample(range(1, len(window)), min(2, len(window) - 1))) if len(window) > 1 else []
            schedule += [window[a:b] for a, b in zip([0, *cuts], [*cuts, len(window)])]
    else:  # any order at all (masked diffusion with low-confidence or random remasking)
        order = slot[:]
        rng.shuffle(order)
        schedule = [order[i:i + 3] for i in range(0, len(order), 3)]
    expected = canvas.render(final, tokenizer, info)[1][0]
    replay = AnswerReplay(canvas.to_json(), info, {"steps": 4})  # a stored job's params always hold steps
    for step in _replay_steps(info, canvas, final, schedule, rng):
        replay.apply(step)
        assert expected.startswith(replay.final_text()), (replay.final_text(), expected)
    assert replay.current_text() == expected and UNDECIDED not in expected


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["Hello there ", "Q: why?\nA:", "x"]), st.integers(1, 12), st.integers(0, 2**32))
def test_masked_final_text_is_always_a_prefix_of_the_answer(prompt, size, seed):
    info = load_model_info("redraft-tiny", DEFAULT_MODEL_DIR)
    _check_replay(info, load_tokenizer(DEFAULT_MODEL_DIR), prompt, size, seed, windows=False)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(0, 2**32))
def test_block_diffusion_final_text_is_always_a_prefix_of_the_answer(tiny_diffusion_gemma_dir, size, seed):
    info = load_model_info("tiny-dg", tiny_diffusion_gemma_dir)
    _check_replay(info, load_tokenizer(tiny_diffusion_gemma_dir), "Hello ", size, seed, windows=True)


def test_with_remasking_nothing_is_final_before_the_end():
    info, tokenizer = load_model_info("redraft-tiny", DEFAULT_MODEL_DIR), load_tokenizer(DEFAULT_MODEL_DIR)
    canvas = compile_generate(["Hi ", prompt_slot(None, 4, 0, 256)], tokenizer, info)
    replay = AnswerReplay(canvas.to_json(), info, {"steps": 4, "remask_budget": 2})
    replay.apply({"committed": [[p, 300, "", 1.0] for p in canvas.slot_positions(0)], "remasked": []})
    assert replay.final_text() == "" and replay.current_text()
