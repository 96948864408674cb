"""Streaming (``stream: true``): SSE ``data:`` chunks in OpenAI's shape, ending with ``data: [DONE]``.

A diffusion model does not write left to right, so a standard client (which appends each delta) is sent text only
once it is final, from the left: ``AnswerReplay`` replays the job's steps onto its start canvas and says how much
of the answer can no longer change —

- masked models: a committed token never changes (the clamp invariant), so the answer's leading run of committed
  positions is final (with ``block_size``, block by block);
- block diffusion (DiffusionGemma): a window's tokens are final once a later window has started; a step touching
  position ``q`` is in a window that starts after ``q - canvas_length``, so everything before that is final
  (canvas by canvas);
- with ``remask_budget`` (tokens sent back to the mask) or ``safety.avoid`` (rewrite rounds) nothing is final before
  the job ends: the answer comes in one delta at the end.

``diffusing: true`` (a Redraft extension, as Mercury streams its denoising) sends one chunk per step whose content is
the whole current answer, each undecided position shown as ``UNDECIDED``; its content replaces the last chunk's.
Choices stream one after another (index by index). A client that disconnects cancels the request's jobs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from redraft.api.openai.errors import OpenAIError
from redraft.api.openai.jobs import ChoicePlan, Outcome, finish, safe_prefix, usage_of
from redraft.api.openai.lifecycle import (
    Submitted,
    cancel_shielded,
    failure,
    job_events,
    load_outcomes,
    model_info,
    timeout_error,
)
from redraft.api.openai.schemas import OpenAICreate, Usage
from redraft.families import ModelInfo, load_tokenizer
from redraft.jobs import JobEvent, JobParams, JobStatus
from redraft.settings import Settings

log = logging.getLogger(__name__)

UNDECIDED = "\u2591"  # '░': one per undecided position in `diffusing` chunks


class AnswerReplay:
    """The answer slot of one job, replayed step by step from its start canvas."""

    def __init__(self, canvas: dict[str, Any], info: ModelInfo, params: dict[str, Any]) -> None:
        self.info, self.tokenizer = info, load_tokenizer(info.path)
        self.tokens = list(canvas["token_ids"])  # (L,) the mask id at undecided positions
        self.slot = [p for p, k in enumerate(canvas["slot_of"]) if k == 0]  # the answer's positions, in order
        pieces = canvas["pieces"]
        at = next(i for i, piece in enumerate(pieces) if isinstance(piece, int) and piece == 0)
        # Canvas.render_layout drops a written leading space after fixed text that ends in whitespace; so does this.
        self.drop_space = at > 0 and isinstance(pieces[at - 1], str) and pieces[at - 1][-1:].isspace()
        job = JobParams.from_json(params)
        avoid = job.safety is not None and bool(job.safety.avoid)
        self.rule = "end" if avoid or job.remask_budget else "window" if info.noise == "uniform" else "commit"
        self.settled = 0  # "window": positions below this belong to finished windows

    def apply(self, step: dict[str, Any]) -> None:
        """One StepPublic: ``committed`` then ``remasked``."""
        for position, token, *_ in step["committed"]:
            self.tokens[position] = token
        for position, _ in step.get("remasked") or ():
            self.tokens[position] = self.info.mask_id
        if self.rule == "window":  # commits of the empty token may lie past the window (a slot ended by EOS)
            touched = [p for p, t, *_ in step["committed"] if t != self.info.empty_id]
            touched += [p for p, _ in step.get("remasked") or ()]
            if touched:
                self.settled = max(self.settled, max(touched) - self.info.canvas_length + 1)

    def _decided(self, position: int) -> bool:
        return self.tokens[position] != self.info.mask_id

    def _decode(self, positions: list[int]) -> str:
        ids = [self.tokens[p] for p in positions if self.tokens[p] not in (self.info.empty_id, self.info.mask_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _lead(self, text: str) -> str:
        return text[1:] if self.drop_space and text.startswith(" ") else text

    def final_text(self) -> str:
        """The answer's beginning that can no longer change (a byte sequence cut inside a character is held back)."""
        if self.rule == "end":
            return ""
        n = 0
        for p in self.slot:
            if not self._decided(p) or (self.rule == "window" and p >= self.settled):
                break
            n += 1
        return self._lead(self._decode(self.slot[:n])).rstrip("\ufffd")

    def current_text(self) -> str:
        """The whole answer as it stands, each undecided position shown as ``UNDECIDED``."""
        parts, run = [], []
        for p in self.slot:
            if self._decided(p):
                run.append(p)
                continue
            parts += [self._decode(run), UNDECIDED]
            run = []
        parts.append(self._decode(run))
        return self._lead("".join(parts))


class ChunkWriter:
    """Chunks of one response: chat (``delta``) or completion (``text``) shaped."""

    def __init__(self, chat: bool, response_id: str, model: str, created: int) -> None:
        self.chat, self.id, self.model, self.created = chat, response_id, model, created

    def chunk(self, index: int, text: str | None, finish_reason: str | None = None, *, role: bool = False,
              **extra: Any) -> dict[str, str]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        return self._data({"choices": [choice], **extra})

    def usage(self, usage: Usage) -> dict[str, str]:
        return self._data({"choices": [], "usage": usage.model_dump()})

    def _data(self, body: dict[str, Any]) -> dict[str, str]:
        head = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                "created": self.created, "model": self.model}
        return {"data": json.dumps({**head, **body})}


def error_chunk(error: OpenAIError) -> dict[str, str]:
    """An error inside a stream that has begun, as OpenAI sends one (the client raises it)."""
    return {"data": json.dumps(error.body())}


async def stream_choices(writer: ChunkWriter, body: OpenAICreate, plans: list[ChoicePlan], submitted: list[Submitted],
                         request: Request, settings: Settings, tenant_id: str) -> AsyncIterator[dict[str, str]]:
    """The SSE body of a streaming request (see the module docstring)."""
    ended = leave_running = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.openai_wait_timeout_s
    outcomes: list[Outcome] = []
    try:
        for plan, sub in zip(plans, submitted):
            replay = AnswerReplay(sub.canvas, model_info(settings, sub.model), sub.params)
            yield writer.chunk(plan.index, plan.prefix, role=writer.chat)  # chat: the role; completions: the echo
            sent, terminal = "", False
            events = job_events(sub.job_id, request, settings)
            try:
                while True:
                    try:
                        async with asyncio.timeout_at(deadline):
                            name, data = await anext(events)
                    except StopAsyncIteration:
                        break
                    if name != JobEvent.STEP:
                        terminal = True
                        break
                    replay.apply(data)
                    if body.diffusing:
                        yield writer.chunk(plan.index, plan.prefix + replay.current_text(), diffusing=True,
                                           step=data["step"])
                        continue
                    visible = safe_prefix(replay.final_text(), plan.stops)
                    if len(visible) > len(sent) and visible.startswith(sent):
                        yield writer.chunk(plan.index, visible[len(sent):])
                        sent = visible
            finally:
                await events.aclose()
            if not terminal:
                return  # the client went away: `finally` cancels the jobs
            outcome = (await run_in_threadpool(load_outcomes, [sub.job_id], tenant_id, settings))[0]
            if outcome.status != JobStatus.SUCCEEDED:
                yield error_chunk(failure(outcome))
                return
            outcomes.append(outcome)
            text, reason = finish(plan, outcome)
            if body.diffusing:
                yield writer.chunk(plan.index, text, reason, diffusing=True)
                continue
            answer = text[len(plan.prefix):]
            if not answer.startswith(sent):  # cannot happen by the rules above; say so rather than send a wrong text
                log.error("job %s: streamed %r but the answer is %r", sub.job_id, sent, answer)
            yield writer.chunk(plan.index, answer[len(sent):] if answer.startswith(sent) else "", reason)
        if body.stream_options is not None and body.stream_options.include_usage:
            yield writer.usage(usage_of(plans, outcomes))
        yield {"data": "[DONE]"}
        ended = True
    except TimeoutError:
        leave_running = True  # as for a blocking request: the jobs go on and keep their results
        yield error_chunk(timeout_error([s.job_id for s in submitted], settings))
    finally:
        if not ended and not leave_running:
            await cancel_shielded([s.job_id for s in submitted], tenant_id)
