"""The engine on the CPU reference backend: same tokens as the plain prefill+decode loop, stops,
interrupts, context."""

import pytest
import torch

import gguflm
from gguflm.engine import Engine, choose_context
from gguflm.errors import GGUFLMError
from gguflm.sampling import SamplingParams
from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf
from gguflm.synthetic.vocab import spm_tokenizer
from reference_loop import greedy_ids

GREEDY = SamplingParams.greedy_params()
PROMPT = [1, 300, 17, 42, 99, 7, 260]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    spec = SyntheticSpec(qtype="Q8_0", n_vocab=320, n_ctx=8192, seed=5)
    path = write_synthetic_gguf(tmp_path_factory.mktemp("engine") / "m.gguf", spec, tokenizer=spm_tokenizer(320))
    return gguflm.load(path, device="cpu")


def greedy(model, prompt, n):
    return greedy_ids(model.backend, prompt, n)


def ids(engine, prompt, n, **kw):
    return list(engine.generate_ids(prompt, n, kw.pop("sampling", GREEDY), stop_ids=kw.pop("stop_ids", ()), **kw))


def assert_cache_holds(engine, model):
    """engine.tokens is exactly what the cache holds: its K rows equal a fresh prefill of those tokens."""
    n = len(engine.tokens)
    assert engine.cache.length == n
    fresh = model.backend.new_cache(n + 1)
    model.backend.prefill(engine.tokens, fresh)
    torch.testing.assert_close(engine.cache.k.data[:, :, :n], fresh.k.data[:, :, :n], atol=1e-4, rtol=1e-4)


def test_greedy_matches_the_plain_loop_and_reuses_prefix(model):
    engine = model.new_engine(ctx=64)
    assert not engine.graphs
    out = ids(engine, PROMPT, 12)
    assert out == greedy(model, PROMPT, 12)
    assert engine.stats.last.finish_reason == "length" and engine.stats.last.prefilled_tokens == len(PROMPT)
    assert engine.tokens == PROMPT + out[:-1]  # the last sampled token is not fed yet
    follow = PROMPT + out + [33]
    again = ids(engine, follow, 5)
    assert engine.stats.last.prefilled_tokens == 2  # only the unfed token and the new one
    assert again == greedy(model, follow, 5)
    assert_cache_holds(engine, model)


def test_stops_on_stop_id_and_eog(model, monkeypatch):
    engine = model.new_engine(ctx=64)
    out = ids(engine, PROMPT, 12)
    stop = out[4]
    first = out.index(stop)
    assert ids(engine, PROMPT, 12, stop_ids={stop}) == out[: first + 1]
    assert engine.stats.last.finish_reason == "eog"
    assert model.tokenizer.eog_ids == frozenset({2})
    monkeypatch.setattr(model.tokenizer.vocab, "eog_ids", frozenset({stop}))  # as if the model emitted </s>
    assert list(engine.generate_ids(PROMPT, 12, GREEDY)) == out[: first + 1]  # stop_ids default: the eog set
    "".join(engine.generate(PROMPT, 12, GREEDY))
    assert engine.stats.last.finish_reason == "eog" and engine.stats.last.generated_tokens == first + 1
    assert engine.tokens == PROMPT + out[:first]  # the eog token itself is never fed


def test_stop_strings_cut_the_text(model):
    engine = model.new_engine(ctx=64)
    text = "".join(engine.generate("hello world", 16, GREEDY))
    assert len(text) > 6
    stop = text[3:6]
    cut = "".join(engine.generate("hello world", 16, GREEDY, stop_strings=[stop]))
    assert cut == text[: text.index(stop)]
    assert engine.stats.last.finish_reason == "stop"
    assert_cache_holds(engine, model)


class Interrupt:
    """Wrap backend.decode to raise KeyboardInterrupt on call `at`, before or after the real step."""

    def __init__(self, backend, at, after):
        self.real, self.at, self.after, self.calls = backend.decode, at, after, 0

    def __call__(self, token, cache):
        self.calls += 1
        if self.calls == self.at and not self.after:
            raise KeyboardInterrupt
        logits = self.real(token, cache)
        if self.calls == self.at:
            raise KeyboardInterrupt  # the cache row is written but the engine never heard back
        return logits


@pytest.mark.parametrize("after", [False, True])
def test_interrupt_inside_a_step_leaves_a_usable_engine(model, monkeypatch, after):
    engine = model.new_engine(ctx=64)
    monkeypatch.setattr(engine.backend, "decode", Interrupt(engine.backend, 4, after))
    got = []
    with pytest.raises(KeyboardInterrupt):
        for t in engine.generate_ids(PROMPT, 12, GREEDY, stop_ids=()):
            got.append(t)
    monkeypatch.undo()
    assert engine.stats.last.finish_reason == "interrupted"
    assert engine.cache.length == len(engine.tokens)
    assert got == greedy(model, PROMPT, 12)[: len(got)]
    assert engine.tokens == PROMPT + got[:-1]
    # continue: the cache is consistent with engine.tokens, so the next turn matches a fresh run
    follow = PROMPT + got
    assert ids(engine, follow, 6) == greedy(model, follow, 6)
    assert_cache_holds(engine, model)


def test_stopping_between_steps_then_continuing(model):
    engine = model.new_engine(ctx=64)
    stream = engine.generate_ids(PROMPT, 12, GREEDY, stop_ids=())
    got = [next(stream) for _ in range(3)]
    stream.close()  # what a consumer breaking out of its loop (or Ctrl-C between steps) does
    assert engine.tokens == PROMPT + got[:2]
    assert_cache_holds(engine, model)
    follow = PROMPT + got
    assert ids(engine, follow, 4) == greedy(model, follow, 4)


def test_seeded_sampling_is_reproducible(model):
    p = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.3, seed=11)
    a = ids(model.new_engine(ctx=64), PROMPT, 10, sampling=p)
    b = ids(model.new_engine(ctx=64), PROMPT, 10, sampling=p)
    assert a == b
    assert a != ids(model.new_engine(ctx=64), PROMPT, 10, sampling=p.with_(seed=12))


def test_context_choice_and_limits(model):
    ctx, message = choose_context(model.backend, None)
    assert ctx == 4096 and "capped at 4096" in message and "8192" in message
    assert choose_context(model.backend, 100) == (100, "")
    with pytest.raises(GGUFLMError, match="must be positive"):
        model.new_engine(ctx=0)
    engine = model.new_engine(ctx=16)
    with pytest.raises(GGUFLMError, match="the prompt has 16 tokens but the context holds 16"):
        ids(engine, list(range(3, 19)), 4)
    out = ids(engine, PROMPT, 50)
    assert engine.stats.last.finish_reason == "context"
    assert len(engine.tokens) == 16 and len(out) == 16 - len(PROMPT) + 1
    with pytest.raises(GGUFLMError, match="CUDA graphs need a CUDA device"):
        model.new_engine(ctx=16, graphs=True)
    with pytest.raises(GGUFLMError, match="CUDA graphs need a CUDA device"):
        Engine(model.backend, ctx=16, graphs=True)


def test_context_is_capped_by_free_gpu_memory(model, monkeypatch):
    """The CUDA branch of choose_context, with the free-memory query faked (no GPU needed)."""
    from types import SimpleNamespace

    cfg = model.config  # 2 layers, kv_dim 32: an fp16 cache takes 2 * 2 * 32 * 2 = 256 bytes per token
    fake = SimpleNamespace(cfg=cfg, device=torch.device("cuda"), cache_dtype=torch.float16)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1_000_000, 2_000_000))
    ctx, message = choose_context(fake, None)
    assert ctx == 3328  # 0.9 MB / 256 B = 3515 tokens, rounded down to a multiple of 256
    assert "capped at 3328 tokens by free GPU memory" in message and "8192" in message
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10**12, 2 * 10**12))
    assert choose_context(fake, None) == (cfg.n_ctx_train, "")
    assert choose_context(fake, 100_000) == (100_000, "")  # an explicit --ctx is taken as asked


def test_chunked_prefill_gives_the_same_tokens(model, monkeypatch):
    import gguflm.engine as engine_module

    monkeypatch.setattr(engine_module, "PREFILL_CHUNK", 3)  # 7 prompt tokens: chunks of 3, 3, 1
    engine = model.new_engine(ctx=64)
    assert ids(engine, PROMPT, 6) == greedy(model, PROMPT, 6)
    assert engine.stats.last.prefilled_tokens == len(PROMPT)
    assert_cache_holds(engine, model)


def test_a_cache_larger_than_free_memory_is_refused_before_allocating(model, monkeypatch):
    import gguflm.engine as engine_module

    monkeypatch.setattr(engine_module, "free_memory", lambda device: 10_000)
    with pytest.raises(GGUFLMError, match="a KV cache of 1 x 1000 tokens needs .* but 9.77 KiB of memory is free"):
        model.new_engine(ctx=1000)
