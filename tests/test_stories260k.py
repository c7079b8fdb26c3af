"""A real trained model: greedy decoding from BOS must match llama.cpp's 200 token ids exactly."""

import gguflm


def test_greedy_200_tokens_match_llama_cpp(stories260k):
    expected = [int(x) for x in (stories260k.parent / "stories260K.greedy200.ids").read_text().split()]
    model = gguflm.load(stories260k, device="cpu")
    assert model.config.n_layers == 5 and model.config.n_kv_heads == 4
    assert model.generate([1], len(expected)) == expected


def test_decode_extends_prefill_cache(stories260k):
    """Logits from one prefill equal prefill of a prefix followed by decode steps."""
    model = gguflm.load(stories260k, device="cpu")
    ids = [1, 403, 407, 261, 378, 432, 383]
    full = model.logits(ids)
    cache = model.backend.new_cache(32)
    step = model.backend.prefill(ids[:3], cache)
    assert (step - full[:3]).abs().max() < 1e-4
    for i, t in enumerate(ids[3:], start=3):
        assert (model.backend.decode(t, cache) - full[i]).abs().max() < 1e-4
    assert cache.length == len(ids)


def test_graph_safe_decode_step_matches_decode(stories260k):
    """decode_step (position as a tensor, whole masked cache) gives the logits decode gives."""
    import torch

    model = gguflm.load(stories260k, device="cpu")
    ids = [1, 403, 407, 261, 378]
    a, b = model.backend.new_cache(16), model.backend.new_cache(16)
    model.backend.prefill(ids[:2], a)
    model.backend.prefill(ids[:2], b)
    for t in ids[2:]:
        pos = torch.tensor([b.length])
        stepped = model.backend.decode_step(torch.tensor([t]), pos, b)
        b.length += 1
        assert (stepped - model.backend.decode(t, a)).abs().max() < 1e-5
    assert torch.allclose(a.k.data[:, :, : a.length], b.k.data[:, :, : b.length], atol=1e-5)


def test_prefill_last_is_the_last_row_of_prefill(stories260k):
    model = gguflm.load(stories260k, device="cpu")
    ids = [1, 403, 407, 261, 378]
    a, b = model.backend.new_cache(8), model.backend.new_cache(8)
    full = model.backend.prefill(ids, a)
    last = model.backend.prefill_last(ids, b)
    assert last.shape == (model.config.n_vocab,) and (last - full[-1]).abs().max() < 1e-5
    assert a.length == b.length == len(ids)
