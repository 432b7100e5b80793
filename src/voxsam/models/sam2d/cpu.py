"""What this CPU offers the fast encoder: its flags, native bf16, and whether oneDNN's fused kernels agree
with the plain ops (checked once)."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

def cpu_flags() -> set[str]:
    """CPU feature flags of /proc/cpuinfo (empty where it is not readable, e.g. not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX tiles or AVX512-BF16) for torch's oneDNN."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        if torch.cpu._is_amx_tile_supported():
            return True
    except AttributeError:  # pragma: no cover - older torch
        pass
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def has_vnni() -> bool:
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


@functools.lru_cache(maxsize=None)
def fused_ops_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether oneDNN's fused conv/linear + GELU/add ops exist here for `dtype` and compute what they
    should (checked once per dtype, on tiny tensors, against the unfused ops). oneDNN refuses bfloat16
    without AVX512-BW/VL/DQ or AVX-NE-CONVERT (e.g. on AVX2-only CPUs): then False for bfloat16."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        with torch.inference_mode():
            g = torch.Generator().manual_seed(0)
            x = torch.randn(1, 8, 5, 5, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
            w, b = torch.randn(8, 8, 1, 1, generator=g).to(dtype), torch.randn(8, generator=g).to(dtype)
            t, w2 = x.permute(0, 2, 3, 1), w[:, :, 0, 0]
            ref = F.conv2d(x, w, b)
            got = [
                torch.ops.mkldnn._convolution_pointwise(x, w, b, [0, 0], [1, 1], [1, 1], 1, "gelu", [], "none"),
                torch.ops.mkldnn._convolution_pointwise.binary(x, x, w, b, [0, 0], [1, 1], [1, 1], 1, "add", None, None, [], None),
                torch.ops.mkldnn._linear_pointwise(t, w2, b, "gelu", [], "none").permute(0, 3, 1, 2),
                torch.ops.mkldnn._linear_pointwise.binary(t, t, w2, b, "add").permute(0, 3, 1, 2),
            ]
            want = [F.gelu(ref), ref + x, F.gelu(ref), ref + x]
            atol = 1e-4 if dtype == torch.float32 else 0.1
            return all(torch.allclose(a.float(), e.float(), atol=atol) for a, e in zip(got, want))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
