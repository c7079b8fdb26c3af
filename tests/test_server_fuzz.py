"""Hostile requests to the server's two completion routes: every answer is a valid success or a 4xx
JSON error in OpenAI's shape, never a 500 or a hang. Hand-picked cases, then seeded mutations of
valid bodies (fields of every type and size, broken JSON, bytes that are not UTF-8)."""

from __future__ import annotations

import json
import os
import random
import threading
import time

import pytest

import gguflm
from gguflm.chat.template import ChatTemplate
from gguflm.server.app import MAX_BODY, Server, ServerConfig, build_app
from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf
from gguflm.synthetic.checkpoint_mutants import hostile_value
from gguflm.synthetic.vocab import spm_tokenizer

MUTANTS = int(os.environ.get("GGUFLM_FUZZ_SERVER_MUTANTS", "300"))
SECONDS = 120  # a loaded CI machine stops early, after at least a third of the mutants
SEED = int(os.environ.get("GGUFLM_FUZZ_SEED", str(random.SystemRandom().randrange(1 << 30))))
HANG = 60.0  # seconds without an answer that count as a hang (the bar is 20 s on an idle machine)
CTX = 128  # small, so that an absurd max_tokens ends at the context quickly
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from starlette.testclient import TestClient

    spec = SyntheticSpec(qtype="Q8_0", n_vocab=320, n_ctx=512, seed=5)
    path = write_synthetic_gguf(tmp_path_factory.mktemp("fuzz-serve") / "tiny.gguf", spec, tokenizer=spm_tokenizer(320))
    model = gguflm.load(path, device="cpu")
    engine = model.new_engine(CTX, graphs=False, slots=2)
    server = Server(model, engine, ChatTemplate.for_model(model, "chatml"), ServerConfig("tiny", max_queue=8))
    with TestClient(build_app(server), raise_server_exceptions=True) as c:  # a handler's exception fails the test
        yield c


def post(client, route: str, body: bytes) -> tuple[int, bytes]:
    """(status, body) of one request, or an AssertionError when it takes longer than HANG."""
    result: dict = {}

    def send():
        try:
            r = client.post(route, content=body, headers={"content-type": "application/json"})
            result["answer"] = (r.status_code, r.content)
        except BaseException as e:  # noqa: BLE001  (re-raised in the test's thread)
            result["error"] = e

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), f"no answer within {HANG} s"
    if "error" in result:
        raise result["error"]
    return result["answer"]


def check_answer(status: int, body: bytes) -> str:
    """A valid completion (whole or streamed) or an OpenAI error object with a 4xx status; returns which."""
    assert status != 500, body[:2000]
    if status != 200:
        assert 400 <= status < 500 or status == 503, (status, body[:500])
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str) and error["message"] and "\n" not in error["message"]
        return "error"
    if body.startswith(b"data: "):
        events = [e.removeprefix(b"data: ") for e in body.split(b"\n\n") if e]
        assert events[-1] == b"[DONE]", events[-3:]
        for e in events[:-1]:
            chunk = json.loads(e)
            assert "error" not in chunk, chunk  # a request that was accepted must not fail in the worker
            assert isinstance(chunk["choices"], list)
        return "streamed"
    reply = json.loads(body)
    assert len(reply["choices"]) == 1 and reply["usage"]["completion_tokens"] >= 0
    return "ok"


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


CASES = [
    (CHAT, _deep(100_000)),
    (CHAT, b'{"messages": ' + _deep(5000) + b"}"),
    (CHAT, b'{"messages": [{"role": "user", "content": "hi"}], "tools": ' + _deep(900) + b"}"),
    (CHAT, b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": ' + b"9" * 5000 + b"}"),
    (CHAT, b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e400}'),
    (CHAT, b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}'),
    (CHAT, b'{"messages": [{"role": "user", "content": "hi"}], "top_p": -Infinity}'),
    (CHAT, b'{"messages": [{"role": "user", "content": "\\ud800"}]}'),
    (COMPLETIONS, b'{"prompt": "\\ud800 hi", "max_tokens": 2}'),
    (COMPLETIONS, b'{"prompt": "hi", "model": "\\ud800"}'),  # quoted back in the error message
    (COMPLETIONS, json.dumps({"prompt": "hi", "model": "\n\x1b[31m"}).encode()),  # quoted escaped, on one line
    (COMPLETIONS, b'{"prompt": "\\udfff", "stream": true}'),
    (CHAT, json.dumps({"messages": USER, "max_tokens": 10**30}).encode()),
    (CHAT, json.dumps({"messages": USER, "max_tokens": 10**9}).encode()),
    (CHAT, json.dumps({"messages": USER, "max_tokens": 10**9, "stream": True, "ignore_eos": True}).encode()),
    (CHAT, json.dumps({"messages": USER, "seed": -(10**30)}).encode()),
    (CHAT, json.dumps({"messages": USER, "top_k": 2**70}).encode()),
    (CHAT, json.dumps({"messages": USER, "repeat_last_n": 10**6, "max_tokens": 2}).encode()),
    (CHAT, json.dumps({"messages": USER, "stop": ["a" * 1_000_000], "max_tokens": 8}).encode()),
    (CHAT, json.dumps({"messages": USER, "stop": ["x" * 100_000] * 16, "max_tokens": 8}).encode()),
    (CHAT, json.dumps({"messages": USER, "stop": "", "max_tokens": 4}).encode()),
    (CHAT, json.dumps({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}).encode()),
    (CHAT, json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}] * 50_000}]}).encode()),
    (CHAT, json.dumps({"messages": [{"role": "user"}], "max_tokens": 2}).encode()),
    (CHAT, json.dumps({"messages": [{"content": "hi"}]}).encode()),
    (CHAT, json.dumps({"messages": [{"role": None, "content": "hi"}]}).encode()),
    (CHAT, json.dumps({"messages": [USER[0]] * 10_000}).encode()),
    (CHAT, json.dumps({"messages": [{"role": "user", "content": "{{ 7 * 7 }}{% for x in range(10**9) %}x{% endfor %}"}],
                       "max_tokens": 2}).encode()),
    (CHAT, json.dumps({"messages": USER, "stream": True, "stream_options": {"include_usage": "x"}}).encode()),
    (CHAT, json.dumps({"messages": USER, "stream": True, "max_tokens": 3, "logprobs": True,
                       "top_logprobs": 20}).encode()),
    (COMPLETIONS, json.dumps({"prompt": [0], "max_tokens": 3, "logprobs": 5, "stream": True}).encode()),
    (COMPLETIONS, json.dumps({"prompt": [True]}).encode()),
    (COMPLETIONS, json.dumps({"prompt": [10**30]}).encode()),
    (COMPLETIONS, json.dumps({"prompt": [1] * 10_000}).encode()),
    (COMPLETIONS, json.dumps({"prompt": "", "max_tokens": 3}).encode()),
    (COMPLETIONS, json.dumps({"prompt": "hi", "max_tokens": 3, "temperature": 1e-300, "top_p": 1e-300,
                              "min_p": 1.0, "repeat_penalty": 1e-300}).encode()),
    (COMPLETIONS, b'\xef\xbb\xbf{"prompt": "hi", "max_tokens": 2}'),
    (COMPLETIONS, '{"prompt": "hi", "max_tokens": 2}'.encode("utf-16")),
    (COMPLETIONS, b'{"prompt": "hi\xff\xfe", "max_tokens": 2}'),
    (COMPLETIONS, b'{"prompt": "hi", "max_tokens": 2}\x00'),
    (COMPLETIONS, b""),
    (COMPLETIONS, b"null"),
    (COMPLETIONS, b'{"prompt": "' + b"a" * (MAX_BODY + 10) + b'"}'),
]


@pytest.mark.parametrize("route, body", CASES, ids=[f"{i}-{b[:40]!r}" for i, (_, b) in enumerate(CASES)])
def test_hostile_request_gets_a_clean_answer(client, route, body):
    check_answer(*post(client, route, body))


# ---------------------------------------------------------------------------- seeded mutations

_FIELDS = ("model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed",
           "stop", "presence_penalty", "frequency_penalty", "n", "logit_bias", "user", "top_k", "min_p",
           "repeat_penalty", "repeat_last_n", "ignore_eos", "logprobs", "top_logprobs", "response_format", "tools",
           "echo", "suffix", "messages", "prompt")
_MESSAGE_FIELDS = ("role", "content", "name")


def _valid(rng: random.Random) -> tuple[str, dict]:
    body = {"max_tokens": rng.choice([1, 2, 4]), "temperature": rng.choice([0, 0.7]), "stream": rng.random() < 0.3}
    if rng.random() < 0.5:
        return CHAT, {**body, "messages": [{"role": "system", "content": "Be brief."}, *USER]}
    return COMPLETIONS, {**body, "prompt": rng.choice(["Once upon", [1, 5, 9]])}


def mutate_request(rng: random.Random) -> tuple[str, bytes, str]:
    """A route, a request body and what was done to a valid one."""
    route, body = _valid(rng)
    roll = rng.random()
    if roll < 0.6:
        for _ in range(rng.choice([1, 1, 2, 3])):
            key = rng.choice(_FIELDS)
            body[key] = hostile_value(rng, body.get(key))
        what = "fields " + ", ".join(f"{k}={str(v)[:30]!r}" for k, v in body.items())
    elif roll < 0.8 and "messages" in body:
        message = rng.choice(body["messages"])
        key = rng.choice(_MESSAGE_FIELDS)
        message[key] = rng.choice([hostile_value(rng, message.get(key)),
                                   [{"type": "text", "text": hostile_value(rng)}], [{"type": hostile_value(rng)}]])
        what = f"message {key} = {str(message[key])[:40]!r}"
    else:
        raw = json.dumps(body).encode()
        cut = rng.randrange(len(raw))
        raw, what = rng.choice([(raw[:cut], f"cut at {cut}"),
                                (raw[:cut] + bytes([rng.choice([0x80, 0xff, 0xc3, 0x00])]) + raw[cut + 1:],
                                 f"byte {cut}"),
                                (b"[" + raw + b"]", "in an array"),
                                (raw.replace(b'"', b"'", 2), "quotes")])
        return route, raw, what
    return route, json.dumps(body).encode(), what


def test_mutated_requests_get_clean_answers(client):
    print(f"server fuzz seed {SEED} (GGUFLM_FUZZ_SEED={SEED} replays it)")
    rng = random.Random(SEED)
    started, kinds = time.monotonic(), {}
    for i in range(MUTANTS):
        if i >= MUTANTS // 3 and time.monotonic() - started > SECONDS:
            break
        route, body, what = mutate_request(rng)
        try:
            kind = check_answer(*post(client, route, body))
        except AssertionError as e:
            raise AssertionError(f"seed {SEED}, request {i} to {route} ({what}): {e}") from None
        kinds[kind] = kinds.get(kind, 0) + 1
    assert kinds.get("error", 0) > 0 and kinds.get("ok", 0) + kinds.get("streamed", 0) > 0, kinds
    assert client.get("/health").status_code == 200  # and the server goes on


def _stops_reference(stops, pieces):
    """Stop strings the plain way (every proper prefix of every stop tried against the held text)."""
    held, out = "", []
    for text in pieces:
        held += text
        hits = [held.find(s) for s in stops if s in held]
        if hits:
            out.append((held[:min(hits)], True))
            return out
        keep = max((k for s in stops for k in range(1, len(s)) if held.endswith(s[:k])), default=0)
        out.append((held[:len(held) - keep], False))
        held = held[len(held) - keep:]
    return out


def test_stop_strings_agree_with_the_plain_algorithm():
    from gguflm.stop_strings import StopStrings

    rng = random.Random(7)
    for _ in range(3000):
        stops = ["".join(rng.choice("ab") for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 3))]
        pieces = ["".join(rng.choice("abc") for _ in range(rng.randint(0, 3))) for _ in range(rng.randint(1, 8))]
        s = StopStrings(stops)
        got = []
        for text in pieces:
            got.append(s.feed(text))
            if got[-1][1]:
                break
        assert got == _stops_reference(stops, pieces), (stops, pieces)


def test_a_long_stop_string_is_held_back_and_hit_like_a_short_one():
    from gguflm.stop_strings import StopStrings

    stop = "ab" * 500_000  # a 1 MB stop string: each piece costs its own length, not the stop's
    s = StopStrings([stop, "zz"])
    assert s.feed("xxab") == ("xx", False)  # "ab" could start the long stop: held
    for _ in range(20_000):
        assert s.feed("ab") == ("", False)
    assert s.feed("c") == ("ab" * 20_001 + "c", False)  # the long prefix never became the stop
    assert StopStrings([stop]).feed("abc") == ("abc", False)
