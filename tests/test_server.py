"""`gguflm serve` as clients use it: a subprocess on 127.0.0.1 spoken to with the official `openai` client.

The expected texts come from the Engine in this process, on the same model file: greedy (and seeded)
output through the server, alone or in a batch of eight, is the engine's, token for token.
"""

from __future__ import annotations

import json
import threading

import openai
import pytest

import gguflm
from gguflm.chat.session import encode_rendered
from gguflm.chat.template import ChatTemplate
from gguflm.sampling import SamplingParams
from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf
from gguflm.synthetic.vocab import spm_tokenizer
from server_process import ServerProcess

KEY = "test-key-7"
CTX = 1024
NAME = "tiny"
GREEDY = SamplingParams.greedy_params()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    spec = SyntheticSpec(qtype="Q8_0", n_vocab=320, n_ctx=4096, seed=11)
    return write_synthetic_gguf(tmp_path_factory.mktemp("serve") / f"{NAME}.gguf", spec, tokenizer=spm_tokenizer(320))


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    proc = ServerProcess(model_path, "--parallel", "8", "-c", str(CTX), "--chat-template", "chatml",
                         log=tmp_path_factory.mktemp("log") / "server.log", api_key=KEY)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def local(model_path):
    """The same model in this process: the oracle."""
    model = gguflm.load(model_path, device="cpu")
    return model, ChatTemplate.for_model(model, "chatml")


def engine_text(local, ids: list[int], n: int, sampling=GREEDY) -> tuple[str, str, int]:
    """(text, OpenAI finish reason, completion tokens) of the Engine on these prompt ids."""
    model, _ = local
    engine = model.new_engine(ctx=CTX)
    text = "".join(engine.generate(ids, n, sampling))
    last = engine.stats.last
    return text, {"eog": "stop", "stop": "stop"}.get(last.finish_reason, "length"), last.generated_tokens


def chat_ids(local, messages) -> list[int]:
    model, template = local
    return encode_rendered(model.tokenizer, template.render(messages))


MESSAGES = [{"role": "system", "content": "You tell stories."}, {"role": "user", "content": "Once upon a time"}]


def test_models_list_names_the_served_model(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [NAME]
    assert models.data[0].object == "model"


def test_chat_completion_is_the_engines_greedy_reply_with_true_usage(client, local):
    reply = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=24, temperature=0)
    ids = chat_ids(local, MESSAGES)
    text, reason, n = engine_text(local, ids, 24)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == text and text
    assert choice.finish_reason == reason
    assert reply.usage.prompt_tokens == len(ids)
    assert reply.usage.completion_tokens == n and reply.usage.total_tokens == len(ids) + n
    assert reply.object == "chat.completion" and reply.model == NAME and reply.id.startswith("chatcmpl-")


def test_streamed_chat_carries_the_same_text_then_finish_then_usage(client):
    whole = client.chat.completions.create(model=NAME, messages=MESSAGES, max_completion_tokens=20, temperature=0)
    chunks = list(client.chat.completions.create(model=NAME, messages=MESSAGES, max_completion_tokens=20,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert not chunks[-1].choices and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1]) and len({c.id for c in chunks}) == 1


def test_completion_equals_the_engine_and_stop_strings_cut_it(client, local):
    model, _ = local
    prompt = "once upon a time"
    ids = model.tokenizer.encode(prompt, add_special=True, parse_special=True)
    text, _, _ = engine_text(local, ids, 30)
    got = client.completions.create(model=NAME, prompt=prompt, max_tokens=30, temperature=0)
    assert got.choices[0].text == text and got.usage.prompt_tokens == len(ids)
    stop = text[6:9]
    assert stop and stop in text
    cut = client.completions.create(model=NAME, prompt=prompt, max_tokens=30, temperature=0, stop=[stop, "@@@"])
    assert cut.choices[0].text == text[: text.index(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model=NAME, prompt=prompt, max_tokens=30, temperature=0, stop=stop,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == text[: text.index(stop)]
    by_ids = client.completions.create(model=NAME, prompt=ids, max_tokens=30, temperature=0)  # token ids in
    assert by_ids.choices[0].text == text


def test_seeds_reproduce_and_match_the_engine(client, local):
    def sample(seed):
        return client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=24, temperature=1.0,
                                              seed=seed, extra_body={"min_p": 0.0, "top_k": 0})

    first, again, other = sample(7), sample(7), sample(8)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content
    expect, _, _ = engine_text(local, chat_ids(local, MESSAGES), 24,
                               SamplingParams(temperature=1.0, seed=7, top_k=0, min_p=0.0))
    assert first.choices[0].message.content == expect


def test_logprobs_rank_the_chosen_token_first_when_greedy(client):
    reply = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=8, temperature=0,
                                           logprobs=True, top_logprobs=3)
    entries = reply.choices[0].logprobs.content
    assert len(entries) == reply.usage.completion_tokens
    for e in entries:
        assert len(e.top_logprobs) == 3 and e.logprob <= 0
        tops = [t.logprob for t in e.top_logprobs]
        assert tops == sorted(tops, reverse=True) and e.logprob == tops[0] and e.token == e.top_logprobs[0].token
    legacy = client.completions.create(model=NAME, prompt="the cat", max_tokens=5, temperature=0, logprobs=2)
    lp = legacy.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == legacy.usage.completion_tokens
    assert lp.text_offset[0] == 0 and all(len(t) == 2 for t in lp.top_logprobs)


def test_a_follow_up_turn_prefills_only_the_new_tokens(client, local):
    first = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=12, temperature=0)
    turn2 = MESSAGES + [{"role": "assistant", "content": first.choices[0].message.content},
                        {"role": "user", "content": "and then?"}]
    second = client.chat.completions.create(model=NAME, messages=turn2, max_tokens=4, temperature=0)
    assert second.usage.prompt_tokens == len(chat_ids(local, turn2))
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens


PROMPTS = [f"{w} the {v}" for w, v in zip(("once", "hello", "time", "world", "upon", "it", "the", "a"),
                                           ("cat", "time", "world", "hello", "a", "dog", "sun", "end"))]


def test_eight_concurrent_streams_each_equal_the_request_alone(client, server):
    def ask(prompt, stream):
        return client.chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": prompt}], max_tokens=32, temperature=0,
            stream=stream, extra_body={"ignore_eos": True}, **({"stream_options": {"include_usage": True}}
                                                               if stream else {}))

    alone = [ask(p, False).choices[0].message.content for p in PROMPTS]
    assert len(set(alone)) == len(PROMPTS)
    before = server.metrics()
    barrier, results = threading.Barrier(len(PROMPTS)), {}

    def worker(i):
        barrier.wait()
        results[i] = list(ask(PROMPTS[i], True))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    after = server.metrics()
    for i, chunks in results.items():
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == alone[i]
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
        assert chunks[-1].usage.completion_tokens == 32
    assert len(results) == len(PROMPTS)
    rows = after["gguflm_decode_rows_total"] - before["gguflm_decode_rows_total"]
    steps = after["gguflm_decode_steps_total"] - before["gguflm_decode_steps_total"]
    assert rows == len(PROMPTS) * 31 and steps < rows  # 31 decode steps each; some were shared


def test_a_client_that_disconnects_frees_its_slot(client, server):
    cancelled = server.metrics().get('gguflm_requests_finished_total{reason=cancelled}', 0)
    stream = client.chat.completions.create(model=NAME, messages=MESSAGES, temperature=0, stream=True,
                                            extra_body={"ignore_eos": True})  # runs until the context is full
    seen = [next(stream) for _ in range(4)]
    assert seen[0].choices[0].delta.role == "assistant"
    stream.close()
    m = server.wait_for(lambda m: m["gguflm_slots_busy"] == 0 and m["gguflm_requests_running"] == 0,
                        "the slot to be freed")
    assert m['gguflm_requests_finished_total{reason=cancelled}'] == cancelled + 1
    assert client.completions.create(model=NAME, prompt="hello", max_tokens=3, temperature=0).choices[0].text


# ---------------------------------------------------------------------------- bad input


def error_of(status_body, status: int) -> dict:
    got, body = status_body
    assert got == status, body
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("body,param", [
    ({"model": NAME}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": USER, "max_tokens": "5"}, "max_tokens"),
    ({"messages": USER, "max_tokens": -1}, "max_tokens"),
    ({"messages": USER, "max_tokens": 0}, "max_tokens"),
    ({"messages": USER, "temperature": "hot"}, "temperature"),
    ({"messages": USER, "temperature": 3.0}, "temperature"),
    ({"messages": USER, "stream": "yes"}, "stream"),
    ({"messages": USER, "stop": [1, 2]}, "stop"),
    ({"messages": USER, "n": 2}, "n"),
    ({"messages": USER, "top_logprobs": 2}, "top_logprobs"),
    ({"messages": USER, "model": "gpt-4"}, "model"),
])
def test_invalid_fields_get_a_400_naming_them(server, body, param):
    error = error_of(server.request("POST", CHAT, body), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_malformed_bodies_get_4xx_json_and_the_server_goes_on(server):
    nan = b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}'
    assert error_of(server.request("POST", CHAT, nan), 400)["param"] == "temperature"
    assert error_of(server.request("POST", CHAT, b'{"messages": ['), 400)["code"] == "invalid_json"
    assert error_of(server.request("POST", CHAT, b"[1, 2]"), 400)["code"] == "invalid_json"
    assert error_of(server.request("POST", CHAT, b"\xff\xfe"), 400)["code"] == "invalid_json"
    huge = {"messages": [{"role": "user", "content": "the cat " * 2000}]}
    assert error_of(server.request("POST", CHAT, huge), 400)["code"] == "context_length_exceeded"
    body = b'{"messages": "' + b"a" * (50 << 20) + b'"}'
    assert error_of(server.request("POST", CHAT, body), 413)["code"] == "body_too_large"
    assert error_of(server.request("POST", "/v1/completions", {"prompt": [1, 99999]}), 400)["param"] == "prompt"
    assert error_of(server.request("GET", "/v1/nothing"), 404)["code"] == "not_found"
    assert error_of(server.request("GET", CHAT), 405)
    status, _ = server.request("POST", CHAT, {"messages": USER, "max_tokens": 2, "temperature": 0})
    assert status == 200 and server.request("GET", "/health")[0] == 200
    assert server.metrics()['gguflm_requests_rejected_total{status=400}'] >= 5


def test_api_key_is_required_and_checked(server):
    assert error_of(server.request("GET", "/v1/models", key=""), 401)["code"] == "invalid_api_key"
    assert error_of(server.request("GET", "/v1/models", key="wrong"), 401)["code"] == "invalid_api_key"
    bad = openai.OpenAI(base_url=server.base_url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=NAME, messages=USER)
    assert server.request("GET", "/health", key="")[0] == 200  # health needs no key
    assert server.request("GET", "/v1/models")[0] == 200


# ---------------------------------------------------------------------------- one slot: the queue


@pytest.fixture(scope="module")
def single(model_path, tmp_path_factory):
    proc = ServerProcess(model_path, "--parallel", "1", "--max-queue", "3", "-c", str(CTX),
                         log=tmp_path_factory.mktemp("log") / "single.log")
    yield proc
    proc.stop()


def test_one_slot_serves_the_queue_in_order_and_refuses_beyond_it(single):
    """Request k's prompt shares 10 * k tokens with request k - 1's: the prefix its one slot held when it
    was admitted says which request ran just before it."""
    client = openai.OpenAI(base_url=single.base_url + "/v1", api_key="none", max_retries=0, timeout=300)
    base = list(range(100, 150))
    prompts = [[1] + base[: 10 * k] + [300 + k] for k in range(1, 5)]  # a token that breaks the shared run
    blocker = client.completions.create(model=NAME, prompt=prompts[0], temperature=0, stream=True, max_tokens=CTX,
                                        extra_body={"ignore_eos": True})  # runs until the context is full
    next(iter(blocker))
    single.wait_for(lambda m: m["gguflm_requests_running"] == 1, "the first request to run")
    results = {}

    def ask(k):
        results[k] = client.completions.create(model=NAME, prompt=prompts[k], max_tokens=3, temperature=0)

    threads = []
    for k in range(1, 4):
        threads.append(threading.Thread(target=ask, args=(k,)))
        threads[-1].start()
        single.wait_for(lambda m, k=k: m["gguflm_requests_waiting"] == k, f"{k} requests queued")
    status, body = single.request("POST", "/v1/completions", {"prompt": "hello", "max_tokens": 1})
    assert error_of((status, body), 503)["code"] == "queue_full"
    blocker.close()
    for t in threads:
        t.join(timeout=300)
    cached = [results[k].usage.prompt_tokens_details.cached_tokens for k in range(1, 4)]
    assert cached == [11, 21, 31]  # BOS + the 10 k shared tokens of the request before
    m = single.metrics()
    assert m["gguflm_slots_total"] == 1 and m["gguflm_slots_busy"] == 0


# ---------------------------------------------------------------------------- the command line


@pytest.mark.parametrize("args,message", [
    (["--parallel", "0"], "--parallel must be at least 1"),
    (["--max-queue", "-1"], "--max-queue must be 0 or more"),
    (["--chat-template", "no-such-template"], "unknown chat template"),
])
def test_serve_refuses_bad_options_in_one_line(model_path, args, message):
    import subprocess
    import sys

    from server_process import ENV

    result = subprocess.run([sys.executable, "-m", "gguflm.cli.main", "serve", "-m", str(model_path),
                             "--device", "cpu", "--port", "1", *args], capture_output=True, text=True, env=ENV,
                            timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and message in result.stderr


# ---------------------------------------------------------------------------- the model's own template


@pytest.fixture(scope="module")
def qwen3(testdata, tmp_path_factory):
    from test_chat_models import make_chat_model

    path = make_chat_model(tmp_path_factory.mktemp("qwen3") / "qwen3.gguf", "qwen3", testdata)
    proc = ServerProcess(path, "--parallel", "2", "-c", "512", log=tmp_path_factory.mktemp("log") / "qwen3.log")
    yield path, proc
    proc.stop()


def test_chat_uses_the_models_own_template_as_gguflm_chat_does(qwen3):
    path, proc = qwen3
    model = gguflm.load(path, device="cpu")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the cat in a hat"}]
    ids = encode_rendered(model.tokenizer, ChatTemplate.for_model(model).render(messages))
    client = openai.OpenAI(base_url=proc.base_url + "/v1", api_key="none", max_retries=0, timeout=120)
    reply = client.chat.completions.create(model="qwen3", messages=messages, max_tokens=16, temperature=0)
    assert reply.usage.prompt_tokens == len(ids)
    engine = model.new_engine(ctx=512)
    assert reply.choices[0].message.content == "".join(engine.generate(ids, 16, GREEDY))
