"""CUDA-graph decode against eager decode on the GPU (skipped without CUDA)."""

import pytest
import torch

import gguflm
from gguflm.sampling import SamplingParams
from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf
from reference_loop import greedy_ids

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")]

GREEDY = SamplingParams.greedy_params()
PROMPT = [1, 17, 42, 99, 7, 200, 31]
SPECS = {
    "llama": SyntheticSpec(qtype="Q8_0", n_vocab=512, dim=256, n_heads=8, n_kv_heads=2, ffn_dim=512, n_layers=3),
    "qwen3": SyntheticSpec(arch="qwen3", qtype="Q8_0", n_vocab=512, dim=256, n_heads=8,
                           n_kv_heads=4, ffn_dim=512, n_layers=2, seed=1),
    "qwen2_f16": SyntheticSpec(arch="qwen2", qtype="F16", n_vocab=512, dim=128, seed=2),
}


@pytest.fixture(scope="module", params=list(SPECS))
def model(request, tmp_path_factory):
    path = write_synthetic_gguf(tmp_path_factory.mktemp("graph") / "m.gguf", SPECS[request.param])
    return gguflm.load(path, device="cuda")


def run(engine, prompt, n, sampling=GREEDY):
    return list(engine.generate_ids(prompt, n, sampling, stop_ids=()))


def test_graph_replay_gives_the_eager_greedy_tokens(model):
    assert type(model.backend).__name__ == "TritonBackend"
    graphed, eager = model.new_engine(ctx=256), model.new_engine(ctx=256, graphs=False)
    assert graphed.graphs and not eager.graphs
    a, b = run(graphed, PROMPT, 40), run(eager, PROMPT, 40)
    assert a == b
    # a second turn reuses the cache and the captured graph
    follow = PROMPT + a + [5, 6]
    assert run(graphed, follow, 20) == run(eager, follow, 20)
    assert graphed.captured == 1
    n = len(graphed.tokens)
    assert graphed.tokens == eager.tokens
    torch.testing.assert_close(graphed.cache.k.data[:, :, :n], eager.cache.k.data[:, :, :n], atol=0, rtol=0)


def test_graph_greedy_matches_reference_backend(model):
    ref = gguflm.load(model.file.path, device="cpu", backend="reference")
    got = run(model.new_engine(ctx=128), PROMPT, 8)
    assert got == greedy_ids(ref.backend, PROMPT, 8)


def test_seeded_sampling_in_the_graph_is_reproducible_and_reconfigurable(model):
    engine = model.new_engine(ctx=512)
    p = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.2, seed=3)
    first = run(engine, PROMPT, 30, p)
    engine.reset()
    assert run(engine, PROMPT, 30, p) == first
    engine.reset()
    assert run(engine, PROMPT, 30, p.with_(seed=4)) != first
    engine.reset()
    assert engine.captured == 1  # a new seed is copied in: no re-capture
    hot = run(engine, PROMPT, 30, p.with_(top_k=1))  # top-k 1 is greedy with the penalty
    assert engine.captured == 2  # top_k shapes the captured code (topk of k): its own graph
    eager = model.new_engine(ctx=512, graphs=False)
    assert hot == run(eager, PROMPT, 30, p.with_(top_k=1))


def test_interrupt_during_graph_decode_keeps_the_cache_consistent(model, monkeypatch):
    engine = model.new_engine(ctx=256)
    run(engine, PROMPT, 4)  # capture
    graph = next(iter(engine._graphs.graphs.values()))
    real, calls = graph.result, []

    def result():
        calls.append(1)
        if len(calls) == 5:  # Ctrl-C while waiting for a token, the next step still in flight
            raise KeyboardInterrupt
        return real()

    monkeypatch.setattr(graph, "result", result)
    got = []
    with pytest.raises(KeyboardInterrupt):
        for t in engine.generate_ids(PROMPT, 20, GREEDY, stop_ids=()):
            got.append(t)
    monkeypatch.undo()
    assert engine.tokens == PROMPT + got[:-1] and engine.cache.length == len(engine.tokens)
    follow = PROMPT + got
    assert run(engine, follow, 8) == run(model.new_engine(ctx=256, graphs=False), follow, 8)


def test_bench_on_the_gpu_reports_a_graph_speedup(model):
    from gguflm.bench import run_bench

    report = run_bench(model, "synthetic", contexts=[32, 128], prefill=[16, 64], steps=8, copy_bytes=2**26)
    assert report.copy_bandwidth_gb_s > 0 and report.peak_memory_bytes > 0
    for d in report.decode:
        assert d.tok_s > 0 and d.tok_s_eager > 0 and d.graph_speedup is not None and d.graph_speedup > 0
        assert 0 < d.fraction_of_copy_bw
    assert all(p.tok_s > 0 for p in report.prefill)


@pytest.mark.parametrize("kind", [None, "q8_0"])
def test_batched_step_graphs_per_bucket_give_each_sequence_its_lone_tokens(model, kind):
    """Rows of a captured batched step (buckets 2 and 4 here) are the tokens each prompt gets alone."""
    if kind and model.config.head_dim % 32:
        pytest.skip("a q8_0 cache needs a head size that is a multiple of 32")
    prompts = [PROMPT, PROMPT[:3] + [250], [1, 400, 401, 402, 403], [1, 9]]
    engine = model.new_engine(ctx=128, slots=4, cache_type_k=kind, cache_type_v=kind)
    out = {}
    for step in range(12):
        if step in (0, 3):  # two prompts, then two more join: buckets 2, then 4
            for i in ((0, 1) if step == 0 else (2, 3)):
                out[i] = [int(engine.start(i, prompts[i]).argmax())]
        live = sorted(out)
        logits = engine.step(live, [out[i][-1] for i in live])
        for b, i in enumerate(live):
            out[i].append(int(logits[b].argmax()))
    assert sorted(engine._batch_graphs.graphs) == [2, 4] and not engine._batch_graphs.failed
    for i, p in enumerate(prompts):
        lone = model.new_engine(ctx=128, cache_type_k=kind, cache_type_v=kind)
        assert out[i] == run(lone, p, len(out[i]))
