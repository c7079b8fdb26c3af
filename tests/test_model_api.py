"""The Python API and the CLI generate through the same Engine; long prompts never expand the head."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import gguflm
from gguflm.cli.main import _register, app
from gguflm.engine import Engine
from gguflm.sampling import SamplingParams
from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf
from gguflm.synthetic.vocab import spm_tokenizer
from reference_loop import greedy_ids

_register()


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    spec = SyntheticSpec(qtype="Q8_0", n_vocab=320, n_ctx=8192, seed=4)
    return write_synthetic_gguf(tmp_path_factory.mktemp("api") / "m.gguf", spec, tokenizer=spm_tokenizer(320))


@pytest.fixture
def engine_calls(monkeypatch):
    """Every Engine.generate_ids call, wherever it comes from: (engine, prompt, the ids it yielded)."""
    calls = []
    real = Engine.generate_ids

    def spy(self, prompt, *args, **kwargs):
        yielded = []
        calls.append((self, list(prompt), yielded))
        for t in real(self, prompt, *args, **kwargs):
            yielded.append(t)
            yield t

    monkeypatch.setattr(Engine, "generate_ids", spy)
    return calls


def test_api_and_cli_give_the_same_greedy_ids_through_the_engine(path, engine_calls):
    model = gguflm.load(path, device="cpu")
    prompt = model.tokenizer.encode("once upon a time", add_special=True, parse_special=True)
    api_ids = model.generate(prompt, 12)
    assert len(engine_calls) == 1 and engine_calls[0][2] == api_ids
    assert api_ids == greedy_ids(model.backend, prompt, 12, stop_ids=model.tokenizer.eog_ids)

    result = CliRunner().invoke(app, ["run", "-m", str(path), "-p", "once upon a time", "-n", "12", "--temp", "0",
                                      "-q", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert len(engine_calls) == 2
    cli_engine, cli_prompt, cli_ids = engine_calls[1]
    assert isinstance(cli_engine, Engine) and isinstance(engine_calls[0][0], Engine)
    assert cli_prompt == prompt and cli_ids == api_ids


def test_api_defaults_to_greedy_in_generate_and_stream(path):
    model = gguflm.load(path, device="cpu")
    prompt = [1, 300, 17, 42]
    greedy = model.generate(prompt, 8)
    assert list(model.stream(prompt, 8)) == greedy  # the same default, the engine's prefix reused
    sampled = model.generate(prompt, 8, SamplingParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=1))
    assert sampled != greedy


def test_one_generation_at_a_time_per_engine(path):
    model = gguflm.load(path, device="cpu")
    first = model.stream([1, 300, 17], 4)
    next(first)
    with pytest.raises(gguflm.GGUFLMError, match="already generating"):
        next(model.stream([1, 300, 17], 4))
    first.close()
    assert len(model.generate([1, 300, 17], 4)) == 4


def test_a_4096_token_prompt_computes_one_row_of_head_logits_per_chunk(path, monkeypatch):
    import gguflm.engine as engine_module

    model = gguflm.load(path, device="cpu")
    rows = []
    real_head = model.backend.head
    monkeypatch.setattr(model.backend, "head", lambda h: rows.append(h.shape[0]) or real_head(h))
    prompt = [3 + (7 * i) % 300 for i in range(4096)]
    out = model.generate(prompt, 3, stop_ids=())
    assert len(out) == 3
    chunks = -(-4096 // engine_module.PREFILL_CHUNK)
    assert rows == [1] * (chunks + 2)  # one row per prefill chunk, then one per decode step
    assert model._engine.ctx >= 4096 + 3
