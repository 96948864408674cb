"""The temperature of each step (``temperature.py``): one value, or DiffusionGemma's linear schedule, bit for bit
as transformers' ``LinearTemperatureScheduleLogitsProcessor`` scales the logits; vanishing temperatures are greedy."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.diffusion_gemma.generation_diffusion_gemma import LinearTemperatureScheduleLogitsProcessor

from redraft.workers.policies.temperature import GREEDY_BELOW, Temperature


@settings(max_examples=60, deadline=None)
@given(t_max=st.floats(0.05, 3.0), frac=st.floats(0.01, 1.0), steps=st.integers(1, 64), data=st.data())
def test_the_schedule_scales_logits_as_the_reference(t_max, frac, steps, data):
    t_min = t_max * frac
    schedule = Temperature(None, t_max, t_min)
    reference = LinearTemperatureScheduleLogitsProcessor(t_min, t_max, steps)
    logits = torch.randn(1, 4, 32, generator=torch.Generator().manual_seed(steps))
    i = data.draw(st.integers(0, steps - 1))
    t = schedule.at(i, steps)
    expected = reference(None, logits.clone(), cur_step=torch.tensor(steps - i, dtype=torch.int32))
    assert torch.equal(logits / t, expected)
    assert t_min * (1 - 1e-6) <= float(t) <= t_max * (1 + 1e-6)  # a float32 value: within its rounding of the ends
    if i:
        assert float(t) <= float(schedule.at(i - 1, steps))  # it cools down


def test_one_value_and_the_greedy_limit():
    assert Temperature(0.7).at(3, 8) == 0.7
    assert Temperature(0.0).at(0, 8) == 0.0
    assert Temperature(GREEDY_BELOW / 2).at(0, 8) == 0.0  # would overflow float32 logits: greedy instead
