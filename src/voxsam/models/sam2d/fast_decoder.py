"""Inference-only fast path of SAM's mask decoder: the same function as `MaskDecoder.forward`, fewer FLOPs.

    from voxsam.models.sam2d.fast_decoder import fast_decode
    with torch.no_grad():
        logits, iou = fast_decode(prompt_encoder, mask_decoder, prompts, multimask=False)  # checked Prompts

`voxsam.models.sam2d.decoding.decode_prompts` calls it whenever autograd is off (``torch.no_grad`` /
``torch.inference_mode``), so `Sam2D.decode` and `Memory3D.decode` use it for inference; with gradients
on they run the exact modules. It holds no copy of the weights: every call reads the modules' live
parameters (a fine-tuned decoder is used as it is now), and only the dense positional encoding is
cached (`PromptEncoder.get_dense_pe`, keyed on its buffer's version). Results equal the exact modules
to float32 rounding (max abs error ~1e-5 on logits; tests/models/test_sam2d_fast_decoder.py).

The rearrangements (exact in real arithmetic):

- image tokens stay token-major (B, HW, P) and contiguous; the embedding + dense prompt are formed in
  that layout in one pass (a mask prompt's closing 1 x 1 convolution as a product accumulated into it);
- the two-way transformer: `voxsam.models.sam2d.fast_transformer` (cross-attention projections folded
  into the few tokens' side, image-side steps in cache-sized bands of tokens);
- the two 2 x 2 stride-2 transposed convolutions are matrix products on the channels-last tokens
  (every output pixel depends on one input pixel only), LayerNorm2d a plain layer norm over channels,
  and the hypernetwork dot product is taken before the one permute to (B, M, 4n, 4n), in bands of grid
  rows; only the masks asked for (token 0, or tokens 1..M with ``multimask``) are computed.

Where oneDNN's fused linear + GELU kernel is available (`voxsam.models.sam2d.cpu.fused_ops_available`)
the second upscaling product applies its GELU in the same kernel.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voxsam.models.sam2d.common import MLP, LayerNorm2d
from voxsam.models.sam2d.prompt_batch import Prompts
from voxsam.models.sam2d.fast_transformer import transformer
from voxsam.models.sam2d.mask_decoder import MaskDecoder
from voxsam.models.sam2d.prompt_encoder import PromptEncoder

BAND_BYTES = 1 << 20  # widest upscaling intermediate per band (fits a core's L2 cache)


_EXACT = [0]  # depth of `exact_decoder` contexts (process-wide)


@contextmanager
def exact_decoder() -> Iterator[None]:
    """Within it, `decode_prompts` runs the exact modules even with autograd off (process-wide: for
    benchmarks and checks, e.g. ``benchmarks/slice2d_latency.py``)."""
    _EXACT[0] += 1
    try:
        yield
    finally:
        _EXACT[0] -= 1


def enabled(mask_decoder: MaskDecoder) -> bool:
    """Whether `decode_prompts` takes the fast path now: autograd off, no `exact_decoder`, supported."""
    return not torch.is_grad_enabled() and _EXACT[0] == 0 and supported(mask_decoder)


def supported(mask_decoder: MaskDecoder) -> bool:
    """Whether `fast_decode` handles this decoder (2 x 2 stride-2 upscaling as built by `MaskDecoder`)."""
    up = list(mask_decoder.output_upscaling)
    if len(up) != 5 or not isinstance(up[0], nn.ConvTranspose2d) or not isinstance(up[3], nn.ConvTranspose2d):
        return False
    if not isinstance(up[1], LayerNorm2d) or not isinstance(up[2], nn.GELU) or not isinstance(up[4], nn.GELU):
        return False
    for conv in (up[0], up[3]):
        if tuple(conv.kernel_size) != (2, 2) or tuple(conv.stride) != (2, 2) or tuple(conv.padding) != (0, 0) \
                or tuple(conv.output_padding) != (0, 0) or conv.groups != 1 or tuple(conv.dilation) != (1, 1):
            return False
    return all(exact_gelu(m) for m in (up[2], up[4]))


def exact_gelu(m: nn.Module) -> bool:
    """True for the exact (erf) GELU, the only one the fused kernel and this path apply."""
    return isinstance(m, nn.GELU) and m.approximate == "none"


# ---------------------------------------------------------------------------- upscaling
def _transposed_as_linear(conv: nn.ConvTranspose2d) -> tuple[Tensor, Tensor]:
    """A 2 x 2 stride-2 transposed convolution (Cin -> Cout) as a linear map Cin -> (dy, dx, Cout).

    Returns:
        weight (4 * Cout, Cin) and bias (4 * Cout,), output features ordered (dy, dx, c).
    """
    w = conv.weight  # (Cin, Cout, 2, 2)
    cin, cout = w.shape[0], w.shape[1]
    weight = w.permute(2, 3, 1, 0).reshape(4 * cout, cin)
    bias = conv.bias if conv.bias is not None else w.new_zeros(cout)
    return weight, bias.repeat(4)


def masks_from_tokens(dec: MaskDecoder, image_tokens: Tensor, mask_tokens: Tensor, size: tuple[int, int],
                      fused: bool, band_bytes: int = BAND_BYTES) -> Tensor:
    """Upscaled image tokens dotted with the hypernetwork outputs of the wanted masks.

    Runs in bands of grid rows so that the widest intermediate stays under ``band_bytes`` (cache sized:
    no fresh pages per call); every output pixel depends on one grid cell only, so bands are exact.

    Args:
        image_tokens: (B, n*n, P) transformer output, token-major (row-major n x n grid).
        mask_tokens: (B, K, C2) hypernetwork outputs of the K masks wanted (C2 = P/8 channels).
        size: (n, n) grid.
        fused: apply the second GELU inside oneDNN's linear kernel.
    Returns:
        (B, K, 4n, 4n) mask logits.
    """
    up = dec.output_upscaling
    conv1, norm, conv2 = up[0], up[1], up[3]
    assert isinstance(conv1, nn.ConvTranspose2d) and isinstance(conv2, nn.ConvTranspose2d)
    assert isinstance(norm, LayerNorm2d)
    b, _, p = image_tokens.shape
    n_h, n_w = size
    w1, b1 = _transposed_as_linear(conv1)
    w2, b2 = _transposed_as_linear(conv2)
    c1, c2 = w1.shape[0] // 4, w2.shape[0] // 4
    k = mask_tokens.shape[1]
    hyper_t = mask_tokens.transpose(1, 2)  # (B, C2, K)
    grid = image_tokens.view(b, n_h, n_w, p)
    out = image_tokens.new_empty(b, k, 4 * n_h, 4 * n_w)
    rows = max(1, min(n_h, band_bytes // max(1, b * n_w * 16 * c2 * image_tokens.element_size())))
    for y0 in range(0, n_h, rows):
        y1 = min(n_h, y0 + rows)
        r = y1 - y0
        x = F.linear(grid[:, y0:y1], w1, b1).view(b, r * n_w * 4, c1)  # pixels (y, x, dy, dx)
        x = torch.ops.aten.gelu_(F.layer_norm(x, (c1,), norm.weight, norm.bias, norm.eps))
        if fused:
            x = torch.ops.mkldnn._linear_pointwise(x, w2, b2, "gelu", [], "none")
        else:
            x = torch.ops.aten.gelu_(F.linear(x, w2, b2))
        logits = torch.bmm(x.view(b, -1, c2), hyper_t)  # (B, pixels (y, x, dy, dx, dY, dX), K)
        logits = logits.view(b, r, n_w, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6)
        out[:, :, 4 * y0:4 * y1] = logits.reshape(b, k, 4 * r, 4 * n_w)
    return out


# ---------------------------------------------------------------------------- decoder
def image_tokens_in(prompt_encoder: PromptEncoder, embeddings: Tensor, masks: Tensor | None) -> Tensor:
    """Embedding + dense prompt embedding, token-major: (B, P, n, n) -> (B, n*n, P) contiguous.

    The dense embedding is never formed channels-first: without a mask prompt ``no_mask_embed`` is added
    during the one layout pass; with one, the 1 x 1 convolution closing ``mask_downscaling`` is applied as
    a matrix product accumulated into the tokens.
    """
    b, p, n_h, n_w = embeddings.shape
    keys = embeddings.new_empty(b, n_h, n_w, p)
    grid = embeddings.permute(0, 2, 3, 1)
    last = prompt_encoder.mask_downscaling[-1]
    if masks is None:
        torch.add(grid, prompt_encoder.no_mask_embed.weight[0], out=keys)
    elif isinstance(last, nn.Conv2d) and tuple(last.kernel_size) == (1, 1) and tuple(last.stride) == (1, 1) \
            and last.bias is not None and last.groups == 1:
        hidden = prompt_encoder.mask_downscaling[:-1](masks.to(embeddings.dtype))  # (B, C, n, n)
        c = hidden.shape[1]
        torch.add(grid, last.bias, out=keys)
        keys.view(-1, p).addmm_(hidden.permute(0, 2, 3, 1).reshape(-1, c), last.weight.view(p, c).t())
    else:
        torch.add(grid, prompt_encoder.embed_mask(masks.to(embeddings.dtype)).permute(0, 2, 3, 1), out=keys)
    return keys.view(b, n_h * n_w, p)


def fast_decode(prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder, prompts: Prompts,
                multimask: bool = False) -> tuple[Tensor, Tensor]:
    """`decode_prompts` with the fast path (call with autograd off; see the module docstring).

    Args:
        prompts: checked `Prompts` (embeddings (B, P, n, n), possibly an expanded view).
        multimask: the M multimask outputs instead of the single mask.
    Returns:
        low-res logits (B, 1 or M, 4n, 4n) and IoU (B, 1 or M), as `MaskDecoder.forward`.
    """
    from voxsam.models.sam2d.cpu import fused_ops_available

    emb = prompts.embeddings
    dec = mask_decoder
    w = prompt_encoder.no_mask_embed.weight
    sparse, _ = prompt_encoder(prompts.points, prompts.labels, prompts.boxes, None, prompts.batch)
    keys = image_tokens_in(prompt_encoder, emb.to(w.dtype), prompts.mask_input)
    b, _, n_h, n_w = emb.shape
    out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
    pe = prompt_encoder.get_dense_pe(token_major=True)
    hs, image_tokens = transformer(dec.transformer, keys, pe, tokens)
    sel = range(1, dec.num_mask_tokens) if multimask else range(0, 1)
    hyper = torch.stack([_mlp(dec.output_hypernetworks_mlps[i], hs[:, 1 + i]) for i in sel], dim=1)
    fused = keys.device.type == "cpu" and keys.dtype == torch.float32 and fused_ops_available()
    masks = masks_from_tokens(dec, image_tokens, hyper, (n_h, n_w), fused)
    iou = dec.iou_prediction_head(hs[:, 0])
    return masks, iou[:, sel.start:sel.stop]


def _mlp(m: nn.Module, x: Tensor) -> Tensor:
    assert isinstance(m, MLP)
    return m(x)
