"""Step 3 of scripts/gpu_check.py: the Triton backend against the reference backend, on the same device.

For each model: greedy ids through the engine with CUDA graphs, without them, and on the reference
backend; max |dlogit| of prefill and of decode steps along the reference's own sequence; a seeded
sampled run twice (the same ids each time), with graphs and without.
"""

from __future__ import annotations

from pathlib import Path

from gpu_check_report import Context, Step, free_memory

TOKENS, TOKENS_DRY = 32, 2
MAX_REL_LOGIT_ERR = 0.05  # max |dlogit| / std of the reference logits: fp16 activations against fp32
SAMPLED = dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1, seed=1234)
DRY_SPEC = dict(qtype="Q8_0", n_layers=1, dim=64, ffn_dim=64, n_vocab=128, seed=5)
TESTDATA_MODELS = (("stories260K", "models/stories260K.gguf"),
                   ("SmolLM2-135M-Instruct Q4_1", "models/SmolLM2-135M-Instruct.Q4_1.gguf"))


def correctness(s: Step, ctx: Context) -> None:
    from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf
    from gguflm.synthetic.shapes import synthetic_model

    dev = ctx.device()
    if ctx.dry:  # the interpreter takes about 0.1 s a kernel launch: one small layer
        path = write_synthetic_gguf(ctx.workdir / "dry-correctness.gguf", SyntheticSpec(**DRY_SPEC))
        models = [("synthetic 1-layer Q8_0", path)]
    else:
        models = [("synthetic tiny Q8_0", synthetic_model("tiny", ctx.workdir, "Q8_0"))]
        for name, rel in TESTDATA_MODELS:
            path = ctx.args.testdata / rel if ctx.args.testdata else None
            if path is not None and path.exists():
                models.append((name, path))
            else:
                s.notes.append(f"{name}: not in the test data ({ctx.args.testdata or 'no test data folder found'})")
    rows = []
    for name, path in models:
        if ctx.left() < 0:
            s.trimmed(f"{name} not compared")
            continue
        row = compare(name, path, dev, TOKENS_DRY if ctx.dry else TOKENS, s)
        if row is not None:
            rows.append(row)
    s.data["rows"] = rows
    s.markdown += markdown(rows)
    s.summary = "; ".join(f"{r['model']}: greedy {'=' if r['eager_eq_ref'] else '!='} reference, "
                          f"max |dlogit| {r['max_abs_dlogit']:.2g}" for r in rows) or "no model compared"


def compare(name: str, path: Path, dev, n: int, s: Step) -> dict | None:
    """One model's row; what is wrong goes to s.problem, a model this build cannot run to s.notes."""
    import torch

    import gguflm
    from gguflm.engine import Engine
    from gguflm.errors import GGUFLMError
    from gguflm.sampling import GREEDY, SamplingParams

    try:
        ref = gguflm.load(path, device=dev, backend="reference")
        tri = gguflm.load(path, device=dev, backend="triton")
    except GGUFLMError as e:
        s.notes.append(f"{name}: not run, {e}")
        return None
    prompt = ref.tokenizer.encode("Once upon a time") if ref.has_tokenizer else [1, 17, 42, 99, 7]
    ctx_len = len(prompt) + n + 8

    def ids(backend, sampling=GREEDY, graphs=False, engine=None):
        engine = engine or Engine(backend, ctx=ctx_len, graphs=graphs, capture=dev.type == "cuda")
        engine.reset()
        return list(engine.generate_ids(prompt, n, sampling, stop_ids=())), engine

    ref_ids, _ = ids(ref.backend)
    graph_ids, graph_engine = ids(tri.backend, graphs=True)
    eager_ids, eager_engine = ids(tri.backend)

    seq = prompt + ref_ids[:-1]  # the reference's own sequence: every position's logits compared
    with torch.inference_mode():
        want = ref.logits(seq)  # (T, n_vocab)
        prefill = tri.logits(seq)
        cache = tri.backend.new_cache(len(seq))
        tri.backend.prefill(prompt, cache)
        decoded = torch.stack([tri.backend.decode(t, cache) for t in seq[len(prompt):]])  # rows len(prompt)..
    err_prefill = float((prefill - want).abs().max())
    err_decode = float((decoded - want[len(prompt):]).abs().max()) if len(decoded) else 0.0
    err = max(err_prefill, err_decode)
    std = float(want.std())
    top2 = want[len(prompt) - 1:].topk(2, dim=-1).values  # the reference's margin at each generated token
    margins = (top2[:, 0] - top2[:, 1]).tolist()

    sampling = SamplingParams(**SAMPLED)
    twice = {}
    for label, engine in (("graph", graph_engine), ("eager", eager_engine)):
        first, _ = ids(tri.backend, sampling, engine=engine)
        second, _ = ids(tri.backend, sampling, engine=engine)
        twice[label] = (first == second, first)

    row = dict(model=name, file=path.name, tokens=n, prompt_tokens=len(prompt), graph_eq_ref=graph_ids == ref_ids,
               eager_eq_ref=eager_ids == ref_ids, graph_eq_eager=graph_ids == eager_ids,
               max_abs_dlogit_prefill=err_prefill, max_abs_dlogit_decode=err_decode, max_abs_dlogit=err,
               logit_std=std, seeded_twice_same_graph=twice["graph"][0], seeded_twice_same_eager=twice["eager"][0],
               sampled_graph_eq_eager=twice["graph"][1] == twice["eager"][1], ref_ids=ref_ids, eager_ids=eager_ids,
               graph_ids=graph_ids)
    _judge(row, margins, s)
    del ref, tri, graph_engine, eager_engine
    free_memory(dev)
    return row


def _judge(row: dict, margins: list[float], s: Step) -> None:
    """Problems: graphs changing the ids, a logit error past the tolerance, a divergence that is no close call."""
    name, err = row["model"], row["max_abs_dlogit"]
    if not row["graph_eq_eager"]:
        s.problem(f"{name}: greedy ids with CUDA graphs differ from eager decoding (the same kernels)")
    if not err <= MAX_REL_LOGIT_ERR * row["logit_std"]:
        s.problem(f"{name}: max |dlogit| {err:.3g} is over {MAX_REL_LOGIT_ERR} x the logits' std {row['logit_std']:.3g}")
    for label in ("graph", "eager"):
        if not row[f"seeded_twice_same_{label}"]:
            s.problem(f"{name}: a seeded sampled run ({label}) gave different ids the second time")
    got, want = row["eager_ids"], row["ref_ids"]
    first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
    row["first_divergence"] = first
    if first is not None:
        margin = margins[first]
        row["margin_at_divergence"] = margin
        what = f"{name}: greedy ids part from the reference's at token {first}, where its top-2 margin is {margin:.3g}"
        if margin > 2 * err:
            s.problem(f"{what}, more than twice the max |dlogit| {err:.3g}: not a close call")
        else:
            s.notes.append(f"{what}, within twice the max |dlogit| {err:.3g}: a close call")


def markdown(rows: list[dict]) -> list[str]:
    yes = {True: "yes", False: "**no**"}
    lines = ["| model | tokens | greedy: graph = ref | eager = ref | graph = eager | max abs dlogit prefill / decode "
             "| / std of logits | seeded sampling twice the same: graph / eager | sampled graph = eager |",
             "|---|---:|---|---|---|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['tokens']} | {yes[r['graph_eq_ref']]} | {yes[r['eager_eq_ref']]} "
                     f"| {yes[r['graph_eq_eager']]} | {r['max_abs_dlogit_prefill']:.2e} / {r['max_abs_dlogit_decode']:.2e} "
                     f"| {r['max_abs_dlogit'] / r['logit_std']:.1e} | {yes[r['seeded_twice_same_graph']]} / "
                     f"{yes[r['seeded_twice_same_eager']]} | {'yes' if r['sampled_graph_eq_eager'] else 'no'} |")
    return lines
