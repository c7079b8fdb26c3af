"""The captured step's logic (feedback, ring-buffer history, in-step sampling) run eagerly on the CPU."""

import pytest

import gguflm
import torch

from gguflm.engine import Engine
from gguflm.sampling import SamplerTensors, SamplingParams, sample
from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf
from reference_loop import greedy_ids

PROMPT = [1, 300, 17, 42, 99, 7, 260]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    spec = SyntheticSpec(qtype="Q8_0", n_vocab=320, seed=9)
    return gguflm.load(write_synthetic_gguf(tmp_path_factory.mktemp("g") / "m.gguf", spec), device="cpu")


def graph_engine(model, ctx):
    """An engine taking the graph path, with the body run eagerly (no CUDA here)."""
    return Engine(model.backend, ctx=ctx, graphs=True, capture=False)


@pytest.mark.parametrize("sampling", [
    SamplingParams.greedy_params(),
    SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.5, repeat_last_n=4, seed=7),
    SamplingParams(temperature=0.0, repeat_penalty=2.0, repeat_last_n=3),  # greedy with a penalty: in the ring
])
def test_graph_body_gives_the_eager_tokens(model, sampling):
    eager, graphed = model.new_engine(ctx=64), graph_engine(model, ctx=64)
    for prompt in (PROMPT, PROMPT + [5, 6, 7]):  # a second turn re-copies the inputs
        expect = list(eager.generate_ids(prompt, 14, sampling, stop_ids=()))
        assert list(graphed.generate_ids(prompt, 14, sampling, stop_ids=())) == expect
        assert graphed.tokens == eager.tokens and graphed.cache.length == len(graphed.tokens)
    assert graphed.captured == 1


def test_graph_path_stops_at_the_context_end(model):
    engine = graph_engine(model, ctx=12)
    out = list(engine.generate_ids(PROMPT, 20, SamplingParams.greedy_params(), stop_ids=()))
    assert engine.stats.last.finish_reason == "context"
    assert len(engine.tokens) == 12 and len(out) == 12 - len(PROMPT) + 1
    assert out == greedy_ids(model.backend, PROMPT, len(out))


def test_interrupt_while_a_step_is_in_flight(model, monkeypatch):
    engine = graph_engine(model, ctx=64)
    greedy = SamplingParams.greedy_params()
    list(engine.generate_ids(PROMPT, 3, greedy, stop_ids=()))
    graph = next(iter(engine._graphs.graphs.values()))
    real, calls = graph.result, []

    def result():
        calls.append(1)
        if len(calls) == 4:  # Ctrl-C while waiting for a token; that step has written its row already
            raise KeyboardInterrupt
        return real()

    monkeypatch.setattr(graph, "result", result)
    got = []
    with pytest.raises(KeyboardInterrupt):
        for t in engine.generate_ids(PROMPT, 20, greedy, stop_ids=()):
            got.append(t)
    monkeypatch.undo()
    assert engine.tokens == PROMPT + got[:-1] and engine.cache.length == len(engine.tokens)
    follow = PROMPT + got + [11]
    assert list(engine.generate_ids(follow, 6, greedy, stop_ids=())) == greedy_ids(model.backend, follow, 6)


def sampler_is_graph_safe(fn=sample) -> bool:
    """Whether a sampler runs without reading a device value on the host (which capture forbids).

    Runs it on meta tensors, where any such read (`.item()`, indexing by a 0-d tensor) raises.
    """
    meta = torch.device("meta")
    try:
        fn(torch.empty(64, device=meta), SamplerTensors.from_params(SamplingParams(), meta),
           torch.empty(4, dtype=torch.long, device=meta), None)
    except RuntimeError:
        return False
    return True


def test_graph_safety_check_spots_host_reads():
    def reads_host(logits, t, history, gen):
        return logits.argmax().reshape(1)[int(t.top_k) * 0 :]  # int() of a device value

    def stays_on_device(logits, t, history, gen):
        return logits.argmax().reshape(1)

    assert not sampler_is_graph_safe(reads_host)
    assert sampler_is_graph_safe(stays_on_device)
    assert sampler_is_graph_safe()  # the real sampler: sampled decoding is captured too


def test_a_failed_capture_warns_once_and_decodes_eagerly(model, monkeypatch):
    import gguflm.cuda_graph as cg

    def broken(*args, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")

    engine = graph_engine(model, ctx=64)
    monkeypatch.setattr(cg, "DecodeGraph", broken)
    greedy = SamplingParams.greedy_params()
    with pytest.warns(UserWarning, match="CUDA graph capture failed"):
        first = list(engine.generate_ids(PROMPT, 6, greedy, stop_ids=()))
    assert first == greedy_ids(model.backend, PROMPT, 6)
    assert engine._graphs.failed and not engine._graphs.graphs
