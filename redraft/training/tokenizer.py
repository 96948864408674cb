"""Redraft's byte-level BPE tokenizer, trained with the `tokenizers` library.

Byte-level BPE with no normaliser and no prefix space round-trips any UTF-8 text exactly, and the
tokens of a text concatenate to the text itself, which the structure constraints rely on.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# Order fixes the ids: [PAD]=0, [MASK]=1, [BOS]=2, [EOS]=3, [EMPTY]=4.
# [EMPTY] fills unused positions of a variable-length gap and is dropped from the text;
# it is distinct from [PAD] because an embedding's padding row receives no gradient.
SPECIAL_TOKENS = ["[PAD]", "[MASK]", "[BOS]", "[EOS]", "[EMPTY]"]
VOCAB_SIZE = 8192


def train_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=True,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, directory: Path) -> PreTrainedTokenizerFast:
    """Save in the Hugging Face layout, so AutoTokenizer.from_pretrained(directory) loads it."""
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        mask_token="[MASK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        additional_special_tokens=["[EMPTY]"],
        clean_up_tokenization_spaces=False,
    )
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)
    return fast
