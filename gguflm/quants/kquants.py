"""ggml's 256-weight superblock formats: the k-quants Q2_K..Q6_K and the non-linear IQ4_XS.

Every member keeps the file's bytes, split into planes (one tensor per block field, rows along
dim 0, each row's superblocks back to back), so the GPU holds exactly the bytes per weight the file
does and scales stay packed (decoded in registers by kernels/gemv_kquants.py). The plane order of a
member is the order its kernels take them: quant bits, extra bits (qh / hmask), scales, d (and dmin).
A row of K weights is K/256 superblocks; the weights of sub-block i are the contiguous run
[i*L, (i+1)*L) of its superblock (L = 16 or 32).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gguflm.quants import QT, QuantFormat, register

if TYPE_CHECKING:
    import torch

QK_K = 256
IQ4_VALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)  # ggml's kvalues_iq4nl


class KQuant(QuantFormat):
    """A superblock format: `FIELDS` are its block's (name, bytes, dtype) in file order, `PLANES` the
    device tuple's field names in kernel order; `pack` splits the blocks into those planes."""

    FIELDS: tuple[tuple[str, int, str], ...]
    PLANES: tuple[str, ...]
    has_min = False  # w = d*sc*q - dmin*m (Q2_K, Q4_K, Q5_K) rather than d*sc*q

    def pack(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        import torch

        n_rows, row_bytes = raw.shape
        n_sb = row_bytes // self.type_size
        blocks = raw.view(n_rows, n_sb, self.type_size)  # (N, K/256, type_size)
        planes, at = {}, 0
        for name, size, dtype in self.FIELDS:
            field = blocks[:, :, at : at + size].contiguous().view(getattr(torch, dtype))
            planes[name] = field.reshape(n_rows, -1)  # (N, K/256 * elements per block)
            at += size
        return tuple(planes[p] for p in self.PLANES)

    def blocks(self, parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The file bytes (N, row_bytes) uint8 back from the planes (the inverse of `pack`)."""
        import torch

        planes = dict(zip(self.PLANES, parts))
        n_rows = parts[0].shape[0]
        fields = [planes[name].contiguous().view(torch.uint8).view(n_rows, -1, size) for name, size, _ in self.FIELDS]
        return torch.cat(fields, dim=-1).reshape(n_rows, -1)

    def dequantize(self, parts: tuple[torch.Tensor, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        import torch

        planes = dict(zip(self.PLANES, parts))
        n_rows = parts[0].shape[0]
        n_sb = parts[0].shape[1] // dict((f[0], f[1]) for f in self.FIELDS)[self.PLANES[0]]  # uint8 quant bits
        w = self._weights(planes, n_rows, n_sb)
        return w.reshape(n_rows, n_sb * QK_K).to(dtype or torch.float32)

    def _weights(self, p: dict, n: int, n_sb: int) -> torch.Tensor:
        """(N, K/256, sub-blocks, L) fp32, computed in ggml's order of float operations."""
        raise NotImplementedError


def _unpack_bits(x: torch.Tensor, shifts: tuple[int, ...], mask: int, dim: int) -> torch.Tensor:
    """(x >> s) & mask for each shift s, stacked as a new dimension `dim`. For uint8 x (last dim a multiple
    of 4) and dim < x.dim(): four bytes at a time on an int32 view (the mask repeated in every byte keeps
    bits from crossing bytes), written straight into the output (no stack copy)."""
    import torch

    if x.dtype != torch.uint8 or dim >= x.dim():  # the few scale bytes
        return torch.stack([(x >> s) & mask for s in shifts], dim=dim)
    out = torch.empty((*x.shape[:dim], len(shifts), *x.shape[dim:]), dtype=torch.uint8, device=x.device)
    words = x.contiguous().view(torch.int32)
    for i, s in enumerate(shifts):
        torch.bitwise_and(words >> s if s else words, mask * 0x01010101, out=out.select(dim, i).view(torch.int32))
    return out


def _d(p: torch.Tensor, n: int, n_sb: int, per: int = 1) -> torch.Tensor:
    """fp16 plane (N, K/256 * per) -> fp32 (N, K/256, per)."""
    return p.view(n, n_sb, per).float()


def k4_scale_min(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K/Q5_K's 12 bytes (..., 12) -> 8 six-bit scales and 8 mins (..., 8) uint8.

    Sub-block i < 4: scale = b[i] & 63, min = b[i+4] & 63; i >= 4: the low 4 bits from b[i+4]
    (scale low nibble, min high nibble), the top 2 bits from the top bits of b[i-4] / b[i].
    """
    import torch

    lo, mid, top = scales[..., 0:4], scales[..., 4:8], scales[..., 8:12]
    sc = torch.cat((lo & 63, (top & 15) | ((lo >> 2) & 48)), dim=-1)
    mn = torch.cat((mid & 63, (top >> 4) | ((mid >> 2) & 48)), dim=-1)
    return sc, mn


class Q2_KFormat(KQuant):
    """84 B per 256 (2.625 bits): 16 bytes of 4-bit (scale | min << 4) per 16-weight sub-block,
    64 bytes of 2-bit q, fp16 d and dmin; w = d*(sc & 15)*q - dmin*(sc >> 4).

    Weight 128h + 32t + l (h < 2, t < 4, l < 32) is bits 2t of qs[32h + l], sub-block its index // 16.
    Device planes: qs uint8 (N, K/4), scales uint8 (N, K/16), dm fp16 (N, 2K/256) = d, dmin pairs.
    """

    ggml_type = QT.Q2_K
    kernel = "q2_k"
    has_min = True
    FIELDS = (("scales", 16, "uint8"), ("qs", 64, "uint8"), ("dm", 4, "float16"))
    PLANES = ("qs", "scales", "dm")

    def _weights(self, p, n, n_sb):
        dm = _d(p["dm"], n, n_sb, 2)
        sc = p["scales"].view(n, n_sb, 16)
        dl = dm[..., 0:1] * (sc & 15).float()  # (N, S, 16)
        ml = dm[..., 1:2] * (sc >> 4).float()
        q = _unpack_bits(p["qs"].view(n, n_sb, 2, 32), (0, 2, 4, 6), 3, 3)  # (N, S, 2, 4, 32)
        q = q.reshape(n, n_sb, 16, 16).float()
        return q.mul_(dl[..., None]).sub_(ml[..., None])  # in place: one fp32 chunk, two passes


class Q3_KFormat(KQuant):
    """110 B per 256 (3.4375 bits): hmask 32 B (the 3rd bit), qs 64 B (2 low bits, as Q2_K), 12 bytes
    of 16 six-bit scales, fp16 d; w = d*(sc - 32)*(q2 + 4*hbit - 4).

    Weight w of a superblock: bit w // 32 of hmask[w % 32]. Scale i: low 4 bits in scales[i % 8]
    (nibble i // 8), high 2 bits in scales[8 + i % 4] (bits 2*(i // 4)).
    Device planes: qs uint8 (N, K/4), hmask uint8 (N, K/8), scales uint8 (N, 12K/256), d fp16 (N, K/256).
    """

    ggml_type = QT.Q3_K
    kernel = "q3_k"
    FIELDS = (("hmask", 32, "uint8"), ("qs", 64, "uint8"), ("scales", 12, "uint8"), ("d", 2, "float16"))
    PLANES = ("qs", "hmask", "scales", "d")

    def _weights(self, p, n, n_sb):
        import torch

        d = _d(p["d"], n, n_sb)
        raw = p["scales"].view(n, n_sb, 12)
        low = _unpack_bits(raw[..., :8], (0, 4), 15, 2).reshape(n, n_sb, 16)
        high = _unpack_bits(raw[..., 8:], (0, 2, 4, 6), 3, 2).reshape(n, n_sb, 16)
        sc = ((low | (high << 4)).to(torch.int8) - 32).float()
        dl = d * sc  # (N, S, 16)
        q2 = _unpack_bits(p["qs"].view(n, n_sb, 2, 32), (0, 2, 4, 6), 3, 3).reshape(n, n_sb, 16, 16)
        hb = _unpack_bits(p["hmask"].view(n, n_sb, 32), tuple(range(8)), 1, 2).reshape(n, n_sb, 16, 16)
        q = q2.bitwise_or_(hb << 2).sub_(4).view(torch.int8)  # q2 - 4 * (1 - hbit), wrapped into int8
        return q.float().mul_(dl[..., None])


class Q4_KFormat(KQuant):
    """144 B per 256 (4.5 bits): fp16 d, dmin, 12 bytes of 8 six-bit scales and mins, 128 B of nibbles;
    w = d*sc*q - dmin*m over 32-weight sub-blocks.

    Byte 32j + l of qs: low nibble weight 64j + l (sub-block 2j), high nibble 64j + 32 + l (2j + 1).
    Device planes: qs uint8 (N, K/2), scales uint8 (N, 12K/256), dm fp16 (N, 2K/256) = d, dmin pairs.
    """

    ggml_type = QT.Q4_K
    kernel = "q4_k"
    has_min = True
    FIELDS = (("dm", 4, "float16"), ("scales", 12, "uint8"), ("qs", 128, "uint8"))
    PLANES = ("qs", "scales", "dm")

    def _q(self, p, n, n_sb):
        return _unpack_bits(p["qs"].view(n, n_sb, 4, 32), (0, 4), 15, 3).reshape(n, n_sb, 8, 32)

    def _weights(self, p, n, n_sb):
        dm = _d(p["dm"], n, n_sb, 2)
        sc, mn = k4_scale_min(p["scales"].view(n, n_sb, 12))
        dl = dm[..., 0:1] * sc.float()  # (N, S, 8)
        ml = dm[..., 1:2] * mn.float()
        return self._q(p, n, n_sb).float().mul_(dl[..., None]).sub_(ml[..., None])


class Q5_KFormat(Q4_KFormat):
    """176 B per 256 (5.5 bits): Q4_K plus qh 32 B, the 5th bit of weight 32i + l in bit i of qh[l].

    Device planes: qs uint8 (N, K/2), qh uint8 (N, K/8), scales uint8 (N, 12K/256), dm fp16 (N, 2K/256).
    """

    ggml_type = QT.Q5_K
    kernel = "q5_k"
    FIELDS = (("dm", 4, "float16"), ("scales", 12, "uint8"), ("qh", 32, "uint8"), ("qs", 128, "uint8"))
    PLANES = ("qs", "qh", "scales", "dm")

    def _q(self, p, n, n_sb):
        hb = _unpack_bits(p["qh"].view(n, n_sb, 32), tuple(range(8)), 1, 2)  # (N, S, 8, 32)
        return super()._q(p, n, n_sb) | (hb << 4)


class Q6_KFormat(KQuant):
    """210 B per 256 (6.5625 bits): ql 128 B (low 4 bits), qh 64 B (high 2 bits), 16 int8 scales, fp16 d;
    w = d*sc*(q - 32) over 16-weight sub-blocks.

    Weight 128h + 64t + b (t < 2, b < 64): nibble t of ql[64h + b]; its high bits are bits
    2*((64t + b) // 32) of qh[32h + b % 32].
    Device planes: ql uint8 (N, K/2), qh uint8 (N, K/4), scales int8 (N, K/16), d fp16 (N, K/256).
    """

    ggml_type = QT.Q6_K
    kernel = "q6_k"
    FIELDS = (("ql", 128, "uint8"), ("qh", 64, "uint8"), ("scales", 16, "int8"), ("d", 2, "float16"))
    PLANES = ("ql", "qh", "scales", "d")

    def _weights(self, p, n, n_sb):
        import torch

        dl = _d(p["d"], n, n_sb) * p["scales"].view(n, n_sb, 16).float()  # (N, S, 16)
        ql = _unpack_bits(p["ql"].view(n, n_sb, 2, 64), (0, 4), 15, 3).reshape(n, n_sb, 2, 128)
        qh = _unpack_bits(p["qh"].view(n, n_sb, 2, 32), (0, 2, 4, 6), 3, 3).reshape(n, n_sb, 2, 128)
        q = ql.bitwise_or_(qh << 4).sub_(32).view(torch.int8)  # q - 32 in 0..63 - 32, wrapped into int8
        return q.reshape(n, n_sb, 16, 16).float().mul_(dl[..., None])


class IQ4_XSFormat(KQuant):
    """136 B per 256 (4.25 bits): fp16 d, scales_h u16 (2 high bits per sub-block), scales_l 4 B (nibbles),
    128 B of 4-bit indices into IQ4_VALUES; w = d*(ls - 32)*IQ4_VALUES[q] over 32-weight sub-blocks.

    Byte 16i + j of qs: low nibble weight 32i + j, high nibble 32i + 16 + j.
    Device planes: qs uint8 (N, K/2), scales_l uint8 (N, 4K/256), scales_h int16 (N, K/256), d fp16 (N, K/256).
    """

    ggml_type = QT.IQ4_XS
    kernel = "iq4_xs"
    FIELDS = (("d", 2, "float16"), ("scales_h", 2, "int16"), ("scales_l", 4, "uint8"), ("qs", 128, "uint8"))
    PLANES = ("qs", "scales_l", "scales_h", "d")

    def __init__(self):
        self._values: dict = {}  # device -> IQ4_VALUES as fp32: made once, never inside a CUDA graph capture

    def values(self, device: torch.device) -> torch.Tensor:
        """IQ4_VALUES (16,) fp32 on `device`, the table the dequantizer and the kernels look up."""
        import torch

        key = str(device)
        if key not in self._values:
            self._values[key] = torch.tensor(IQ4_VALUES, dtype=torch.float32, device=device)
        return self._values[key]

    def _weights(self, p, n, n_sb):
        import torch

        low = _unpack_bits(p["scales_l"].view(n, n_sb, 4), (0, 4), 15, 3).reshape(n, n_sb, 8)
        high = _unpack_bits(p["scales_h"].view(n, n_sb, 1).int(), tuple(range(0, 16, 2)), 3, 3).reshape(n, n_sb, 8)
        ls = ((low.int() | (high << 4)).to(torch.int8) - 32).float()
        dl = _d(p["d"], n, n_sb) * ls  # (N, S, 8)
        idx = _unpack_bits(p["qs"].view(n, n_sb, 8, 16), (0, 4), 15, 3).reshape(n, n_sb, 8, 32)
        q = self.values(idx.device).index_select(0, idx.reshape(-1).int()).view(idx.shape)  # int32 indices
        return q.mul_(dl[..., None])


Q2_K = register(Q2_KFormat())
Q3_K = register(Q3_KFormat())
Q4_K = register(Q4_KFormat())
Q5_K = register(Q5_KFormat())
Q6_K = register(Q6_KFormat())
IQ4_XS = register(IQ4_XSFormat())
