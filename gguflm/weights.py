"""Weights: GGUF tensors streamed one at a time from the memory map onto device buffers, fused at load time."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Union

import gguf
import numpy as np
import torch

from gguflm.config import ModelConfig
from gguflm.errors import GGUFLMError
from gguflm.gguf_file import GGUFFile, TensorInfo
from gguflm.quants import Q8_0, QuantWeight

Weight = Union[torch.Tensor, QuantWeight]  # a dense (N, K) matrix or a Q8_0 one
QT = gguf.GGMLQuantizationType
DENSE_TYPES = {QT.F32: torch.float32, QT.F16: torch.float16, QT.BF16: torch.bfloat16}
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0")


@dataclass
class LayerWeights:
    attn_norm: torch.Tensor  # (dim,) fp32
    wqkv: Weight  # (q_dim + 2 * kv_dim, dim): Q rows, then K, then V
    bqkv: torch.Tensor | None  # (q_dim + 2 * kv_dim,) fp32, Qwen2
    q_norm: torch.Tensor | None  # (head_dim,) fp32, Qwen3
    k_norm: torch.Tensor | None  # (head_dim,) fp32, Qwen3
    wo: Weight  # (dim, q_dim)
    ffn_norm: torch.Tensor  # (dim,) fp32
    w_gate_up: Weight  # (2 * ffn_dim, dim): gate rows, then up
    w_down: Weight  # (dim, ffn_dim)


@dataclass
class ModelWeights:
    tok_embd: Weight  # (n_vocab, dim)
    output_norm: torch.Tensor  # (dim,) fp32
    output: Weight  # (n_vocab, dim); the same object as tok_embd when tied
    rope_freqs: torch.Tensor | None  # (rope_dim / 2,) fp32, Llama 3.1 frequency divisors
    layers: list[LayerWeights]

    @property
    def tied(self) -> bool:
        return self.output is self.tok_embd


# One table: model parameter -> the file tensors it is built from (several: fused along rows).
MATRICES = {
    "wqkv": ("attn_q", "attn_k", "attn_v"),
    "wo": ("attn_output",),
    "w_gate_up": ("ffn_gate", "ffn_up"),
    "w_down": ("ffn_down",),
}
VECTORS = {"attn_norm": "attn_norm", "ffn_norm": "ffn_norm"}
OPTIONAL_VECTORS = {"q_norm": "attn_q_norm", "k_norm": "attn_k_norm"}


def _expected_rows(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """(N, K) of each per-layer file matrix, from the metadata."""
    return {
        "attn_q": (cfg.q_dim, cfg.dim),
        "attn_k": (cfg.kv_dim, cfg.dim),
        "attn_v": (cfg.kv_dim, cfg.dim),
        "attn_output": (cfg.dim, cfg.q_dim),
        "ffn_gate": (cfg.ffn_dim, cfg.dim),
        "ffn_up": (cfg.ffn_dim, cfg.dim),
        "ffn_down": (cfg.dim, cfg.ffn_dim),
    }


class WeightLoader:
    """Reads tensors from one GGUF file onto one device, checking type and shape against the metadata."""

    def __init__(self, gf: GGUFFile, device: torch.device, progress: Callable[[int], None] | None = None):
        self.gf = gf
        self.device = device
        self.progress = progress

    def _tensor(self, name: str, shape: tuple[int, ...]) -> tuple[TensorInfo, torch.Tensor]:
        """The file tensor `name` as a host torch view of its bytes, checked to be `shape` (torch order)."""
        t = self.gf.tensor(name)
        qtype = t.tensor_type  # a valid ggml type: the parser checked it
        if qtype not in DENSE_TYPES and qtype != QT.Q8_0:
            raise GGUFLMError(
                f"tensor '{name}' has type {qtype.name}, which is not supported "
                f"(supported: {', '.join(SUPPORTED_TYPES)})"
            )
        file_shape = tuple(int(x) for x in reversed(t.shape))
        if file_shape != shape:
            raise GGUFLMError(f"tensor '{name}' has shape {list(file_shape)} but the metadata implies {list(shape)}")
        if qtype == QT.Q8_0 and shape[-1] % Q8_0.block_size:
            raise GGUFLMError(f"tensor '{name}' is Q8_0 with a row length {shape[-1]} not a multiple of 32")
        data = np.asarray(t.data)
        with warnings.catch_warnings():  # the memory map is read-only; we only ever copy out of it
            warnings.simplefilter("ignore", UserWarning)
            host = torch.from_numpy(data)
        if qtype == QT.BF16:
            host = host.view(torch.int16).view(torch.bfloat16)
        host = host.reshape(shape[0], -1) if qtype == QT.Q8_0 else host.reshape(shape)
        if self.progress:
            self.progress(int(t.n_bytes))
        return t, host

    def vector(self, name: str, length: int) -> torch.Tensor:
        """A 1-D tensor (norm weight, bias, rope factors) as fp32 on the device."""
        t, host = self._tensor(name, (length,))
        if t.tensor_type == QT.Q8_0:
            raise GGUFLMError(f"tensor '{name}' is 1-D and must be F32, F16 or BF16, not Q8_0")
        return host.to(self.device, torch.float32, copy=True)

    def matrix(self, names: tuple[str, ...], shapes: list[tuple[int, int]]) -> Weight:
        """One weight made of the file matrices `names` stacked along rows (N), each (N_i, K)."""
        parts = [self._tensor(n, s) for n, s in zip(names, shapes)]
        types = {t.tensor_type for t, _ in parts}
        n_total = sum(s[0] for s in shapes)
        if types == {QT.Q8_0}:
            raw = torch.empty((n_total, parts[0][1].shape[1]), dtype=torch.uint8, device=self.device)
            row = 0
            for _, host in parts:  # copy block bytes straight into the fused buffer, then split
                raw[row : row + host.shape[0]].copy_(host)
                row += host.shape[0]
            return Q8_0.unpack(raw)
        if len(types) == 1:
            dtype = parts[0][1].dtype
        else:  # mixed types in one fused weight: hold this one weight dense, in a type that holds them all
            dtype = torch.float32 if QT.F32 in types else torch.bfloat16 if QT.BF16 in types else torch.float16
        out = torch.empty((n_total, shapes[0][1]), dtype=dtype, device=self.device)
        if self.device.type == "meta":  # a check of types and shapes: no data is read
            return out
        row = 0
        for t, host in parts:
            if t.tensor_type == QT.Q8_0:
                host = Q8_0.unpack(host).dequantize(dtype)
            out[row : row + host.shape[0]].copy_(host)
            row += host.shape[0]
        return out


def check_weights(gf: GGUFFile, cfg: ModelConfig) -> None:
    """Validate every tensor's presence, type and shape without reading any data (meta device)."""
    load_weights(gf, cfg, "meta")


def load_weights(
    gf: GGUFFile, cfg: ModelConfig, device: str | torch.device = "cpu", progress: Callable[[int], None] | None = None
) -> ModelWeights:
    """Stream every tensor the model needs onto `device`, fusing QKV and gate+up."""
    loader = WeightLoader(gf, torch.device(device), progress)
    expected = _expected_rows(cfg)
    layers = []
    for i in range(cfg.n_layers):
        blk = f"blk.{i}."
        fields: dict[str, object] = {}
        for param, names in MATRICES.items():
            fields[param] = loader.matrix(tuple(f"{blk}{n}.weight" for n in names), [expected[n] for n in names])
        for param, name in VECTORS.items():
            fields[param] = loader.vector(f"{blk}{name}.weight", cfg.dim)
        for param, name in OPTIONAL_VECTORS.items():
            present = f"{blk}{name}.weight" in gf.tensors
            fields[param] = loader.vector(f"{blk}{name}.weight", cfg.head_dim) if present else None
        bias_names = [f"{blk}attn_{x}.bias" for x in "qkv"]
        if any(n in gf.tensors for n in bias_names):
            fields["bqkv"] = torch.cat(
                [loader.vector(n, d) for n, d in zip(bias_names, (cfg.q_dim, cfg.kv_dim, cfg.kv_dim))]
            )
        else:
            fields["bqkv"] = None
        layers.append(LayerWeights(**fields))

    tok_embd = loader.matrix(("token_embd.weight",), [(cfg.n_vocab, cfg.dim)])
    tied = "output.weight" not in gf.tensors
    output = tok_embd if tied else loader.matrix(("output.weight",), [(cfg.n_vocab, cfg.dim)])
    rope_freqs = None
    if "rope_freqs.weight" in gf.tensors:
        rope_freqs = loader.vector("rope_freqs.weight", cfg.rope_dim // 2)
    return ModelWeights(
        tok_embd=tok_embd,
        output_norm=loader.vector("output_norm.weight", cfg.dim),
        output=output,
        rope_freqs=rope_freqs,
        layers=layers,
    )
