"""How much a quantized KV cache changes a model's predictions: KL divergence and top-1 agreement of
each cache type's next-token distributions against an f16 cache, teacher-forced over a text.

    python scripts/kv_cache_accuracy.py MODEL.gguf [--tokens 512] [--types q8_0,q4_0] [--device cpu]

Every position is decoded one token at a time through the cache (as generation reads it), for the
reference cache (f16) and each quantized type, K and V alike. Prints a markdown table.
"""

import argparse

import torch

import gguflm

TEXT = (
    "The old lighthouse stood at the end of a narrow spit of rock, and for as long as anyone in the village "
    "could remember it had warned ships away from the reef that lay just beneath the water. Its keeper was a "
    "quiet woman who climbed the spiral stairs every evening to trim the wick and polish the great lens. In "
    "the winter, when storms came in from the west, she would sit up through the night and watch the beam "
    "sweep across the waves, counting the seconds between each flash. Children from the village sometimes "
    "walked out along the rocks to visit her. She told them about the ships she had seen, the whales that "
    "passed in the spring, and the year the ice had frozen the harbour solid. When they asked whether she was "
    "ever lonely, she laughed and said that the sea was never the same two days in a row, and that a person "
    "who paid attention to it would never run out of company. Years later, when the light was replaced by an "
    "automatic beacon, the village held a small celebration in her honour. The mayor gave a speech, the "
    "school choir sang, and the fishermen presented her with a model of the lighthouse carved from driftwood. "
    "She kept it on her windowsill, where she could see the real tower across the bay, still turning its "
    "light through the dark as it always had. "
)


def decode_logits(model, ids: list[int], kind: str) -> torch.Tensor:
    """Logits (len(ids) - 1, n_vocab) of every next token, each position decoded through a `kind` cache."""
    backend = model.backend
    cache = backend.new_cache(len(ids), kind, kind)
    rows = [backend.prefill(ids[:1], cache)[-1]]
    rows += [backend.decode(t, cache) for t in ids[1:-1]]
    return torch.stack(rows).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--types", default="q8_0,q4_0")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model = gguflm.load(args.model, device=args.device)
    text = TEXT * (1 + 4 * args.tokens // len(TEXT))
    ids = model.tokenizer.encode(text)[: args.tokens]
    ref = decode_logits(model, ids, "f16")
    ref_logp = ref.log_softmax(-1)
    print(f"{args.model}: {len(ids)} tokens, reference cache f16 (K and V)\n")
    print("| cache type (K and V) | mean KL vs f16 | max KL | top-1 agreement |")
    print("|---|---:|---:|---:|")
    for kind in args.types.split(","):
        logp = decode_logits(model, ids, kind).log_softmax(-1)
        kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1)  # KL(f16 || kind) per position
        agree = (logp.argmax(-1) == ref_logp.argmax(-1)).float().mean()
        print(f"| {kind} | {kl.mean():.5f} | {kl.max():.4f} | {100 * agree:.1f}% |")


if __name__ == "__main__":
    main()
