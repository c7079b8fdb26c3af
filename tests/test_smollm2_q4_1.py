"""A real Q4_1 chat model (SmolLM2-135M-Instruct, 210 Q4_1 tensors and one Q8_0): the reference backend
reproduces the greedy ids of exact fp32 math on the file's dequantized weights, and the Triton
backend (interpreter on the CPU) agrees on a short prefix."""

import json

import pytest
import torch

import gguflm

MARGIN = 1e-3  # a departure from the recorded ids is allowed only at a step whose top-2 margin is below this


@pytest.fixture(scope="module")
def smollm2(testdata):
    return testdata / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def ref(smollm2):
    return json.loads(smollm2.with_name("SmolLM2-135M-Instruct.Q4_1.ref.json").read_text())


@pytest.fixture(scope="module")
def one_thread():
    """Intra-op threads wait on each other on a busy 2-core machine (20x slower); the results do not change."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model(smollm2, one_thread):
    return gguflm.load(smollm2, device="cpu", backend="reference")


def agree(got: list[int], case: dict) -> int:
    """How many leading ids equal the exact-math ids; fails if they part where the margin is not a near-tie."""
    expected, margins = case["exact_ids"], case["exact_margins"]
    for i, (a, b) in enumerate(zip(got, expected)):
        if a != b:
            assert margins[i] < MARGIN, f"{case['id']}: step {i} gave {a}, exact math {b} (margin {margins[i]:.4f})"
            return i
    assert len(got) == len(expected), case["id"]
    return len(got)


def test_file_is_q4_1_with_one_q8_0(model):
    kinds = {}
    for _, w in model.weights.tensors():
        name = getattr(w, "fmt", None) and w.fmt.name
        kinds[name] = kinds.get(name, 0) + 1
    assert kinds.get("Q4_1", 0) > 0 and model.config.n_layers == 30


def test_teacher_forced_logits_match_exact_math(model, ref):
    """One prefill over the recorded sequence: at every position the top-5 logits of exact math."""
    tf = ref["teacher_forced"]
    logits = model.logits(tf["sequence"])  # (T, vocab)
    assert logits.shape[0] == len(tf["top5"])
    worst = 0.0
    for row, top5 in zip(logits, tf["top5"]):
        ids = torch.tensor([i for i, _ in top5])
        want = torch.tensor([v for _, v in top5])
        worst = max(worst, float((row[ids] - want).abs().max() / want.abs().max()))
        if top5[0][1] - top5[1][1] >= MARGIN:
            assert int(row.argmax()) == top5[0][0]
    assert worst < 1e-4, worst


@pytest.mark.parametrize("case_id", ["raw-colors", "raw-code", "chat-poem", "chat-colors"])
def test_greedy_ids_match_exact_math(model, ref, case_id):
    case = next(c for c in ref["cases"] if c["id"] == case_id)
    got = model.generate(case["prompt_ids"], len(case["exact_ids"]), stop_ids=[])
    assert agree(got, case) >= 1


def test_triton_backend_agrees_on_a_short_prefix(smollm2, ref, one_thread):
    """Kernels under the interpreter (numpy) are slow (minutes a token here): a 5-token prompt through the
    prefill GEMMs, then one decode step through the GEMVs."""
    import kernel_utils as ku

    if ku.DEVICE != "cpu":
        pytest.skip("the GPU check runs the Triton backend at full length")
    tri = gguflm.load(smollm2, device=ku.DEVICE, backend="triton")
    case = next(c for c in ref["cases"] if c["id"] == "raw-colors")
    got = tri.generate(case["prompt_ids"], 2, stop_ids=[])
    assert got == case["exact_ids"][:2]
