"""`Memory3D` (SAM2-3dMed on LiteMedSAM embeddings) and `build_memory3d`.

    from voxsam.models.memory3d import build_memory3d, select_memories
    from voxsam.models.sam2d import load_litemedsam
    model = build_memory3d("litemedsam_mem", sam2d=load_litemedsam()).eval()
    # emb_k: (1, 256, 64, 64) LiteMedSAM embedding of slice k (voxsam.engines.slice2d.slices.SliceModel)
    cond = model.condition(emb_k, [], k)                       # prompted slice: no memory yet
    logits, iou = model.decode(cond, boxes=box)                # (1, 1, 256, 256), (1, 1)
    bank = [model.memorize(emb_k, logits, k, conditioning=True)]
    cond = model.condition(emb_k1, select_memories(bank, k + 1), k + 1)
    logits, iou = model.decode(cond)                           # no prompt: the memory carries the object
    bank.append(model.memorize(emb_k1, logits, k + 1))

The frozen image encoder is not part of the model: it works on embeddings (B, P, n, n) and low-res
mask logits (B, 1, 4n, 4n) on the 4n x 4n model-input grid (LiteMedSAM: (B, 256, 64, 64) and
(B, 1, 256, 256)). Every module here is trainable. Methods follow the caller's grad mode (wrap them in
``torch.inference_mode()`` for inference); no module has batch statistics, so train/eval mode changes
nothing but is kept for convention.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import Tensor, nn

from voxsam.errors import ConfigError, InvalidImageError
from voxsam.models.memory3d.bank import Memory
from voxsam.models.memory3d.config import Memory3DConfig, get_config
from voxsam.models.memory3d.decoder_weights import load_decoder_weights
from voxsam.models.memory3d.heads import BoundaryHead, SRPPHead, pool_features
from voxsam.models.memory3d.memory_attention import MemoryAttention
from voxsam.models.memory3d.memory_encoder import MemoryEncoder
from voxsam.models.sam2d.decoding import check_prompts, decode_prompts, finite
from voxsam.models.sam2d.mask_decoder import MaskDecoder
from voxsam.models.sam2d.prompt_encoder import PromptEncoder
from voxsam.models.sam2d.transformer import TwoWayTransformer

if TYPE_CHECKING:  # pragma: no cover
    from voxsam.models.sam2d.build import Sam2D

#: the two modules shared with `Sam2D` (same classes, key names and weights as LiteMedSAM's)
DECODER_PREFIXES = ("prompt_encoder.", "mask_decoder.")


class Memory3D(nn.Module):
    """SAM2-style memory model over slices: prompt encoder, mask decoder, memory encoder, memory attention,
    and the optional SRPP and boundary heads.

    Attributes:
        config: the `Memory3DConfig` it was built from.
        prompt_encoder, mask_decoder: SAM's (as `Sam2D`'s; LiteMedSAM's weights fit).
        memory_encoder: `MemoryEncoder`. memory_attention: `MemoryAttention`.
        srpp_head: `SRPPHead` or None (``config.srpp``). boundary_head: `BoundaryHead` or None (``config.bd``).
        encoder_tail: the slice encoder's last stage + neck (float32 tensors named ``image_encoder.layers.*`` /
            ``image_encoder.neck.*``) whose embeddings the model was trained on, or None for the released
            LiteMedSAM encoder's. Frozen, not a parameter: saved and loaded with the weights, applied by the
            engine to its encoder (`voxsam.models.memory3d.apply_encoder_tail`).
        mask_threshold: logit threshold of a foreground pixel (0.0).
    """

    mask_threshold: float = 0.0

    def __init__(self, config: Memory3DConfig, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder,
                 memory_encoder: MemoryEncoder, memory_attention: MemoryAttention,
                 srpp_head: SRPPHead | None = None, boundary_head: BoundaryHead | None = None) -> None:
        super().__init__()
        self.config = config
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.memory_encoder = memory_encoder
        self.memory_attention = memory_attention
        self.srpp_head = srpp_head
        self.boundary_head = boundary_head
        self.encoder_tail: dict[str, Tensor] | None = None

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.prompt_encoder.no_mask_embed.weight.device

    def _check_embedding(self, embedding: Any, what: str = "embedding") -> Tensor:
        c = self.config
        p, n = c.embed_dim, c.embedding_size
        if not isinstance(embedding, Tensor) or embedding.ndim != 4 or tuple(embedding.shape[1:]) != (p, n, n):
            shape = tuple(embedding.shape) if isinstance(embedding, Tensor) else type(embedding).__name__
            raise InvalidImageError(f"Memory3D: {what} must have shape (B, {p}, {n}, {n}), got {shape}")
        w = self.prompt_encoder.no_mask_embed.weight
        embedding = embedding.to(device=w.device, dtype=w.dtype)
        if not finite(embedding):
            raise InvalidImageError(f"Memory3D: {what} contains NaN or infinite values")
        return embedding

    # ------------------------------------------------------------------ inference / training API
    def condition(self, embedding: Tensor, bank: Sequence[Memory], index: float | Tensor = 0) -> Tensor:
        """The current slice's embedding conditioned on the memory bank.

        Args:
            embedding: (B, P, n, n) image embedding of the current slice ((B, 256, 64, 64)).
            bank: memories from `memorize` (typically ``select_memories(all, index, cfg.max_bank,
                cfg.max_conditioning)``); empty for a slice without memory (the first prompted slice).
            index: the current slice's index along the propagation axis (int, or (B,) tensor); each
                memory's signed offset is ``memory.index - index``.
        Returns:
            (B, P, n, n) conditioned embedding, the input of `decode`, `boundary` and `pool_features`.
            Equal to ``embedding`` for a non-empty bank at initialisation (zero-initialised output).
        Raises:
            InvalidImageError: wrong shape or non-finite values.
        """
        embedding = self._check_embedding(embedding)
        return self.memory_attention(embedding, list(bank), index)

    def decode(self, conditioned: Tensor, points: Tensor | None = None, labels: Tensor | None = None,
               boxes: Tensor | None = None, mask_input: Tensor | None = None,
               multimask: bool = False) -> tuple[Tensor, Tensor]:
        """Mask logits from a conditioned embedding and optional prompts (same semantics as `Sam2D.decode`).

        Args:
            conditioned: (B, P, n, n) from `condition`, or (1, P, n, n) shared by all B prompt sets.
            points: (B, N, 2) (x, y) in input pixels of the S x S model input, or None.
            labels: (B, N) 1 positive / 0 negative / -1 padding; None: all positive.
            boxes: (B, 4) or (B, K, 4) x0, y0, x1, y1 input pixels, or None.
            mask_input: (B, 1, 4n, 4n) dense mask prompt (previous low-res logits), or None.
            multimask: return the M = 3 multimask outputs instead of the single mask.
            With no prompt at all (a propagated slice) the decoder sees only the conditioned embedding.
        Returns:
            low-res logits (B, 1 or M, 4n, 4n) ((B, 1, 256, 256)) and predicted IoU (B, 1 or M).
        Raises:
            PromptError: bad shapes, NaN/inf coordinates, labels outside {-1, 0, 1}, batch mismatch.
        """
        c = self.config
        prompts = check_prompts(conditioned, points, labels, boxes, mask_input, embed_dim=c.embed_dim,
                                embedding_size=c.embedding_size, mask_size=c.mask_size, device=self.device)
        return decode_prompts(self.prompt_encoder, self.mask_decoder, prompts, multimask)

    def memorize(self, embedding: Tensor, mask_logits: Tensor, index: float | Tensor,
                 conditioning: bool = False) -> Memory:
        """A memory of a decided slice.

        Args:
            embedding: (B, P, n, n) the slice's image embedding (not conditioned, as SAM2).
            mask_logits: (B, 1, 4n, 4n) its low-res mask logits (from `decode`, or a user mask as
                large +/- logits, e.g. ``(mask * 2 - 1) * 10``).
            index: the slice's index along the propagation axis (int, or (B,) tensor).
            conditioning: True for a prompted / corrected slice (kept by the bank as a conditioning
                memory), False for a propagated one.
        Returns:
            `Memory` with features (B, D, n, n) ((B, 64, 64, 64)) and pos (1, D, n, n).
        Raises:
            InvalidImageError: wrong shapes or non-finite values.
        """
        embedding = self._check_embedding(embedding)
        m = self.config.mask_size
        if not isinstance(mask_logits, Tensor) or mask_logits.ndim != 4 or tuple(mask_logits.shape[1:]) != (1, m, m) \
                or mask_logits.shape[0] not in (1, embedding.shape[0]):
            shape = tuple(mask_logits.shape) if isinstance(mask_logits, Tensor) else type(mask_logits).__name__
            raise InvalidImageError(f"Memory3D.memorize: mask_logits must have shape (B, 1, {m}, {m}), got {shape}")
        mask_logits = mask_logits.to(embedding.device)
        if not finite(mask_logits):
            raise InvalidImageError("Memory3D.memorize: mask_logits contain NaN")
        features, pos = self.memory_encoder(embedding, mask_logits)
        return Memory(features, pos, index, bool(conditioning))

    def boundary(self, conditioned: Tensor) -> Tensor:
        """(B, P, n, n) conditioned embedding -> (B, 1, 4n, 4n) boundary logits (needs ``config.bd``)."""
        if self.boundary_head is None:
            raise ConfigError("this Memory3D has no boundary head (config bd=false)")
        return self.boundary_head(conditioned)

    def srpp(self, f_i: Tensor, f_j: Tensor) -> Tensor:
        """Predicted signed offsets j - i (N,) from pooled features (N, P) of slices i and j (needs ``config.srpp``).

        Pooled features: ``pool_features(conditioned)`` (the global average of `condition`'s output).
        """
        if self.srpp_head is None:
            raise ConfigError("this Memory3D has no SRPP head (config srpp=false)")
        return self.srpp_head(f_i, f_j)

    def srpp_loss(self, conditioned: Tensor, positions: Tensor) -> Tensor:
        """SRPP loss of a window: MSE of predicted j - i over all ordered pairs (see `SRPPHead.loss`).

        Args:
            conditioned: (W, P, n, n) conditioned embeddings of the window's slices (or already pooled
                (W, P); or (G, W, P) for G windows).
            positions: (W,) (or (G, W)) their slice indices.
        Returns:
            scalar loss (the issue's weight 0.01 is the training family's business).
        """
        if self.srpp_head is None:
            raise ConfigError("this Memory3D has no SRPP head (config srpp=false)")
        feats = pool_features(conditioned) if conditioned.ndim == 4 else conditioned
        return self.srpp_head.loss(feats, positions)

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Every trained tensor of the model (the whole state dict: the frozen encoder is not in it),
        detached; what `save_memory3d` writes."""
        return {k: v.detach() for k, v in self.state_dict().items()}


def decoder_config_of(config: Memory3DConfig) -> dict[str, int]:
    """The `Sam2DConfig` fields that fix the prompt encoder and mask decoder, from a `Memory3DConfig`."""
    return dict(image_size=config.image_size, prompt_embed_dim=config.embed_dim, mask_in_chans=config.mask_in_chans,
                num_multimask_outputs=config.num_multimask_outputs, iou_head_depth=config.iou_head_depth,
                iou_head_hidden_dim=config.iou_head_hidden_dim, decoder_depth=config.decoder_depth,
                decoder_num_heads=config.decoder_num_heads, decoder_mlp_dim=config.decoder_mlp_dim,
                attention_downsample_rate=config.attention_downsample_rate)


def build_memory3d(config: Memory3DConfig | str | Mapping[str, Any] = "litemedsam_mem", sam2d: "Sam2D | None" = None,
                   decoder_weights: Any = None, **overrides: Any) -> Memory3D:
    """Build a `Memory3D`, its prompt encoder + mask decoder optionally from a 2D SAM.

    Args:
        config: a preset name ("litemedsam_mem"), a `Memory3DConfig` or a dict of its fields.
        sam2d: a `Sam2D` (e.g. ``voxsam.models.sam2d.load_litemedsam()``) whose prompt encoder and mask
            decoder weights are copied (the modules are not shared).
        decoder_weights: a decoder file (a state dict of ``prompt_encoder.*`` + ``mask_decoder.*``, as
            slice2d's), or "bundled" for ``voxsam/weights/slice2d_decoder.pt``; loaded after ``sam2d``.
        **overrides: config fields to change.
    Returns:
        the model in nn.Module's default train mode; the memory modules and heads are freshly
        initialised (memory attention's output and ``no_memory`` at zero).
    Raises:
        ConfigError: unknown preset, inconsistent sizes, or a ``sam2d`` of other decoder sizes.
        CheckpointError: an unreadable or unfitting ``decoder_weights`` file.
    """
    cfg = get_config(config)
    if overrides:
        cfg = cfg.replace(**overrides)
    p, n = cfg.embed_dim, cfg.embedding_size
    prompt_encoder = PromptEncoder(p, n, cfg.image_size, cfg.mask_in_chans)
    transformer = TwoWayTransformer(cfg.decoder_depth, p, cfg.decoder_num_heads, cfg.decoder_mlp_dim,
                                    cfg.attention_downsample_rate)
    mask_decoder = MaskDecoder(p, transformer, cfg.num_multimask_outputs, cfg.iou_head_depth, cfg.iou_head_hidden_dim)
    memory_encoder = MemoryEncoder(p, cfg.memory_dim, cfg.mask_down_chans, cfg.fuser_depth, cfg.fuser_mlp_ratio,
                                   cfg.mask_sigmoid_scale, cfg.mask_sigmoid_bias)
    memory_attention = MemoryAttention(p, cfg.memory_dim, cfg.num_layers, cfg.num_heads, cfg.mlp_dim,
                                       cfg.attention_stride, cfg.memory_pool, cfg.offset_feats, cfg.offset_temperature)
    srpp_head = SRPPHead(p, cfg.srpp_hidden_dim) if cfg.srpp else None
    boundary_head = BoundaryHead(p, cfg.boundary_dim, cfg.boundary_heads, cfg.boundary_stride) if cfg.bd else None
    model = Memory3D(cfg, prompt_encoder, mask_decoder, memory_encoder, memory_attention, srpp_head, boundary_head)
    if sam2d is not None:
        want = decoder_config_of(cfg)
        have = sam2d.config.to_dict()
        diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
        if sam2d.config.embedding_size != n:
            diff["embedding_size"] = (sam2d.config.embedding_size, n)
        if diff:
            raise ConfigError("sam2d does not fit this Memory3DConfig: " +
                              ", ".join(f"{k} {a} != {b}" for k, (a, b) in sorted(diff.items())))
        model.prompt_encoder.load_state_dict(sam2d.prompt_encoder.state_dict())
        model.mask_decoder.load_state_dict(sam2d.mask_decoder.state_dict())
    if decoder_weights is not None:
        load_decoder_weights(model, decoder_weights)
    return model
