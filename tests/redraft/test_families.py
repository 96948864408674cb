"""The model registry (redraft/families.py): the family table, what ``load_model_info`` reads from a local model
directory (the tiny ones tests/utils/models.py builds, and hand-made ones), sampling defaults, special ids, and the
ModelError a directory that is not a model gets. Family constants of LLaDA / Dream directories and the unknown
family are in tests/workers/test_adapters.py; the byte-level round trip in tests/models/test_tokenizer.py."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer
from tokenizers.models import WordLevel

from redraft.errors import ModelError
from redraft.families import (
    BLOCK_DIFFUSION_DEFAULTS,
    FAMILIES,
    _byte_level_table,
    _family_of,
    load_model_info,
    load_tokenizer,
    registry,
    sampling_defaults,
    special_ids,
    token_text,
)
from redraft.settings import DEFAULT_MODEL_DIR
from tests.utils.models import make_tiny_diffusion_gemma, make_tiny_random_model

# Where each sampling default sits in a DiffusionGemma generation_config.json (transformers' names).
GENERATION_KEYS = {
    "steps": ("max_denoising_steps",),
    "entropy_bound": ("sampler_config", "entropy_bound"),
    "t_max": ("t_max",),
    "t_min": ("t_min",),
    "stability": ("stability_threshold",),
    "confidence_stop": ("confidence_threshold",),
}
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def fresh(tmp_path: Path, name: str = "model") -> Path:
    """A directory path never loaded before (load_model_info and load_tokenizer cache by path)."""
    return tmp_path / f"{name}-{uuid.uuid4().hex[:8]}"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def word_level_model(dest: Path, config: dict, tokenizer_config: dict | None = None) -> Path:
    """A masked-LM directory with a small word-level tokenizer of its own (no [EMPTY], no [MASK])."""
    dest.mkdir(parents=True)
    vocab = {"<pad>": 0, "<mask>": 1, "<s>": 2, "hello": 3, "world": 4, "<unk>": 5}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.add_special_tokens([AddedToken(t, special=True) for t in ("<pad>", "<mask>", "<s>")])
    tokenizer.save(str(dest / "tokenizer.json"))
    (dest / "config.json").write_text(json.dumps(config))
    if tokenizer_config is not None:
        (dest / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return dest


# ---- the family table -----------------------------------------------------------------------------------


def test_each_model_type_belongs_to_one_family_and_is_written_in_lower_case():
    """Detection lower-cases config.json's model_type, so an entry with a capital could never match."""
    types = [t for fam in FAMILIES.values() for t in fam.model_types]
    assert len(types) == len(set(types)) and all(t == t.lower() for t in types)
    assert all(fam.noise in ("mask", "uniform") for fam in FAMILIES.values())


@given(
    pair=st.sampled_from([(name, t) for name, fam in FAMILIES.items() for t in fam.model_types]),
    upper=st.lists(st.booleans(), min_size=32, max_size=32),
)
def test_a_model_type_is_detected_in_any_letter_case(pair, upper):
    family, model_type = pair
    written = "".join(c.upper() if u else c for c, u in zip(model_type, upper))
    assert _family_of(written) == family


@given(
    model_type=st.text(max_size=20).filter(
        lambda t: t.lower() not in {m for fam in FAMILIES.values() for m in fam.model_types}
    )
)
def test_any_other_model_type_is_a_model_error_listing_the_supported_ones(model_type):
    with pytest.raises(ModelError, match="is not a supported family; supported: ") as refused:
        _family_of(model_type)
    message = refused.value.message
    assert refused.value.status_code == 422 and message.startswith(f"model_type {model_type!r} ")
    listed = message.rsplit("supported: ", 1)[1].split(", ")
    assert listed == [t for fam in FAMILIES.values() for t in fam.model_types]


# ---- reading a model directory -------------------------------------------------------------------------


def test_a_tiny_masked_model_is_read_from_its_config_and_tokenizer(tiny_model_dir):
    info, tokenizer = load_model_info("tiny-random", tiny_model_dir), load_tokenizer(tiny_model_dir)
    config = read_json(tiny_model_dir / "config.json")
    assert (info.name, info.path, info.family, info.model_type) == (
        "tiny-random",
        tiny_model_dir,
        "masked_lm",
        "modernbert",
    )
    assert info.vocab_size == config["vocab_size"] and info.context_length == config["max_position_embeddings"]
    assert info.mask_id == config["mask_token_id"] == tokenizer.token_to_id(info.mask_token)
    assert info.empty_id == tokenizer.token_to_id("[EMPTY]")  # Redraft's tokenizer has one: it fills unused gaps
    assert (info.eos_id, info.eos_ids, info.bos_id) == (
        config["eos_token_id"],
        (config["eos_token_id"],),
        config["bos_token_id"],
    )
    assert (info.shift, info.trust_remote_code, info.noise, info.canvas_length, info.defaults) == (
        0,
        False,
        "mask",
        None,
        {},
    )
    assert not info.weights_present and info.description == config["redraft"]["description"]
    assert not info.eos_ends_slot


@settings(max_examples=5, deadline=None)
@given(context_length=st.integers(8, 1 << 16))
def test_the_context_length_is_the_configs(tmp_path_factory, context_length):
    d = make_tiny_random_model(fresh(tmp_path_factory.getbasetemp()), context_length=context_length)
    assert load_model_info("ctx", d).context_length == context_length


def test_the_shipped_model_has_weights_and_its_card():
    info = load_model_info("redraft-tiny", DEFAULT_MODEL_DIR)
    assert info.weights_present and not info.public()["random_weights"]
    assert info.description == read_json(DEFAULT_MODEL_DIR / "config.json")["redraft"]["description"]


@pytest.mark.parametrize("weights", [None, *WEIGHT_FILES])
def test_weights_are_any_checkpoint_file_and_the_description_says_which(tmp_path, weights):
    d = make_tiny_random_model(fresh(tmp_path))
    config = read_json(d / "config.json")
    del config["redraft"]  # no card: the description says what the directory holds
    (d / "config.json").write_text(json.dumps(config))
    if weights:
        (d / weights).write_bytes(b"")
    info = load_model_info("m", d)
    assert info.weights_present == (weights is not None) and info.public()["random_weights"] == (weights is None)
    assert info.description == (
        "modernbert diffusion model"
        if weights
        else "randomly initialised weights (no trained checkpoint in the directory)"
    )


def test_a_diffusion_gemma_is_read_from_its_text_config(tiny_diffusion_gemma_dir):
    d = tiny_diffusion_gemma_dir
    info, tokenizer, config = load_model_info("dg", d), load_tokenizer(d), read_json(d / "config.json")
    text = config["text_config"]
    assert (info.family, info.noise, info.canvas_length) == ("diffusion_gemma", "uniform", config["canvas_length"])
    assert info.vocab_size == text["vocab_size"] and info.context_length == text["max_position_embeddings"]
    assert info.mask_id == info.vocab_size >= tokenizer.get_vocab_size()  # undecided: an id no token has
    assert info.empty_id == text["pad_token_id"] and info.eos_ids == tuple(text["eos_token_id"])
    assert info.eos_id == text["eos_token_id"][0] and info.bos_id == text["bos_token_id"] and info.eos_ends_slot
    assert (
        info.defaults == sampling_defaults(d)
        and info.defaults["steps"] == read_json(d / "generation_config.json")["max_denoising_steps"]
    )
    public = info.public()
    assert (public["noise"], public["canvas_length"], public["defaults"]) == (
        "uniform",
        info.canvas_length,
        info.defaults,
    )


def test_the_eos_list_of_a_diffusion_gemma_is_kept_whole(tmp_path):
    d = make_tiny_diffusion_gemma(fresh(tmp_path))
    config = read_json(d / "config.json")
    config["text_config"]["eos_token_id"] = [3, 0, 2]  # the released model has three
    (d / "config.json").write_text(json.dumps(config))
    info = load_model_info("dg3", d)
    assert (info.eos_id, info.eos_ids) == (3, (3, 0, 2))
    assert not set(info.eos_ids) & set(special_ids(info))  # any of them may end a slot


def test_a_masked_model_without_empty_takes_its_mask_from_tokenizer_config_and_fills_with_pad(tmp_path):
    d = word_level_model(
        fresh(tmp_path),
        {"model_type": "BERT", "pad_token_id": 0, "max_sequence_length": 64},
        {"mask_token": {"content": "<mask>", "special": True}},
    )
    info = load_model_info("words", d)
    assert (info.family, info.mask_token, info.mask_id, info.empty_id) == ("masked_lm", "<mask>", 1, 0)
    assert (info.vocab_size, info.context_length) == (6, 64)  # no vocab_size in the config: the tokenizer's
    assert (info.eos_id, info.eos_ids, info.bos_id) == (None, (), None)
    assert special_ids(info) == [1, 2]  # <mask> and <s>; <pad> fills gaps, so it may be written
    assert token_text(load_tokenizer(d), 1) == "<mask>"


def test_without_a_position_limit_in_the_config_the_context_is_512(tmp_path):
    d = word_level_model(fresh(tmp_path), {"model_type": "roberta", "pad_token_id": 0}, {"mask_token": "<mask>"})
    assert load_model_info("words", d).context_length == 512


def test_registry_reads_every_configured_model(tiny_model_dir, tiny_diffusion_gemma_dir):
    models = registry({"a": tiny_model_dir, "b": str(tiny_diffusion_gemma_dir)})
    assert {n: (i.name, i.path, i.family) for n, i in models.items()} == {
        "a": ("a", tiny_model_dir, "masked_lm"),
        "b": ("b", tiny_diffusion_gemma_dir, "diffusion_gemma"),
    }
    assert registry({}) == {}


def test_a_tokenizer_is_loaded_once_per_directory(tiny_model_dir):
    assert load_tokenizer(tiny_model_dir) is load_tokenizer(tiny_model_dir)
    assert load_model_info("tiny-random", tiny_model_dir) is load_model_info("tiny-random", tiny_model_dir)


# ---- directories that are not models ----------------------------------------------------------------------


def test_a_directory_without_a_tokenizer_is_a_model_error(tmp_path):
    d = make_tiny_random_model(fresh(tmp_path))
    (d / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="has no tokenizer.json; a model is a local Hugging Face directory"):
        load_model_info("m", d)
    with pytest.raises(ModelError, match="has no tokenizer.json"):
        load_tokenizer(d)


def test_a_file_is_not_a_model_directory(tmp_path):
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"")
    with pytest.raises(ModelError, match="does not exist; a model is a local directory"):
        load_model_info("file", file)


def test_a_config_without_a_model_type_is_a_model_error(tmp_path):
    d = make_tiny_random_model(fresh(tmp_path))
    config = read_json(d / "config.json")
    del config["model_type"]
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="model_type '' is not a supported family"):
        load_model_info("m", d)


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_a_tokenizer_without_the_familys_mask_token_is_a_model_error(tmp_path, family):
    d = fresh(tmp_path)
    d.mkdir()
    shutil.copy(DEFAULT_MODEL_DIR / "tokenizer.json", d / "tokenizer.json")  # has [MASK], not the family's
    (d / "config.json").write_text(json.dumps({"model_type": family}))
    with pytest.raises(ModelError, match=f"the tokenizer has no mask token '{FAMILIES[family].mask_token}'"):
        load_model_info(family, d)


def test_a_masked_model_with_no_mask_token_is_a_model_error(tmp_path):
    d = word_level_model(fresh(tmp_path), {"model_type": "bert", "pad_token_id": 0})  # no [MASK], no tokenizer config
    with pytest.raises(ModelError, match=r"the tokenizer has no mask token '\[MASK\]'"):
        load_model_info("m", d)


def test_a_masked_model_with_nothing_to_fill_gaps_is_a_model_error(tmp_path):
    d = word_level_model(fresh(tmp_path), {"model_type": "bert"}, {"mask_token": "<mask>"})
    with pytest.raises(ModelError, match=r"no \[EMPTY\] token and no pad_token_id"):
        load_model_info("m", d)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_a_config_that_is_not_a_json_object_is_a_model_error(tmp_path, text):
    d = make_tiny_random_model(fresh(tmp_path))
    (d / "config.json").write_text(text)
    with pytest.raises(ModelError, match="config.json is not (JSON|a JSON object)"):
        load_model_info("m", d)


def test_a_tokenizer_file_that_cannot_be_read_is_a_model_error(tmp_path):
    d = make_tiny_random_model(fresh(tmp_path))
    (d / "tokenizer.json").write_text('{"version": "1.0", "model": 7}')
    with pytest.raises(ModelError, match="is not a tokenizer the tokenizers library can read"):
        load_model_info("m", d)


def test_a_diffusion_gemma_without_a_canvas_length_is_a_model_error(tmp_path):
    d = make_tiny_diffusion_gemma(fresh(tmp_path))
    config = read_json(d / "config.json")
    del config["canvas_length"]
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="has no canvas_length"):
        load_model_info("m", d)


def test_a_mask_token_id_of_zero_in_the_config_is_the_mask(tmp_path):
    d = word_level_model(fresh(tmp_path), {"model_type": "bert", "pad_token_id": 2, "mask_token_id": 0},
                         {"mask_token": "<mask>"})  # the tokenizer's own <mask> is 1: the config's 0 wins
    assert load_model_info("m", d).mask_id == 0


# ---- sampling defaults, special ids, token text ---------------------------------------------------------


def test_without_a_generation_config_the_block_diffusion_defaults_apply(tmp_path):
    assert sampling_defaults(tmp_path) == BLOCK_DIFFUSION_DEFAULTS


@settings(max_examples=40, deadline=None)
@given(given_values=st.dictionaries(st.sampled_from(list(GENERATION_KEYS)), st.integers(1, 99) | st.floats(0, 1)))
def test_a_checkpoints_own_sampling_defaults_win_and_the_rest_are_filled_in(tmp_path_factory, given_values):
    generation: dict = {"eos_token_id": [3]}
    for key, value in given_values.items():
        *parents, leaf = GENERATION_KEYS[key]
        target = generation
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    d = fresh(tmp_path_factory.getbasetemp(), "generation")
    d.mkdir()
    (d / "generation_config.json").write_text(json.dumps(generation))
    assert sampling_defaults(d) == {**BLOCK_DIFFUSION_DEFAULTS, **given_values}


def test_special_ids_are_the_special_tokens_and_the_mask_but_never_the_empty_one(tiny_model):
    info, tokenizer = tiny_model
    specials = special_ids(info)
    assert specials == sorted(set(specials))
    assert info.mask_id in specials and info.empty_id not in specials and info.eos_id in specials
    assert {tokenizer.id_to_token(i) for i in specials} == {"[PAD]", "[MASK]", "[BOS]", "[EOS]"}
    assert tokenizer.token_to_id("the") not in specials


def test_a_diffusion_gemma_may_write_its_eos_but_never_the_undecided_id(tiny_diffusion_gemma_dir):
    info = load_model_info("dg", tiny_diffusion_gemma_dir)
    specials = special_ids(info)
    assert info.mask_id in specials and info.empty_id not in specials
    assert not set(info.eos_ids) & set(specials)  # an EOS it writes ends its slot


def test_token_text_keeps_special_tokens(tiny_model):
    info, tokenizer = tiny_model
    assert token_text(tokenizer, info.mask_id) == "[MASK]" and token_text(tokenizer, info.empty_id) == "[EMPTY]"
    ids = tokenizer.encode("Hello there", add_special_tokens=False).ids
    assert "".join(token_text(tokenizer, i) for i in ids) == "Hello there"


def test_the_byte_level_alphabet_stands_for_each_byte_once():
    table = _byte_level_table()
    assert sorted(table.values()) == list(range(256)) and len(table) == 256
    assert all(table[chr(b)] == b for b in range(ord("!"), ord("~") + 1))  # printable ASCII stands for itself
    assert all(ord(c) >= 256 for c, b in table.items() if chr(b) != c)
