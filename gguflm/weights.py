"""Weights: GGUF tensors streamed one at a time from the memory map onto device buffers, fused at load time.

Every matrix becomes a `PackedWeight` in its format's device layout (the quant registry decides
how), a fused one of mixed formats a `StackedWeight` of such pieces; 1-D tensors (norms, biases,
rope factors) become fp32 vectors.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from gguflm import arch as archs
from gguflm import quants
from gguflm.arch import QK_NORM, QKV_BIAS, T, tensor_name
from gguflm.config import ModelConfig
from gguflm.errors import GGUFLMError
from gguflm.gguf_file import GGUFFile, TensorInfo
from gguflm.quants import PackedWeight, StackedWeight


@dataclass
class LayerWeights:
    attn_norm: torch.Tensor  # (dim,) fp32
    wqkv: PackedWeight | StackedWeight  # (q_dim + 2 * kv_dim, dim): Q rows, then K, then V
    bqkv: torch.Tensor | None  # (q_dim + 2 * kv_dim,) fp32, Qwen2
    q_norm: torch.Tensor | None  # (head_dim,) fp32, Qwen3
    k_norm: torch.Tensor | None  # (head_dim,) fp32, Qwen3
    wo: PackedWeight  # (dim, q_dim)
    ffn_norm: torch.Tensor  # (dim,) fp32
    w_gate_up: PackedWeight | StackedWeight  # (2 * ffn_dim, dim): gate rows, then up
    w_down: PackedWeight  # (dim, ffn_dim)


@dataclass
class ModelWeights:
    tok_embd: PackedWeight  # (n_vocab, dim)
    output_norm: torch.Tensor  # (dim,) fp32
    output: PackedWeight  # (n_vocab, dim); the same object as tok_embd when tied
    rope_freqs: torch.Tensor | None  # (rope_dim / 2,) fp32, Llama 3.1 frequency divisors
    layers: list[LayerWeights]

    @property
    def tied(self) -> bool:
        return self.output is self.tok_embd

    def tensors(self) -> Iterator[tuple[str, PackedWeight | StackedWeight | torch.Tensor]]:
        """(name, weight) of every loaded weight, the tied head once."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "layers":
                for i, layer in enumerate(value):
                    for g in dataclasses.fields(layer):
                        if getattr(layer, g.name) is not None:
                            yield f"layers.{i}.{g.name}", getattr(layer, g.name)
            elif value is not None and not (f.name == "output" and self.tied):
                yield f.name, value


# The one table: model parameter -> the file tensors it is built from (several: fused along rows).
MATRICES = {
    "wqkv": (T.ATTN_Q, T.ATTN_K, T.ATTN_V),
    "wo": (T.ATTN_OUT,),
    "w_gate_up": (T.FFN_GATE, T.FFN_UP),
    "w_down": (T.FFN_DOWN,),
}
NORMS = {"attn_norm": T.ATTN_NORM, "ffn_norm": T.FFN_NORM}
# Optional vectors, by architecture extra: parameter -> the (tensor, suffix) pairs it concatenates.
EXTRA_VECTORS = {
    QKV_BIAS: {"bqkv": archs.EXTRA_TENSORS[QKV_BIAS]},
    QK_NORM: {"q_norm": archs.EXTRA_TENSORS[QK_NORM][:1], "k_norm": archs.EXTRA_TENSORS[QK_NORM][1:]},
}


class WeightLoader:
    """Reads tensors from one GGUF file onto one device, checking type and shape against the metadata."""

    def __init__(self, gf: GGUFFile, device: torch.device, progress: Callable[[int], None] | None = None):
        self.gf = gf
        self.device = device
        self.progress = progress

    def _raw(self, name: str, shape: tuple[int, ...]) -> tuple[TensorInfo, torch.Tensor]:
        """The file tensor `name` as a host view of its rows (N, row bytes) uint8, checked to be `shape`."""
        t = self.gf.tensor(name)
        quants.get(t.tensor_type, name)  # a type this build can hold
        file_shape = tuple(int(x) for x in reversed(t.shape))
        if file_shape != shape:
            raise GGUFLMError(f"tensor '{name}' has shape {list(file_shape)} but the metadata implies {list(shape)}")
        with warnings.catch_warnings():  # the memory map is read-only; we only ever copy out of it
            warnings.simplefilter("ignore", UserWarning)
            host = torch.from_numpy(np.asarray(t.data).view(np.uint8))
        if self.progress:
            self.progress(int(t.n_bytes))
        return t, host.reshape(shape[0] if len(shape) > 1 else 1, -1)

    def vector(self, names: tuple[str, ...], lengths: tuple[int, ...]) -> torch.Tensor:
        """1-D tensors (norm weights, biases, rope factors) concatenated, as fp32 on the device."""
        out = []
        for name, n in zip(names, lengths):
            t, host = self._raw(name, (n,))
            fmt = quants.get(t.tensor_type, name)
            if fmt.torch_dtype is None:
                raise GGUFLMError(f"tensor '{name}' is 1-D and must be F32, F16 or BF16, not {fmt.name}")
            out.append(fmt.dequantize(fmt.pack(host)).reshape(n))
        return torch.cat(out).to(self.device, copy=True)

    def matrix(self, names: tuple[str, ...], shapes: list[tuple[int, int]]) -> PackedWeight | StackedWeight:
        """One weight made of the file matrices `names` stacked along rows (N), each (N_i, K).

        Consecutive matrices of one type share one fused buffer; where types differ (Q4_K_M's
        Q6_K attn_v beside Q4_K attn_q/attn_k) each run of one type is its own piece of a
        StackedWeight, still in its own format."""
        parts = [self._raw(n, s) for n, s in zip(names, shapes)]
        runs: list[list[tuple[TensorInfo, torch.Tensor]]] = []
        for t, host in parts:
            if runs and runs[-1][0][0].tensor_type == t.tensor_type:
                runs[-1].append((t, host))
            else:
                runs.append([(t, host)])
        pieces = [self._fused(run) for run in runs]
        return pieces[0] if len(pieces) == 1 else StackedWeight(tuple(pieces))

    def _fused(self, run: list[tuple[TensorInfo, torch.Tensor]]) -> PackedWeight:
        """Matrices of one type: their block bytes straight into one buffer, then the format's repack."""
        raw = torch.empty((sum(host.shape[0] for _, host in run), run[0][1].shape[1]), dtype=torch.uint8,
                          device=self.device)
        self._stack(raw, [host for _, host in run])
        return quants.pack(raw, run[0][0].tensor_type)

    def _stack(self, out: torch.Tensor, blocks: list[torch.Tensor]) -> None:
        row = 0
        for block in blocks:
            out[row : row + block.shape[0]].copy_(block)
            row += block.shape[0]


def check_weights(gf: GGUFFile, cfg: ModelConfig) -> None:
    """Validate every tensor's presence, type and shape without reading any data (meta device)."""
    load_weights(gf, cfg, "meta")


def load_weights(
    gf: GGUFFile, cfg: ModelConfig, device: str | torch.device = "cpu", progress: Callable[[int], None] | None = None
) -> ModelWeights:
    """Stream every tensor the model needs onto `device`, fusing QKV and gate+up."""
    loader = WeightLoader(gf, torch.device(device), progress)
    shapes = archs.layer_shapes(cfg)
    extras = cfg.architecture.extras
    _refuse_unused_extras(gf, cfg, extras)
    layers = []
    for i in range(cfg.n_layers):
        fields: dict[str, object] = {}
        for param, tensors in MATRICES.items():
            fields[param] = loader.matrix(tuple(tensor_name(t, i) for t in tensors), [shapes[t] for t in tensors])
        for param, t in NORMS.items():
            fields[param] = loader.vector((tensor_name(t, i),), shapes[t])
        for extra, vectors in EXTRA_VECTORS.items():
            for param, pairs in vectors.items():
                names = tuple(tensor_name(t, i, suffix) for t, suffix in pairs)
                present = extra in extras and any(n in gf.tensors for n in names)
                fields[param] = loader.vector(names, tuple(shapes[t][0] for t, _ in pairs)) if present else None
        layers.append(LayerWeights(**fields))

    embd_shape = [(cfg.n_vocab, cfg.dim)]
    tok_embd = loader.matrix((tensor_name(T.TOKEN_EMBD),), embd_shape)
    tied = tensor_name(T.OUTPUT) not in gf.tensors
    output = tok_embd if tied else loader.matrix((tensor_name(T.OUTPUT),), embd_shape)
    rope_freqs = None
    if tensor_name(T.ROPE_FREQS) in gf.tensors:
        rope_freqs = loader.vector((tensor_name(T.ROPE_FREQS),), (cfg.rope_dim // 2,))
    return ModelWeights(
        tok_embd=tok_embd,
        output_norm=loader.vector((tensor_name(T.OUTPUT_NORM),), (cfg.dim,)),
        output=output,
        rope_freqs=rope_freqs,
        layers=layers,
    )


def _refuse_unused_extras(gf: GGUFFile, cfg: ModelConfig, extras: frozenset[str]) -> None:
    """A tensor of an extra the architecture does not have would be silently ignored: refuse it, as llama.cpp does."""
    for extra, pairs in archs.EXTRA_TENSORS.items():
        if extra in extras:
            continue
        for t, suffix in pairs:
            name = tensor_name(t, 0, suffix)
            if name in gf.tensors:
                raise GGUFLMError(f"tensor '{name}' is not used by architecture '{cfg.arch}'")
