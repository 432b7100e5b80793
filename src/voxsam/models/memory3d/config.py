"""`Memory3DConfig`: every size of the SAM2-style memory model on LiteMedSAM embeddings, and presets.

The model (see ``build.py``) works on embeddings of a frozen 2D image encoder that it does not
contain (LiteMedSAM: (B, 256, 64, 64) for a 256 x 256 input) and on low-res mask logits on the
4n x 4n grid ((B, 1, 256, 256)):

- ``prompt_encoder`` + ``mask_decoder``: SAM's, the same classes and key names as `Sam2D`'s, so
  LiteMedSAM's (or slice2d's fine-tuned) weights load into them;
- ``memory_encoder``: mask + embedding -> memory features (B, memory_dim, n, n);
- ``memory_attention``: the current embedding attends to the bank of memories (self-attention,
  cross-attention, MLP) on a grid pooled by ``attention_stride``; its residual is added back;
- ``srpp_head`` (``srpp``) and ``boundary_head`` (``bd``): SAM2-3dMed's two auxiliary heads.

Presets (``Memory3DConfig.preset(name)`` or ``get_config(name)``):

- ``litemedsam_mem``: LiteMedSAM's decoder sizes; memory_dim 64; memory attention on 32 x 32 tokens
  (stride 2) to 1024 tokens per memory (pool 2); 2 layers, 8 heads, MLP 1024; 6 recent memories plus
  up to 2 conditioning ones; SRPP and BD on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from voxsam.errors import ConfigError
from voxsam.models.config_fields import PresetConfig


@dataclass(frozen=True)
class Memory3DConfig(PresetConfig):
    """Sizes of a `Memory3D` model.

    Attributes:
        image_size: S, side of the 2D model input (prompt coordinates are input pixels); 256.
        embedding_size: n, side of the image embedding (64); the mask grid is 4n (256).
        embed_dim: P, channels of the embedding, prompt tokens and decoder (256).
        mask_in_chans, num_multimask_outputs, iou_head_depth, iou_head_hidden_dim, decoder_depth,
            decoder_num_heads, decoder_mlp_dim, attention_downsample_rate: SAM's prompt encoder and
            mask decoder, as `voxsam.models.sam2d.Sam2DConfig` (LiteMedSAM: 16, 3, 3, 256, 2, 8, 2048, 2).
        memory_dim: D, channels of a memory's features (64).
        mask_down_chans: channels of the two stride-2 convolutions that bring the 4n x 4n mask to
            n x n in the memory encoder ((16, 64)); a 1 x 1 convolution then lifts them to P.
        fuser_depth: conv blocks (depthwise 7 x 7, LayerNorm2d, pointwise MLP, residual) fusing mask
            and embedding in the memory encoder (2).
        fuser_mlp_ratio: hidden width of those blocks' pointwise MLP = ratio * P (2.0).
        mask_sigmoid_scale, mask_sigmoid_bias: the memory encoder sees
            ``sigmoid(logits) * scale + bias`` (SAM2's 20 and -10).
        attention_stride: the current embedding is average-pooled by this factor to the query tokens
            of memory attention ((n / stride)^2 = 1024 tokens); the residual is upsampled back (2).
        memory_pool: memory features are average-pooled by this factor to key/value tokens
            ((n / pool)^2 = 1024 tokens per memory slice) (2).
        num_layers, num_heads, mlp_dim: memory attention (2, 8, 1024).
        offset_feats: sinusoid frequencies of the slice-offset encoding (32: 64 features before the
            projection to D).
        offset_temperature: longest period of the slice-offset sinusoids, in slices (10000).
        max_bank: most recent (non-conditioning) memories a bank keeps (6), see `select_memories`.
        max_conditioning: conditioning (prompted) memories a bank keeps, nearest first (2).
        srpp: build the SRPP head (slice relative position prediction).
        srpp_hidden_dim: hidden width of its MLP (256).
        bd: build the boundary-detection head.
        boundary_dim: channels of the boundary branch (its queries) (128).
        boundary_heads: heads of its cross-attention (4).
        boundary_stride: the boundary queries and the slice features they attend to are pooled by
            this factor ((n / stride)^2 = 1024 boundary queries) (2).
    """

    image_size: int = 256
    embedding_size: int = 64
    embed_dim: int = 256
    mask_in_chans: int = 16
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    memory_dim: int = 64
    mask_down_chans: tuple[int, ...] = (16, 64)
    fuser_depth: int = 2
    fuser_mlp_ratio: float = 2.0
    mask_sigmoid_scale: float = 20.0
    mask_sigmoid_bias: float = -10.0
    attention_stride: int = 2
    memory_pool: int = 2
    num_layers: int = 2
    num_heads: int = 8
    mlp_dim: int = 1024
    offset_feats: int = 32
    offset_temperature: float = 10000.0
    max_bank: int = 6
    max_conditioning: int = 2
    srpp: bool = True
    srpp_hidden_dim: int = 256
    bd: bool = True
    boundary_dim: int = 128
    boundary_heads: int = 4
    boundary_stride: int = 2

    def __post_init__(self) -> None:
        v = self.mask_down_chans
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
            raise ConfigError(f"invalid Memory3DConfig: mask_down_chans={v!r} must be a sequence of integers")
        object.__setattr__(self, "mask_down_chans", tuple(int(c) for c in v))
        self.validate()

    @property
    def mask_size(self) -> int:
        """Side of the low-res mask logits = 4 * n (256)."""
        return 4 * self.embedding_size

    @property
    def query_size(self) -> int:
        """Side of the memory-attention query grid = n / attention_stride (32)."""
        return self.embedding_size // self.attention_stride

    @property
    def tokens_per_memory(self) -> int:
        """Key/value tokens of one memory slice = (n / memory_pool)^2 (1024)."""
        return (self.embedding_size // self.memory_pool) ** 2

    def validate(self) -> None:
        """Raise `ConfigError` naming the first inconsistent value."""
        def bad(msg: str) -> ConfigError:
            return ConfigError(f"invalid Memory3DConfig: {msg}")

        for name in ("image_size", "embedding_size", "embed_dim", "mask_in_chans", "num_multimask_outputs",
                     "iou_head_depth", "iou_head_hidden_dim", "decoder_num_heads", "decoder_mlp_dim",
                     "attention_downsample_rate", "memory_dim", "attention_stride", "memory_pool",
                     "num_heads", "mlp_dim", "offset_feats", "srpp_hidden_dim", "boundary_dim",
                     "boundary_heads", "boundary_stride"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise bad(f"{name}={v!r} must be a positive integer")
        for name in ("decoder_depth", "fuser_depth", "num_layers", "max_bank", "max_conditioning"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise bad(f"{name}={v!r} must be a non-negative integer")
        for name in ("srpp", "bd"):
            if not isinstance(getattr(self, name), bool):
                raise bad(f"{name}={getattr(self, name)!r} must be true or false")
        if len(self.mask_down_chans) != 2 or any(c <= 0 for c in self.mask_down_chans):
            raise bad(f"mask_down_chans={self.mask_down_chans} must be two positive integers (4x down)")
        if not self.fuser_mlp_ratio > 0 or not self.offset_temperature > 1:
            raise bad("fuser_mlp_ratio must be > 0 and offset_temperature > 1")
        p, n = self.embed_dim, self.embedding_size
        if p % 8 or p % self.decoder_num_heads or (p // self.attention_downsample_rate) % self.decoder_num_heads:
            raise bad(f"embed_dim {p} must be divisible by 8, by decoder_num_heads and (/ attention_downsample_rate) "
                      f"by decoder_num_heads")
        if self.mask_in_chans % 4:
            raise bad(f"mask_in_chans {self.mask_in_chans} must be divisible by 4")
        if p % self.num_heads or p % 4:
            raise bad(f"embed_dim {p} must be divisible by num_heads {self.num_heads} and by 4 (2D sine encoding)")
        if self.memory_dim % 4:
            raise bad(f"memory_dim {self.memory_dim} must be divisible by 4 (2D sine encoding)")
        if self.boundary_dim % self.boundary_heads or self.boundary_dim % 8:
            raise bad(f"boundary_dim {self.boundary_dim} must be divisible by 8 and by boundary_heads "
                      f"{self.boundary_heads}")
        for name in ("attention_stride", "memory_pool", "boundary_stride"):
            if n % getattr(self, name):
                raise bad(f"embedding_size {n} is not a multiple of {name} {getattr(self, name)}")

    family: ClassVar[str] = "Memory3D"

    @classmethod
    def presets(cls) -> Mapping[str, Mapping[str, Any]]:
        return PRESETS



#: preset name -> every field of `Memory3DConfig` (explicit, so that a change of defaults cannot
#: silently change a trained architecture).
PRESETS: dict[str, dict[str, Any]] = {
    "litemedsam_mem": dict(
        image_size=256, embedding_size=64, embed_dim=256, mask_in_chans=16, num_multimask_outputs=3,
        iou_head_depth=3, iou_head_hidden_dim=256, decoder_depth=2, decoder_num_heads=8,
        decoder_mlp_dim=2048, attention_downsample_rate=2,
        memory_dim=64, mask_down_chans=(16, 64), fuser_depth=2, fuser_mlp_ratio=2.0,
        mask_sigmoid_scale=20.0, mask_sigmoid_bias=-10.0,
        attention_stride=2, memory_pool=2, num_layers=2, num_heads=8, mlp_dim=1024,
        offset_feats=32, offset_temperature=10000.0, max_bank=6, max_conditioning=2,
        srpp=True, srpp_hidden_dim=256, bd=True, boundary_dim=128, boundary_heads=4, boundary_stride=2,
    ),
}


def get_config(name_or_config: "str | Memory3DConfig | Mapping[str, Any]") -> Memory3DConfig:
    """Resolve a preset name, a dict (``from_dict``) or a config (returned as is)."""
    if isinstance(name_or_config, Memory3DConfig):
        return name_or_config
    if isinstance(name_or_config, str):
        return Memory3DConfig.preset(name_or_config)
    if isinstance(name_or_config, Mapping):
        return Memory3DConfig.from_dict(name_or_config)
    raise ConfigError(f"expected a preset name, dict or Memory3DConfig, got {type(name_or_config).__name__}")
