"""Model fixtures shared by the test packages (loaded as a pytest plugin from tests/conftest.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import redis

from redraft.families import load_model_info, load_tokenizer
from redraft.settings import DEFAULT_MODEL_DIR
from redraft.workers.adapters import get_adapter
from tests.utils.models import make_tiny_diffusion_gemma, make_tiny_random_model
from tests.utils.service import REDIS_URL


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return make_tiny_random_model(tmp_path_factory.mktemp("models") / "tiny-random")


# A chat template in tokenizer_config.json (where most Hugging Face checkpoints keep theirs) that writes the BOS
# token itself, as real templates do.
MASKED_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tmp_path_factory):
    """The tiny random ModernBERT with ``MASKED_CHAT_TEMPLATE`` as its tokenizer_config.json chat_template."""
    dest = make_tiny_random_model(tmp_path_factory.mktemp("models") / "tiny-chat")
    config = json.loads((dest / "tokenizer_config.json").read_text())
    (dest / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": MASKED_CHAT_TEMPLATE}))
    return dest


@pytest.fixture(scope="session")
def tiny_diffusion_gemma_dir(tmp_path_factory):
    """A tiny DiffusionGemma directory (config, tokenizer, chat_template.jinja; no weights)."""
    return make_tiny_diffusion_gemma(tmp_path_factory.mktemp("models") / "tiny-diffusion-gemma")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """(ModelInfo, tokenizer) of a tiny randomly initialised ModernBERT with Redraft's tokenizer."""
    return load_model_info("tiny-random", tiny_model_dir), load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model_dir):
    return get_adapter("tiny-random", tiny_model_dir, "cpu")


@pytest.fixture(scope="session", params=["tiny-random", "redraft-tiny"])
def any_adapter(request, tiny_model_dir):
    """Each model the property tests must hold for: a tiny random one and the shipped one."""
    if request.param == "tiny-random":
        return get_adapter("tiny-random", tiny_model_dir, "cpu")
    return get_adapter("redraft-tiny", DEFAULT_MODEL_DIR, "cpu")


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    """A client of the shared Redis (never flushed: tests keep to their own keys)."""
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def queue(broker: redis.Redis) -> Iterator[str]:
    """A queue name no other test uses; every key holding it (messages, liveness records, epoch) is deleted after
    the test."""
    name = f"test-queue-{uuid.uuid4().hex[:12]}"
    yield name
    for key in broker.scan_iter(match=f"*{name}*"):
        broker.delete(key)
