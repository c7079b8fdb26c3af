"""`gguflm info` describes models and vocab-only files."""

from typer.testing import CliRunner

from gguflm.cli.main import _register, app
from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf

_register()
runner = CliRunner()


def test_info_on_a_quantized_qwen3(tmp_path):
    path = write_synthetic_gguf(tmp_path / "m.gguf", SyntheticSpec(arch="qwen3", qtype="Q8_0", tied=True))
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "qwen3" in out and "neox" in out
    assert "tied embeddings  yes" in out
    assert "F32 9, Q8_0 15" in out  # 2 x 7 matrices + token_embd; 2 x 4 norms + output_norm stay F32
    assert "chat template    none" in out


def test_info_on_stories260k(stories260k):
    result = runner.invoke(app, ["info", str(stories260k)])
    assert result.exit_code == 0, result.output
    for words in ("layers             5", "heads              8 (kv 4, head size 8)", "context length     2048",
                  "tokenizer          llama, 512 tokens", "end of generation  2 '</s>'"):
        assert words in result.output


def test_info_on_vocab_only_file(testdata):
    result = runner.invoke(app, ["info", str(testdata / "vocab" / "ggml-vocab-qwen2.gguf")])
    assert result.exit_code == 0, result.output
    assert "none (vocabulary only)" in result.output and "<|im_end|>" in result.output


def test_info_describes_a_file_it_cannot_run(tmp_path):
    """A tensor type the build lacks (IQ2_XXS) and an unknown architecture: described, a note, exit 0."""
    import gguf
    import numpy as np

    iq2 = gguf.GGMLQuantizationType.IQ2_XXS
    raw = np.random.default_rng(0).integers(0, 256, size=(256, 66), dtype=np.uint8)  # 256 rows of one block
    spec = SyntheticSpec(dim=256, n_heads=4, n_kv_heads=2, replace_tensors={"blk.0.attn_q.weight": (raw, iq2)})
    result = runner.invoke(app, ["info", str(write_synthetic_gguf(tmp_path / "iq2.gguf", spec))])
    assert result.exit_code == 0, result.output
    assert "layers           2" in result.output and "IQ2_XXS 1" in result.output
    assert ("note: this build cannot run it: 1 tensor(s) have type IQ2_XXS (e.g. 'blk.0.attn_q.weight'), "
            "which is not supported") in result.output

    result = runner.invoke(app, ["info", str(write_synthetic_gguf(tmp_path / "m.gguf", SyntheticSpec(arch="mamba")))])
    assert result.exit_code == 0, result.output
    assert "architecture   mamba" in result.output and "block_count 2" in result.output and "F32 " in result.output
    assert "note: this build cannot run it: architecture 'mamba' is not supported" in result.output


def test_info_notes_a_missing_tensor_and_still_refuses_a_malformed_file(tmp_path):
    path = write_synthetic_gguf(tmp_path / "m.gguf", SyntheticSpec(drop_tensors=("blk.1.ffn_up.weight",)))
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0 and "'blk.1.ffn_up.weight' is missing" in result.output
    truncated = tmp_path / "t.gguf"
    truncated.write_bytes(path.read_bytes()[:100])
    result = runner.invoke(app, ["info", str(truncated)])
    assert result.exit_code != 0


def test_info_json_holds_every_row_and_the_problems(stories260k, tmp_path):
    import json

    text = runner.invoke(app, ["info", str(stories260k)])
    as_json = runner.invoke(app, ["info", "--json", str(stories260k)])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data["layers"] == 5 and data["context_length"] == 2048 and data["problems"] == []
    labels = [line.split("  ")[0] for line in text.output.splitlines()]
    assert [k for k in data if k != "problems"] == [label.replace(" ", "_") for label in labels]
    broken = write_synthetic_gguf(tmp_path / "m.gguf", SyntheticSpec(drop_tensors=("blk.1.ffn_up.weight",)))
    assert json.loads(runner.invoke(app, ["info", "--json", str(broken)]).output)["problems"] == [
        "tensor 'blk.1.ffn_up.weight' is missing"]


def test_info_template_prints_the_files_chat_template(testdata, stories260k):
    qwen2 = testdata / "vocab" / "ggml-vocab-qwen2.gguf"
    import gguf

    expected = gguf.GGUFReader(qwen2).fields["tokenizer.chat_template"].contents()
    result = runner.invoke(app, ["info", "--template", str(qwen2)])
    assert result.exit_code == 0 and result.output == expected.rstrip("\n") + "\n"
    result = runner.invoke(app, ["info", "--template", str(stories260k)])
    assert result.exit_code != 0 and "has no chat template" in str(result.exception)


def test_info_on_a_directory_says_so(tmp_path):
    result = runner.invoke(app, ["info", str(tmp_path)])
    assert result.exit_code != 0 and "is a directory, not a GGUF file" in str(result.exception)


def test_the_torch_free_tensor_check_agrees_with_the_loader(tmp_path):
    """info's checks by name, type and shape refuse exactly what loading on the meta device refuses."""
    import gguf
    import numpy as np

    from gguflm.config import ModelConfig
    from gguflm.errors import GGUFLMError
    from gguflm.gguf_file import open_gguf
    from gguflm.info import tensor_problems
    from gguflm.weights import check_weights

    q8_0 = gguf.GGMLQuantizationType.Q8_0
    cases = {
        "fine": SyntheticSpec(),
        "fine, tied": SyntheticSpec(tied=True),
        "fine, qwen2 biases": SyntheticSpec(arch="qwen2"),
        "fine, qwen2 without biases": SyntheticSpec(arch="qwen2", extras=frozenset()),
        "missing": SyntheticSpec(drop_tensors=("blk.1.ffn_up.weight",)),
        "missing one bias": SyntheticSpec(arch="qwen2", drop_tensors=("blk.0.attn_k.bias",)),
        "shape": SyntheticSpec(replace_tensors={"blk.0.ffn_norm.weight": (np.ones(63, np.float32), None)}),
        "unused extra": SyntheticSpec(arch="qwen3", extras=frozenset({"qk_norm", "qkv_bias"})),
        "1-D quantized": SyntheticSpec(replace_tensors={"output_norm.weight": (np.zeros(68, np.uint8), q8_0)}),
    }
    for n, (label, spec) in enumerate(cases.items()):
        gf = open_gguf(write_synthetic_gguf(tmp_path / f"case{n}.gguf", spec))
        cfg = ModelConfig.from_gguf(gf)
        try:
            check_weights(gf, cfg)
            refused = None
        except GGUFLMError as e:
            refused = str(e)
        found = tensor_problems(gf, cfg)
        assert bool(found) == (refused is not None), (label, found, refused)
        assert label.startswith("fine") == (refused is None), label
        if refused:
            assert found[0] == refused.split(": ", 1)[-1] if ".gguf: " in refused else found[0] == refused
