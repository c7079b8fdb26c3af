"""`gguflm info` describes models and vocab-only files."""

from typer.testing import CliRunner

from gguflm.cli.main import _register, app
from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf

_register()
runner = CliRunner()


def test_info_on_a_quantized_qwen3(tmp_path):
    path = write_synthetic_gguf(tmp_path / "m.gguf", SyntheticSpec(arch="qwen3", qtype="Q8_0", qk_norm=True, tied=True))
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
