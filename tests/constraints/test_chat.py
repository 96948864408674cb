"""Chat messages rendered with the model directory's own chat template (constraints/chat.py)."""

from __future__ import annotations

import json

import pytest

from redraft.constraints.chat import load_chat_template, render_chat
from redraft.constraints.generate import compile_generate, prompt_slot
from redraft.errors import InvalidRequest
from redraft.families import load_model_info, load_tokenizer
from tests.utils.fixtures import MASKED_CHAT_TEMPLATE
from tests.utils.models import CHAT_TEMPLATE, make_tiny_random_model

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]


def masked_model(tmp_path, chat_template=None, jinja_file=None, **tok_config):
    """A tiny masked model directory with the given chat template(s) and tokenizer_config.json keys."""
    dest = make_tiny_random_model(tmp_path / "model")
    config = json.loads((dest / "tokenizer_config.json").read_text())
    if chat_template is not None:
        config["chat_template"] = chat_template
    (dest / "tokenizer_config.json").write_text(json.dumps({**config, **tok_config}))
    if jinja_file is not None:
        (dest / "chat_template.jinja").write_text(jinja_file)
    return load_model_info("tiny-chat", dest)


def test_renders_the_chat_template_jinja_file(tiny_diffusion_gemma_dir):
    info = load_model_info("tiny-gemma", tiny_diffusion_gemma_dir)
    assert load_chat_template(info) == CHAT_TEMPLATE
    # The template writes bos_token first; the canvas starts with BOS already, so the render drops it.
    assert render_chat(info, CHAT) == "<|turn|>system\nBe brief.<|end|>\n<|turn|>user\nName a colour.<|end|>\n" \
                                      "<|turn|>assistant\n"


def test_renders_the_tokenizer_config_template(tiny_chat_model_dir):
    info = load_model_info("tiny-chat", tiny_chat_model_dir)
    assert load_chat_template(info) == MASKED_CHAT_TEMPLATE
    assert render_chat(info, CHAT) == "<|system|>Be brief.\n<|user|>Name a colour.\n<|assistant|>"


def test_the_jinja_file_wins_over_tokenizer_config(tmp_path):
    info = masked_model(tmp_path, chat_template="from the config", jinja_file="from the file")
    assert render_chat(info, CHAT) == "from the file"


def test_named_templates_take_the_default(tmp_path):
    info = masked_model(tmp_path, chat_template=[{"name": "tool_use", "template": "tools"},
                                                 {"name": "default", "template": "default"}])
    assert render_chat(info, CHAT) == "default"


def test_named_templates_without_a_default_are_no_template(tmp_path):
    info = masked_model(tmp_path, chat_template=[{"name": "tool_use", "template": "tools"}])
    with pytest.raises(InvalidRequest) as exc:
        render_chat(info, CHAT)
    assert exc.value.code == "no_chat_template" and "'tool_use'" in exc.value.message


def test_no_template_is_a_422_that_says_use_prompt(tiny_model):
    info, _ = tiny_model
    with pytest.raises(InvalidRequest) as exc:
        render_chat(info, CHAT)
    err = exc.value
    assert err.status_code == 422 and err.code == "no_chat_template"
    assert "no chat_template.jinja" in err.message and "tokenizer_config.json no chat_template" in err.message
    assert "use `prompt`" in err.message


def test_template_variables_like_transformers(tmp_path):
    source = ("{% for m in messages %}{{ m.role }}={{ m.content }};{% endfor %}"
              "{{ add_generation_prompt }}|{{ eos_token }}|{{ bos_token | length }}")
    info = masked_model(tmp_path, chat_template=source)
    assert render_chat(info, CHAT) == "system=Be brief.;user=Name a colour.;True|[EOS]|5"


def test_bos_and_eos_fall_back_to_the_models_ids(tmp_path):
    info = masked_model(tmp_path, chat_template="<{{ bos_token }}|{{ eos_token }}>", bos_token=None, eos_token=None)
    tokenizer = load_tokenizer(info.path)
    assert render_chat(info, CHAT) == f"<{tokenizer.id_to_token(info.bos_id)}|{tokenizer.id_to_token(info.eos_id)}>"


def test_trim_and_lstrip_blocks(tmp_path):
    source = "{% for m in messages %}\n    {% if m.role == 'user' %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}"
    assert render_chat(masked_model(tmp_path, chat_template=source), CHAT) == "Name a colour.\n"


@pytest.mark.parametrize("model", ["tiny-chat", "tiny-gemma"])
def test_bos_is_not_doubled_on_the_canvas(model, tiny_chat_model_dir, tiny_diffusion_gemma_dir):
    path = tiny_chat_model_dir if model == "tiny-chat" else tiny_diffusion_gemma_dir
    info, tokenizer = load_model_info(model, path), load_tokenizer(path)
    assert load_chat_template(info).startswith("{{ bos_token }}") and info.bos_id is not None
    rendered = render_chat(info, CHAT)
    canvas = compile_generate([rendered, prompt_slot(None, 4, 0, 256)], tokenizer, info)
    assert canvas.token_ids[0] == info.bos_id and canvas.token_ids.count(info.bos_id) == 1
    body = tokenizer.encode(rendered, add_special_tokens=False).ids
    assert canvas.token_ids[1:1 + len(body)] == body and all(canvas.fixed[:1 + len(body)])
    assert canvas.pieces == [rendered, 0]


def test_a_bos_later_in_the_text_is_kept(tmp_path):
    info = masked_model(tmp_path, chat_template="{{ bos_token }}{{ bos_token }}x")
    assert render_chat(info, CHAT) == "[BOS]x"  # only the leading one, once


def test_list_of_text_parts_renders_as_joined_text(tiny_chat_model_dir):
    info = load_model_info("tiny-chat", tiny_chat_model_dir)
    content = [{"type": "text", "text": "Name"}, {"type": "text", "text": "a colour."}]
    parts = [CHAT[0], {"role": "user", "content": content}]
    assert render_chat(info, parts) == render_chat(info, [CHAT[0], {"role": "user", "content": "Name\na colour."}])


def test_an_image_part_is_refused(tiny_chat_model_dir):
    info = load_model_info("tiny-chat", tiny_chat_model_dir)
    with pytest.raises(InvalidRequest, match="only text parts"):
        render_chat(info, [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])


@pytest.mark.parametrize("source,message", [
    ("{{ ''.__class__.__mro__ }}", "sandbox forbids"),
    ("{{ messages.append(messages[0]) }}", "sandbox forbids"),  # the immutable sandbox: no mutating the input
    ("{% for m in messages %}", "syntax error"),
    ("{{ messages[0].content.nope() }}", "failed to render"),
    ("{{ raise_exception('roles must alternate user/assistant') }}", "refused the messages: roles must alternate"),
])
def test_template_errors_are_invalid_requests(tmp_path, source, message):
    with pytest.raises(InvalidRequest, match=message) as exc:
        render_chat(masked_model(tmp_path, chat_template=source), CHAT)
    assert exc.value.status_code == 422 and exc.value.code == "chat_template_error"


def test_the_render_is_bounded(tmp_path):
    info = masked_model(tmp_path, chat_template="{% for i in range(100000) %}{{ messages[1].content }}{% endfor %}")
    with pytest.raises(InvalidRequest, match="over 1,000,000 characters") as exc:
        render_chat(info, CHAT)
    assert exc.value.code == "chat_too_long"
