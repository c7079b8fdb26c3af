"""ChatSession without a terminal: cache reuse between turns, what the model sees, context, save/load."""

from __future__ import annotations

import json

import pytest
import torch

import gguflm
from gguflm.chat.session import ChatSession, encode_rendered
from gguflm.chat.template import ChatTemplate
from gguflm.engine import common_prefix
from gguflm.errors import GGUFLMError
from gguflm.sampling import SamplingParams
from test_chat_models import make_chat_models

GREEDY = SamplingParams.greedy_params()


@pytest.fixture(scope="module")
def chat_models(testdata, tmp_path_factory):
    return make_chat_models(tmp_path_factory.mktemp("chat_models"), testdata)


@pytest.fixture(autouse=True)
def one_thread():
    # A tiny model on a shared 2-core machine: threads only add contention.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def session_for(path, ctx=None, template=None, max_tokens=6, sampling=GREEDY, system=None) -> ChatSession:
    model = gguflm.load(path, device="cpu")
    tok = model.tokenizer
    chat = ChatTemplate.resolve(template, model.file.get("tokenizer.chat_template"),
                                tok.token_text(tok.bos_id), tok.token_text(tok.eos_id))
    return ChatSession(model.new_engine(ctx), chat, system=system, sampling=sampling, max_tokens=max_tokens)


def say(session: ChatSession, text: str) -> str:
    return "".join(session.send(text))


def test_second_turn_prefills_only_the_new_tokens_and_matches_a_fresh_prefill(stories260k):
    s = session_for(stories260k, template="chatml", system="You tell stories.")
    first = say(s, "Hello")
    assert s.engine.stats.last.prefilled_tokens == s.engine.stats.last.prompt_tokens  # cold cache
    held = list(s.engine.tokens)
    s.messages.append({"role": "user", "content": "Tell me more"})
    full_ids = s.prompt_ids()
    s.messages.pop()
    say(s, "Tell me more")
    reused = common_prefix(held, full_ids)
    assert s.engine.stats.last.prefilled_tokens == len(full_ids) - reused
    assert reused > len(full_ids) // 2  # the system prompt, the first turn and its reply stayed cached
    assert s.messages[-3] == {"role": "assistant", "content": first}

    # The cache, built over two turns, gives the logits a fresh prefill of the whole conversation gives.
    engine = s.engine
    engine.truncate(len(full_ids) - 1)
    assert engine.tokens == full_ids[:-1]
    cached = engine.backend.prefill([full_ids[-1]], engine.cache)[-1]
    fresh = engine.backend.prefill(full_ids, engine.backend.new_cache(len(full_ids)))[-1]
    assert torch.allclose(cached, fresh, atol=1e-4)


@pytest.mark.parametrize("flavor", ["llama3", "qwen3"])
def test_the_model_sees_exactly_what_the_template_renders(chat_models, flavor):
    s = session_for(chat_models[flavor], system="Be brief.", sampling=SamplingParams(seed=3))
    tok = s.tokenizer
    say(s, "Hi there")
    s.messages[-1]["content"] = "<think>\nhmm\n</think>\n\nHello!"  # as a reasoning model would answer
    say(s, "And again?")
    text = s.template.render(s.messages[:-1])
    ids = encode_rendered(tok, text)
    assert s.engine.tokens[: len(ids)] == ids
    assert tok.decode(ids, skip_special=False) == text
    assert text.count("Be brief.") == 1 and "And again?" in text
    if flavor == "llama3":
        assert text.startswith("<|begin_of_text|><|start_header_id|>system")
        assert ids.count(tok.bos_id) == 1  # the template's BOS, not a second one
    else:
        assert "<think>" not in text  # Qwen3 drops the reasoning of earlier turns
        assert text.endswith("<|im_start|>user\nAnd again?<|im_end|>\n<|im_start|>assistant\n")


def test_regen_replaces_the_last_reply_and_seeded_replies_differ(stories260k):
    s = session_for(stories260k, template="chatml", sampling=SamplingParams(seed=5))
    first = say(s, "Hello")
    second = "".join(s.regen())
    assert [m["role"] for m in s.messages] == ["user", "assistant"]
    assert s.messages[1]["content"] == second != first  # reply k samples with seed + k
    with pytest.raises(GGUFLMError, match="no reply"):
        s.messages.append({"role": "user", "content": "x"})
        list(s.regen())


def test_an_interrupted_reply_stays_in_the_conversation(stories260k):
    s = session_for(stories260k, template="chatml", max_tokens=200)
    stream = s.send("Hello")
    pieces = [next(stream) for _ in range(3)]
    stream.close()  # what Ctrl-C does to the stream
    assert s.messages[-1] == {"role": "assistant", "content": "".join(pieces)}
    assert s.engine.stats.last.finish_reason == "interrupted"
    say(s, "Go on")
    assert [m["role"] for m in s.messages] == ["user", "assistant", "user", "assistant"]


def test_a_full_context_drops_the_oldest_turns_but_keeps_the_system_prompt(stories260k):
    s = session_for(stories260k, ctx=160, template="chatml", max_tokens=16, system="Stories.")
    for n in range(5):
        say(s, f"Turn {n}, please.")
    dropped = [n for n in s.notices if "dropped" in n]
    assert dropped
    assert s.messages[0] == {"role": "system", "content": "Stories."}
    assert s.messages[-2]["content"] == "Turn 4, please."
    assert "Turn 0, please." not in [m["content"] for m in s.messages]
    assert len(s.engine.tokens) <= s.engine.ctx
    with pytest.raises(GGUFLMError, match="does not fit"):
        say(s, "word " * 200)
    assert s.messages[-1]["role"] == "assistant"  # the message that did not fit is not kept


def test_save_then_load_restores_the_conversation(stories260k, tmp_path):
    s = session_for(stories260k, template="chatml", system="Sys")
    say(s, "Hello")
    path = s.save(tmp_path / "conv.json")
    saved = json.loads(path.read_text())
    assert saved == s.messages and [m["role"] for m in saved] == ["system", "user", "assistant"]

    t = session_for(stories260k, template="chatml")
    assert t.load(path) == 3 and t.messages == s.messages
    assert t.prompt_ids() == s.prompt_ids()
    (tmp_path / "bad.json").write_text('[{"role": "wizard", "content": "x"}]')
    with pytest.raises(GGUFLMError, match="message 1"):
        t.load(tmp_path / "bad.json")
    with pytest.raises(GGUFLMError, match="cannot read"):
        t.load(tmp_path / "missing.json")
    assert t.messages == s.messages  # a failed load changes nothing


def test_settings_and_system_prompt(stories260k):
    s = session_for(stories260k, template="chatml")
    assert s.set("temp", "0.7") == "temperature = 0.7" and s.sampling.temperature == 0.7
    s.set("top-k", "5")
    s.set("seed", "none")
    s.set("max_tokens", "32")
    assert (s.sampling.top_k, s.sampling.seed, s.max_tokens) == (5, None, 32)
    for bad in (("top_p", "2"), ("temp", "hot"), ("colour", "1"), ("max_tokens", "0")):
        with pytest.raises(GGUFLMError):
            s.set(*bad)
    s.set_system("A")
    s.messages.append({"role": "user", "content": "u"})
    s.set_system("B")
    assert s.messages[0] == {"role": "system", "content": "B"} and len(s.messages) == 2
    s.clear()
    assert s.messages == [{"role": "system", "content": "B"}]
    s.set_system("")
    assert s.messages == [] and s.system is None


def test_a_rendered_prompt_far_past_the_context_is_refused_before_tokenizing(stories260k, monkeypatch):
    s = session_for(stories260k, ctx=64, template="chatml")
    calls = []
    monkeypatch.setattr(s.engine.tokenizer, "encode", lambda *a, **k: calls.append(1) or [1])
    with pytest.raises(GGUFLMError, match="characters, more than a 64-token context can hold"):
        list(s.send("x" * 64 * 64))
    assert calls == [] and s.messages == []
