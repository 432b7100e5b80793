"""The matrix-product trilinear upsampling equals F.interpolate, values and gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from voxsam.training.upsample import upsample_trilinear


@pytest.mark.parametrize(("shape", "size"), [((2, 1, 8, 8, 8), 32), ((1, 2, 5, 7, 3), (11, 7, 9)), ((1, 1, 6, 4, 5), (3, 4, 10))])
def test_matches_interpolate_values_and_gradients(shape: tuple[int, ...], size: int | tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    ref = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
    out = upsample_trilinear(x, size)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    g = torch.randn_like(ref)
    (grad_ref,) = torch.autograd.grad(ref, x, g)
    (grad_out,) = torch.autograd.grad(out, x, g)
    torch.testing.assert_close(grad_out, grad_ref, rtol=0, atol=1e-12)


def test_float32_at_training_size_agrees_to_rounding() -> None:
    x = torch.randn(2, 1, 32, 32, 32)
    ref = F.interpolate(x, size=128, mode="trilinear", align_corners=False)
    assert (upsample_trilinear(x, 128) - ref).abs().max() < 1e-5
