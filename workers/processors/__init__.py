"""The logits processors, one per file, each the apply side of a compile side elsewhere (the sampler's protocol for
them is ``redraft.workers.sampler.LogitsProcessor``; each edits the ``(b, W, V)`` logits of the rows it is given):

* ``forbid_tokens.ForbidTokens`` — special tokens are never written (every job);
* ``slot_targets.SlotTargets`` — regex / JSON-schema / choices slots: only the best accepted path's tokens
  (compiled by ``constraints/automaton.py``, decoded by ``workers/slot_decoder.py``);
* ``slot_vocabulary.SlotVocabulary`` — a slot's ``vocab`` (compiled by ``constraints/vocab.py``);
* ``safety_guard.SafetyGuard`` — ``banned`` phrases and ``pii`` (compiled by ``constraints/safety/``);
* ``down_weight.DownWeight`` — the soft guide of ``safety.avoid`` rounds.
"""
