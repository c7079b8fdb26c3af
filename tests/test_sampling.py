"""The sampler: llama.cpp's chain (penalties, top-k, top-p, min-p, temperature), seeded and sync-free."""

import pytest
import torch

from gguflm.errors import GGUFLMError
from gguflm.sampling import SamplerTensors, SamplingParams, apply_penalties, apply_repeat_penalty, sample

EMPTY = torch.tensor([-1])


def draw(logits, params, n=1, history=EMPTY, seed=0):
    gen = torch.Generator().manual_seed(seed)
    t = SamplerTensors.from_params(params, "cpu")
    return [int(sample(logits, t, history, gen)) for _ in range(n)]


def test_greedy_is_argmax():
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    assert draw(logits, SamplingParams.greedy_params(), 5) == [int(logits.argmax())] * 5


def test_seeded_draws_repeat_and_differ_across_seeds():
    logits = torch.zeros(50)  # uniform: many distinct draws possible
    p = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    assert draw(logits, p, 20, seed=3) == draw(logits, p, 20, seed=3)
    assert draw(logits, p, 20, seed=3) != draw(logits, p, 20, seed=4)


def test_unfiltered_draws_follow_softmax():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    p = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    counts = torch.bincount(torch.tensor(draw(logits, p, 4000)), minlength=4).float() / 4000
    assert (counts - torch.softmax(logits, 0)).abs().max() < 0.03


def test_temperature_sharpens():
    logits = torch.tensor([1.0, 0.0])
    base = SamplingParams(top_k=0, top_p=1.0, min_p=0.0)
    hot = sum(draw(logits, base.with_(temperature=2.0), 2000)) / 2000
    cold = sum(draw(logits, base.with_(temperature=0.25), 2000)) / 2000
    assert cold < 0.05 < hot  # token 1 is rarely drawn when cold


def test_top_k_top_p_min_p_restrict_support():
    logits = torch.tensor([3.0, 2.9, 2.8, 0.0, -1.0])
    base = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    assert set(draw(logits, base.with_(top_k=2), 500)) == {0, 1}
    assert set(draw(logits, base.with_(top_p=0.5), 500)) <= {0, 1}
    # min_p 0.5: tokens with p >= half of the top token's p survive: the first three
    assert set(draw(logits, base.with_(min_p=0.5), 500)) == {0, 1, 2}


def test_repeat_penalty_divides_positive_and_multiplies_negative_once():
    logits = torch.tensor([2.0, -2.0, 1.0])
    out = apply_repeat_penalty(logits, torch.tensor([0, 1, 0, -1]), torch.tensor(2.0))
    assert out.tolist() == [1.0, -4.0, 1.0]
    t = SamplerTensors.from_params(SamplingParams(repeat_penalty=2.0), "cpu")
    assert apply_penalties(logits, torch.tensor([0, 1, 0, -1]), t).tolist() == out.tolist()  # the others off


def test_frequency_counts_each_occurrence_and_presence_each_token():
    logits = torch.tensor([2.0, -2.0, 1.0, 0.5])
    t = SamplerTensors.from_params(SamplingParams(frequency_penalty=0.25, presence_penalty=0.5), "cpu")
    out = apply_penalties(logits, torch.tensor([0, 1, 0, 0, -1]), t)
    assert out.tolist() == [2.0 - 3 * 0.25 - 0.5, -2.0 - 0.25 - 0.5, 1.0, 0.5]
    assert SamplingParams(temperature=0.0, presence_penalty=0.1).penalty_window == 64
    assert not SamplingParams(temperature=0.0, frequency_penalty=0.1).argmax_only
    with pytest.raises(GGUFLMError):
        SamplingParams(presence_penalty=float("nan"))


def test_repeat_penalty_changes_greedy_choice():
    logits = torch.tensor([2.0, 1.5, 0.0])
    p = SamplingParams(temperature=0.0, repeat_penalty=2.0)
    assert draw(logits, p, history=torch.tensor([0])) == [1]


def test_parameters_update_in_place():
    t = SamplerTensors.from_params(SamplingParams(), "cpu")
    ptr = t.temperature.data_ptr()
    t.copy_from(SamplingParams(temperature=0.1, top_k=3))
    assert t.temperature.data_ptr() == ptr and float(t.temperature) == pytest.approx(0.1) and int(t.top_k) == 3


@pytest.mark.parametrize(
    "bad", [dict(top_p=0.0), dict(top_k=-1), dict(min_p=1.5), dict(repeat_penalty=0.0), dict(seed=2**64), dict(seed=-1)]
)
def test_bad_parameters_are_clear_errors(bad):
    with pytest.raises(GGUFLMError):
        SamplingParams(**bad)


def test_penalty_off_reads_no_history():
    """With repeat_penalty 1 the window is empty: no history ring is kept or scanned per token."""
    assert SamplingParams(repeat_penalty=1.0, repeat_last_n=64).penalty_window == 0
    assert SamplingParams(repeat_penalty=1.1, repeat_last_n=64).penalty_window == 64
    assert SamplingParams(temperature=0.0).argmax_only
    assert not SamplingParams(temperature=0.0, repeat_penalty=1.2).argmax_only


def test_fixed_top_k_ranks_only_the_candidates_and_keeps_the_distribution():
    """sample(top_k=k) ranks k candidates with topk; it must draw from the same distribution as the full sort."""
    logits = torch.randn(2000, generator=torch.Generator().manual_seed(5))
    p = SamplingParams(temperature=1.0, top_k=4, top_p=1.0, min_p=0.0)
    t = SamplerTensors.from_params(p, "cpu")
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    full = [int(sample(logits, t, EMPTY, gen_a)) for _ in range(3000)]
    fast = [int(sample(logits, t, EMPTY, gen_b, top_k=4)) for _ in range(3000)]
    top4 = logits.topk(4).indices.tolist()
    assert set(full) == set(fast) == set(top4)
    expected = torch.softmax(logits[top4], 0)
    for draws in (full, fast):
        freq = torch.tensor([draws.count(i) for i in top4], dtype=torch.float32) / len(draws)
        assert (freq - expected).abs().max() < 0.03
