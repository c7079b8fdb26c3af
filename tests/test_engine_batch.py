"""The batched decode step (serving) on the CPU reference backend: each row is bit for bit what the
one-sequence engine computes for it, whoever shares the step; slots keep their prompts; buckets pad."""

import pytest
import torch

import gguflm
from gguflm.cuda_graph import buckets
from gguflm.engine import Engine
from gguflm.errors import GGUFLMError
from gguflm.sampling import Sampler, SamplingParams
from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf

GREEDY = SamplingParams.greedy_params()
PROMPTS = [[1, 300, 17, 42], [1, 5, 6, 7, 8, 9, 10, 11, 12], [1, 99], [1, 260, 261, 262, 263, 20, 21]]


@pytest.fixture(scope="module", params=["llama-Q8_0", "qwen2-F32", "qwen3-Q8_0"])
def model(request, tmp_path_factory):
    arch, qtype = request.param.split("-")
    spec = SyntheticSpec(arch=arch, qtype=qtype, n_vocab=320, dim=64, n_heads=2, n_kv_heads=1, seed=4)
    return gguflm.load(write_synthetic_gguf(tmp_path_factory.mktemp("b") / "m.gguf", spec), device="cpu")


def alone(model, prompt, n, sampling=GREEDY, **kw):
    return list(model.new_engine(ctx=64, **kw).generate_ids(prompt, n, sampling, stop_ids=()))


def run_batch(engine, prompts, n, samplings=None, starts=None):
    """Each prompt in its own slot, joining at step starts[i], n tokens each, sampled per row."""
    samplings = samplings or [GREEDY] * len(prompts)
    starts = starts or [0] * len(prompts)
    samplers = [Sampler.new(p, engine.device) for p in samplings]
    out = [[] for _ in prompts]
    step = 0
    while any(len(o) < n for o in out):
        for i, p in enumerate(prompts):
            if starts[i] == step:
                out[i].append(samplers[i].pick(engine.start(i, p), engine.slot_tokens[i]))
        live = [i for i, o in enumerate(out) if 0 < len(o) < n]
        if live:
            logits = engine.step(live, [out[i][-1] for i in live])
            for b, i in enumerate(live):
                out[i].append(samplers[i].pick(logits[b], engine.slot_tokens[i]))
        step += 1
    return out


def test_rows_of_a_batch_equal_each_sequence_alone(model):
    engine = model.new_engine(ctx=64, slots=4)
    got = run_batch(engine, PROMPTS, 10, starts=[0, 0, 3, 5])  # two join later: the batch changes size
    assert got == [alone(model, p, 10) for p in PROMPTS]
    for i, p in enumerate(PROMPTS):
        assert engine.slot_tokens[i] == p + got[i][:-1] and engine.pool.slots[i].length == len(p) + 9


def test_seeded_rows_draw_what_the_sequence_alone_draws(model):
    samplings = [SamplingParams(temperature=1.0, top_k=0, min_p=0.0, seed=s) for s in (1, 2, 3)]
    samplings[1] = samplings[1].with_(repeat_penalty=1.3, frequency_penalty=0.5, presence_penalty=0.5)
    engine = model.new_engine(ctx=64, slots=3)
    got = run_batch(engine, PROMPTS[:3], 8, samplings)
    assert got == [alone(model, p, 8, s) for p, s in zip(PROMPTS[:3], samplings)]


@pytest.mark.parametrize("kind", ["q8_0", "q4_0"])
def test_quantized_cache_rows_equal_alone(tmp_path, kind):
    spec = SyntheticSpec(qtype="Q8_0", n_vocab=320, dim=64, n_heads=2, n_kv_heads=1, seed=6)  # head size 32
    model = gguflm.load(write_synthetic_gguf(tmp_path / "m.gguf", spec), device="cpu")
    engine = model.new_engine(ctx=64, slots=3, cache_type_k=kind, cache_type_v=kind)
    got = run_batch(engine, PROMPTS[:3], 6)
    assert got == [alone(model, p, 6, cache_type_k=kind, cache_type_v=kind) for p in PROMPTS[:3]]


def test_a_slot_keeps_its_prompt_for_the_next_request(model):
    engine = model.new_engine(ctx=64, slots=2)
    first = run_batch(engine, [PROMPTS[1]], 4)[0]
    follow = PROMPTS[1] + first + [33]
    engine.start(0, follow)
    assert engine.stats.last.prefilled_tokens == 2  # only the unfed token and the new one


def test_bucketed_steps_pad_into_the_scratch_slot_only(model):
    """The graph path with capture off (as on a GPU, eagerly): 3 rows run in the bucket of 4."""
    engine = Engine(model.backend, ctx=64, graphs=True, capture=False, slots=5)
    engine.start(4, PROMPTS[3])  # a free slot holding a cached prompt must not be touched by padding
    held = engine.pool.k.data[:, 4].clone()
    got = run_batch(engine, PROMPTS[:3], 7, starts=[0, 0, 2])
    assert got == [alone(model, p, 7) for p in PROMPTS[:3]]
    assert sorted(engine._batch_graphs.graphs) == [1, 2, 4]  # 2 rows, 3 padded to 4, the late one alone
    assert torch.equal(engine.pool.k.data[:, 4], held)
    assert engine.pool.n_slots == 6  # five slots and the scratch one


def test_buckets_cover_every_batch_size():
    assert buckets(1) == (1,) and buckets(8) == (1, 2, 4, 8) and buckets(6) == (1, 2, 4, 6)


def test_step_refuses_full_slots_and_repeated_ones(model):
    engine = model.new_engine(ctx=8, slots=2)
    engine.start(0, [1, 2, 3, 4, 5, 6, 7])
    engine.step([0], [9])
    with pytest.raises(GGUFLMError, match="full"):
        engine.step([0], [9])
    with pytest.raises(GGUFLMError, match="distinct"):
        engine.step([1, 1], [9, 9])
