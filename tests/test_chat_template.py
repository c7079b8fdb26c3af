"""Chat templates render exactly as transformers renders them; built-ins and resolve behave."""

from datetime import datetime
from pathlib import Path

import pytest

from gguflm.chat.template import BUILTIN_TEMPLATES, ChatTemplate
from gguflm.errors import GGUFLMError

TEMPLATE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "chat_templates"
REAL_TEMPLATES = sorted(TEMPLATE_DIR.glob("*.jinja")) if TEMPLATE_DIR.is_dir() else []

CHAT = [
    {"role": "system", "content": "You are terse. Use <b>tags</b> & \"quotes\"."},
    {"role": "user", "content": "Hi there!"},
    {"role": "assistant", "content": "Hello. How can I help?"},
    {"role": "user", "content": "What is 2+2? /no_think"},
]
BOS, EOS = "<s>", "</s>"
# Llama 3.1 reads `date_string` when given; both renderers get the same one.
FIXED = {"date_string": "26 Jul 2024"}


def oracle(source: str, messages: list, add_generation_prompt: bool, **extra) -> str:
    """transformers' own renderer, called as `apply_chat_template` calls it."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        [messages],
        chat_template=source,
        add_generation_prompt=add_generation_prompt,
        bos_token=BOS,
        eos_token=EOS,
        **extra,
    )
    return rendered[0]


def ours(source: str, messages: list, add_generation_prompt: bool, **extra) -> str:
    return ChatTemplate(source, BOS, EOS, name="t").render(messages, add_generation_prompt, **extra)


# ───── real templates against transformers ─────


@pytest.fixture(params=REAL_TEMPLATES or [None], ids=lambda p: p.stem if p else "missing")
def real_template(request) -> str:
    if request.param is None:
        pytest.skip(f"no chat templates under {TEMPLATE_DIR}")
    return request.param.read_text(encoding="utf-8")


@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_real_template_matches_transformers(real_template, add_generation_prompt):
    expected = oracle(real_template, CHAT, add_generation_prompt, **FIXED)
    assert ours(real_template, CHAT, add_generation_prompt, **FIXED) == expected


@pytest.mark.parametrize("enable_thinking", [False, True])
def test_extra_kwargs_reach_the_template(real_template, enable_thinking):
    extra = {**FIXED, "enable_thinking": enable_thinking}
    assert ours(real_template, CHAT[1:2], True, **extra) == oracle(real_template, CHAT[1:2], True, **extra)


def test_mistral_nemo_rejection_surfaces_as_gguflm_error():
    path = TEMPLATE_DIR / "mistralai-Mistral-Nemo-Instruct-2407.jinja"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    template = ChatTemplate(path.read_text(encoding="utf-8"), BOS, EOS, name="nemo")
    with pytest.raises(GGUFLMError, match="roles must alternate user/assistant"):
        template.render([CHAT[1], CHAT[1]])


def test_jinja_features_match_transformers():
    source = (
        "{% set ns = namespace(n=0) %}{% for m in messages if m.role != 'system' %}"
        "{{ loop.index }}/{{ loop.length }}{{ '!' if loop.last }} {{ m.role|upper }}: {{ m.content|trim }}"
        "{% if loop.first %}{% continue %}{% endif %}{% set ns.n = ns.n + 1 %}\n{% else %}none{% endfor %}"
        "{{ ns.n }} {{ messages|map(attribute='role')|join(',') }} {{ messages[0]|tojson }}"
        " {{ {'b': 1, 'a': [1, 2]}|tojson(indent=2, sort_keys=true) }} {{ dict(x=1)|tojson }}"
        "{% for i in [[1, [2]], [3]] recursive %}({{ i if i is number else loop(i) }}){% endfor %}"
        "{% generation %}{{ '%s-%d'|format('a', 3) ~ '{}'.format(4) }}{% endgeneration %}"
        "{{ tools is none }}{{ documents is none }}{{ bos_token ~ eos_token }}{% if x is defined %}X{% endif %}"
        "{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}{{ loop.revindex }}{% endfor %}"
        "{{ messages[-1].reasoning_content }}|{{ messages[-1].thinking }}"
    )
    messages = [*CHAT, {"role": "assistant", "content": "4", "reasoning": "easy"}]
    assert ours(source, messages, False) == oracle(source, messages, False)


def test_strftime_now_gives_todays_date():
    before = datetime.now().strftime("%d %b %Y")
    rendered = ours("{{ strftime_now('%d %b %Y') }}", [], False)
    assert rendered in (before, datetime.now().strftime("%d %b %Y"))


def test_syntax_and_undefined_errors_are_gguflm_errors():
    with pytest.raises(GGUFLMError, match="syntax error on line 2"):
        ChatTemplate("ok\n{% for %}", name="bad")
    with pytest.raises(GGUFLMError, match="'nothing' is undefined"):
        ours("{{ nothing.here }}", [], False)
    with pytest.raises(GGUFLMError, match="rejected the conversation: no system"):
        ours("{{ raise_exception('no system') }}", [], False)


# ───── built-ins ─────

SHORT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
EXPECTED = {
    "chatml": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "qwen": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "llama3": "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    "llama2": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]",
    "mistral": "<s>[INST] Be brief.\n\nHi [/INST]",
    "phi3": "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n",
    "gemma": "<s><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n",
}


@pytest.mark.parametrize("name", BUILTIN_TEMPLATES)
def test_builtin_renders_system_and_user(name):
    assert ChatTemplate.resolve(name, None, BOS, EOS).render(SHORT) == EXPECTED[name]


def test_builtins_render_multi_turn_conversations():
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ]
    render = {name: ChatTemplate.resolve(name, None, BOS, EOS).render(turns) for name in BUILTIN_TEMPLATES}
    assert render["llama2"] == "<s>[INST] Hi [/INST] Hello. </s><s>[INST] Bye [/INST]"
    assert render["mistral"] == "<s>[INST] Hi [/INST] Hello.</s>[INST] Bye [/INST]"
    assert render["gemma"] == (
        "<s><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )
    assert render["qwen"].startswith(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    )
    phi3 = ChatTemplate.resolve("phi3", None, BOS, EOS).render(turns[:1], add_generation_prompt=False)
    assert phi3 == "<|user|>\nHi<|end|>\n</s>"


@pytest.mark.parametrize("messages", [CHAT, CHAT[1:]], ids=["system", "no-system"])
def test_qwen_builtin_matches_the_real_qwen25_template(messages):
    path = TEMPLATE_DIR / "Qwen-Qwen2.5-7B-Instruct.jinja"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    real = ChatTemplate(path.read_text(encoding="utf-8")).render(messages)
    assert ChatTemplate.resolve("qwen", None).render(messages) == real


def test_builtin_rejects_unknown_role():
    with pytest.raises(GGUFLMError, match="not tool"):
        ChatTemplate.resolve("gemma", None).render([{"role": "tool", "content": "x"}])


# ───── resolve ─────


def test_resolve_prefers_option_then_gguf(tmp_path):
    assert ChatTemplate.resolve(None, "{{ 'gguf' }}").render([]) == "gguf"
    assert ChatTemplate.resolve("chatml", "{{ 'gguf' }}").name == "chatml"
    path = tmp_path / "mine.jinja"
    path.write_text("{{ bos_token }}{{ messages[0].content }}", encoding="utf-8")
    template = ChatTemplate.resolve(str(path), "{{ 'gguf' }}", bos_token="<b>")
    assert template.render([{"role": "user", "content": "hey"}]) == "<b>hey"


def test_resolve_without_any_template_names_the_builtins():
    with pytest.raises(GGUFLMError, match="no chat template.*--chat-template.*chatml, llama2"):
        ChatTemplate.resolve(None, None)
    with pytest.raises(GGUFLMError, match="no chat template"):
        ChatTemplate.resolve(None, "")


def test_resolve_unknown_name_lists_builtins(tmp_path):
    with pytest.raises(GGUFLMError, match="unknown chat template 'chatgpt'.*chatml, llama2, llama3"):
        ChatTemplate.resolve("chatgpt", "{{ 'gguf' }}")
    with pytest.raises(GGUFLMError, match="neither a file nor a built-in"):
        ChatTemplate.resolve(str(tmp_path), None)  # a directory is not a template file
