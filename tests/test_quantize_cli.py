"""`gguflm quantize`: every type writes a valid GGUF (read back with gguf-py), metadata copied,
greedy ids of the quantized file match its dequantized weights, Ctrl-C leaves nothing, and bad
input gets one clear sentence."""

from __future__ import annotations

import subprocess
import sys

import gguf
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from gguflm import quants
from gguflm.cli import quantize as quantize_cli
from gguflm.quantize import rewrite
from gguflm.quantize.blocks import quantize_rows
from gguflm.quantize.mixes import MIXES
from gguflm.quantize.rewrite import quantize_file
from gguflm.gguf_file import open_gguf
from gguflm.quantize.verify import write_float_copy
from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf
from gguflm.synthetic.vocab import spm_tokenizer

QT = gguf.GGMLQuantizationType
SPEC = SyntheticSpec(arch="llama", n_vocab=512, dim=256, n_layers=2, ffn_dim=256, n_heads=4, n_kv_heads=2)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_synthetic_gguf(tmp_path_factory.mktemp("q") / "src.gguf", SPEC, tokenizer=spm_tokenizer(512))


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test app."""

    quantize_cli.register(app)
    return app


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gguflm.cli.main", "quantize", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def fields(path) -> dict:
    return {k: f.contents() for k, f in gguf.GGUFReader(path).fields.items() if not k.startswith("GGUF.")}


@pytest.mark.parametrize("mix", list(MIXES))
def test_every_type_writes_the_bytes_of_its_quantizer(source, tmp_path, mix):
    out = quantize_file(source, tmp_path / "o.gguf", mix).path
    src, got = gguf.GGUFReader(source), gguf.GGUFReader(out)
    by_name = {t.name: t for t in src.tensors}
    layer = [int(t.name.split(".")[1]) if t.name.startswith("blk.") else -1 for t in got.tensors]
    assert sorted(by_name) == sorted(t.name for t in got.tensors)
    assert [(n, t.name) for n, t in zip(layer, got.tensors)] == sorted(zip(layer, [t.name for t in got.tensors]))
    for b in got.tensors:  # in llama-quantize's order: by block, then name
        a = by_name[b.name]
        assert list(a.shape) == list(b.shape)
        x = np.asarray(a.data, dtype=np.float32).reshape(-1, int(a.shape[0]))
        assert np.array_equal(np.asarray(b.data).view(np.uint8).reshape(-1),
                              quantize_rows(x, b.tensor_type).reshape(-1)), b.name
        y = gguf.quants.dequantize(b.data, b.tensor_type)  # gguf-py reads every tensor back
        assert y.size == x.size and np.isfinite(y).all()
    want, have = fields(source), fields(out)
    assert have.pop("general.file_type") == int(MIXES[mix].file_type)
    assert have.pop("general.quantization_version") == gguf.GGML_QUANT_VERSION
    want.pop("general.file_type", None), want.pop("general.quantization_version", None)
    assert have == want  # every other key copied, value and type


@pytest.mark.parametrize("mix", ["Q8_0", "F16", "BF16", "Q4_0", "Q4_K_M", "Q6_K", "IQ4_XS"])
def test_greedy_ids_match_the_dequantized_weights(source, tmp_path, mix):
    """Run where the runtime has the formats (the Q8_0/F16/BF16 here; the others once their kernels merge)."""
    import gguflm

    out = quantize_file(source, tmp_path / "o.gguf", mix).path
    missing = sorted({t.tensor_type.name for t in gguf.GGUFReader(out).tensors if quants.lookup(t.tensor_type) is None})
    if missing:
        pytest.skip(f"gguflm cannot load {', '.join(missing)} yet (gguflm.quants.lookup is None)")
    prompt = [1, 17, 42, 99, 5]
    ids = gguflm.load(out, device="cpu").generate(prompt, 8, stop_ids=())
    twin = write_float_copy(open_gguf(out), tmp_path / "twin.gguf")
    assert ids == gguflm.load(twin, device="cpu").generate(prompt, 8, stop_ids=())


def test_requantize_needs_the_flag_and_warns(tmp_path, caplog):
    q8 = write_synthetic_gguf(tmp_path / "q8.gguf", SyntheticSpec(**{**SPEC.__dict__, "qtype": "Q8_0"}))
    res = run_cli(q8, tmp_path / "o.gguf", "Q4_K_M")
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert res.stderr.startswith("error: the source is already quantized (") and "--allow-requantize" in res.stderr
    assert not (tmp_path / "o.gguf").exists()
    with caplog.at_level("WARNING"):
        quantize_file(q8, tmp_path / "o.gguf", "Q4_K_M", allow_requantize=True)
    assert "requantizing" in caplog.text
    assert gguf.GGUFReader(tmp_path / "o.gguf").fields["general.file_type"].contents() == 15


@pytest.mark.parametrize("case", ["unknown type", "not gguf", "missing dir", "missing source"])
def test_bad_input_is_one_clear_sentence(source, tmp_path, case):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all")
    args = {"unknown type": (source, tmp_path / "o.gguf", "Q4_K_Z"),
            "not gguf": (junk, tmp_path / "o.gguf", "Q4_K_M"),
            "missing dir": (source, tmp_path / "nowhere" / "o.gguf", "Q4_K_M"),
            "missing source": (tmp_path / "absent.gguf", tmp_path / "o.gguf", "Q4_K_M")}[case]
    res = run_cli(*args)
    assert res.returncode == 1, res.stderr
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert {"unknown type": "unknown quantization type 'Q4_K_Z'", "not gguf": "not a GGUF file",
            "missing dir": "does not exist", "missing source": "no such file"}[case] in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.gguf"]


def test_interrupt_leaves_no_file(source, tmp_path, monkeypatch):
    calls = []
    real = rewrite.encode_tensor

    def interrupted(info, target):
        calls.append(info.name)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(info, target)

    monkeypatch.setattr(rewrite, "encode_tensor", interrupted)
    with pytest.raises(KeyboardInterrupt):
        quantize_file(source, tmp_path / "o.gguf", "Q4_K_M")
    assert list(tmp_path.iterdir()) == []


def test_dry_run_and_verify(app, source, tmp_path):
    res = CliRunner().invoke(app, ["quantize", str(source), str(tmp_path / "o.gguf"), "q4_k_m", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "blk.0.attn_v.weight" in res.output and "F32    -> Q6_K" in res.output and not (tmp_path / "o.gguf").exists()
    res = CliRunner().invoke(app, ["quantize", str(source), str(tmp_path / "o.gguf"), "Q8_0", "--verify"])
    assert res.exit_code == 0, res.output
    assert "KL mean" in res.output and "top-1 agreement" in res.output and "per-tensor RMSE of 16 re-encoded" in res.output
    res = CliRunner().invoke(app, ["quantize", str(source), str(tmp_path / "o.gguf"), "Q8_0"])
    assert res.exit_code != 0 and "already exists" in str(res.exception)
