"""`Sam3DConfig`: every size and switch of a SAM-Med3D model, with named presets.

The first eight fields carry the names of the golden file's ``config`` dict; the rest have defaults
that reproduce the released ``vit_b_ori`` model (``sam_med3d.pth`` / ``sam_med3d_turbo.pth``).

Presets (``Sam3DConfig.preset(name)`` or ``get_config(name)``):

- ``tiny``: the golden configuration (embed 96, depth 4, 4 heads, global blocks 1 and 3, prompt dim 48).
- ``small``: embed 256, depth 6, 8 heads, global blocks 2 and 5, prompt dim 192, decoder MLP 1024;
  9.0M parameters (encoder 7.0M), ~7 GFLOP per 128^3 encoder pass (vit_b_ori: ~90), so a
  forward+backward step takes about a second per 2 volumes on a 2-core CPU.
- ``vit_b_ori``: the released model (embed 768, depth 12, 12 heads, global 2/5/8/11, prompt dim 384).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping

from voxsam.errors import ConfigError
from voxsam.models.config_fields import PresetConfig

RelPosForm = Literal["released", "decomposed"]
AttentionMode = Literal["reference", "fast"]
ComputeDtype = Literal["float32", "bfloat16", "int8"]


@dataclass(frozen=True)
class Sam3DConfig(PresetConfig):
    """Sizes and switches of a SAM-Med3D model.

    Attributes:
        image_size: side of the cubic input volume (voxels), 128 for the released model.
        patch_size: side of a patch; the token grid side is ``image_size // patch_size``.
        encoder_embed_dim: ViT width C.
        encoder_depth: number of ViT blocks.
        encoder_num_heads: attention heads per block (head dim = C / heads).
        encoder_global_attn_indexes: blocks that attend over the whole token grid; the others
            attend in one ``window_size``^3 window that zero-pads the grid (released behaviour).
        window_size: side S of the windowed blocks' attention grid (14 released). Must be >= the
            token grid side (one window) - the released model never partitions into several windows.
        prompt_embed_dim: P, channels of the image embedding, prompts and mask decoder.
        mlp_ratio: encoder MLP hidden = mlp_ratio * C.
        use_rel_pos: relative-position terms in the encoder attention.
        rel_pos: "released" (the mis-aligned broadcast the released weights were trained with) or
            "decomposed" (the textbook form).
        attention: "reference" (the released computation, literally: all heads on the padded 14^3
            window) or "fast" (the same function in exact closed form; default).
        compute_dtype: precision of ``Sam3D.encode``: "float32", "bfloat16" (autocast; fast only with
            native bf16) or "int8" (CPU inference: int8 linear layers in the second half of the
            encoder blocks; see ``build.py``).
        mask_in_chans: channels of the mask downscaling (16).
        num_multimask_outputs: masks in multimask mode (3); the decoder has one more mask token.
        iou_head_depth, iou_head_hidden_dim: IoU prediction MLP (3 layers, 256 hidden).
        decoder_depth, decoder_num_heads, decoder_mlp_dim: two-way transformer (2, 8, 2048).
        box_prompts: add this project's learned box-corner embeddings
            (``prompt_encoder.box_corner_embed.weight``, (2, P)); absent from released checkpoints.
    """

    image_size: int = 128
    patch_size: int = 16
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    prompt_embed_dim: int = 384
    mlp_ratio: float = 4.0
    use_rel_pos: bool = True
    rel_pos: RelPosForm = "released"
    attention: AttentionMode = "fast"
    compute_dtype: ComputeDtype = "float32"
    mask_in_chans: int = 16
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    box_prompts: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder_global_attn_indexes",
                           tuple(int(i) for i in self.encoder_global_attn_indexes))
        self.validate()

    # ----------------------------------------------------------------- derived sizes
    @property
    def grid_size(self) -> int:
        """Token grid side n = image_size // patch_size (8 for 128 / 16)."""
        return self.image_size // self.patch_size

    @property
    def mask_size(self) -> int:
        """Side of the low-res mask logits = 4 * grid side (32)."""
        return 4 * self.grid_size

    @property
    def head_dim(self) -> int:
        return self.encoder_embed_dim // self.encoder_num_heads

    def validate(self) -> None:
        """Raise `ConfigError` naming the first inconsistent value."""
        def bad(msg: str) -> ConfigError:
            return ConfigError(f"invalid Sam3DConfig: {msg}")

        for name in ("image_size", "patch_size", "encoder_embed_dim", "encoder_depth",
                     "encoder_num_heads", "prompt_embed_dim", "mask_in_chans",
                     "iou_head_depth", "iou_head_hidden_dim", "decoder_num_heads", "decoder_mlp_dim"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise bad(f"{name}={v!r} must be a positive integer")
        if self.decoder_depth < 0 or self.num_multimask_outputs < 1:
            raise bad("decoder_depth must be >= 0 and num_multimask_outputs >= 1")
        if self.image_size % self.patch_size:
            raise bad(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.encoder_embed_dim % self.encoder_num_heads:
            raise bad(f"encoder_embed_dim {self.encoder_embed_dim} is not divisible by "
                      f"encoder_num_heads {self.encoder_num_heads}")
        p = self.prompt_embed_dim
        if p % 3 or p % 8 or p % (2 * self.decoder_num_heads):
            raise bad(f"prompt_embed_dim {p} must be divisible by 3, 8 and 2*decoder_num_heads")
        if any(i < 0 or i >= self.encoder_depth for i in self.encoder_global_attn_indexes):
            raise bad(f"encoder_global_attn_indexes {self.encoder_global_attn_indexes} out of "
                      f"range for depth {self.encoder_depth}")
        if self.window_size < self.grid_size and self.window_size != 0:
            raise bad(f"window_size {self.window_size} < token grid {self.grid_size}: several "
                      "windows are not supported (use 0 for global attention everywhere)")
        if self.rel_pos not in ("released", "decomposed"):
            raise bad(f"rel_pos={self.rel_pos!r} (choose 'released' or 'decomposed')")
        if self.attention not in ("reference", "fast"):
            raise bad(f"attention={self.attention!r} (choose 'reference' or 'fast')")
        if self.compute_dtype not in ("float32", "bfloat16", "int8"):
            raise bad(f"compute_dtype={self.compute_dtype!r} (choose 'float32', 'bfloat16' or 'int8')")
        if self.mlp_ratio <= 0:
            raise bad(f"mlp_ratio={self.mlp_ratio!r} must be positive")

    def attn_grid(self, block: int) -> int:
        """Side S of the attention grid of encoder block ``block`` (grid side or window size)."""
        if block in self.encoder_global_attn_indexes or self.window_size == 0:
            return self.grid_size
        return self.window_size

    family: ClassVar[str] = "Sam3D"

    @classmethod
    def presets(cls) -> Mapping[str, Mapping[str, Any]]:
        return PRESETS



PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(image_size=128, patch_size=16, encoder_embed_dim=96, encoder_depth=4,
                 encoder_num_heads=4, encoder_global_attn_indexes=(1, 3), window_size=14,
                 prompt_embed_dim=48),
    "small": dict(image_size=128, patch_size=16, encoder_embed_dim=256, encoder_depth=6,
                  encoder_num_heads=8, encoder_global_attn_indexes=(2, 5), window_size=14,
                  prompt_embed_dim=192, decoder_mlp_dim=1024),
    "vit_b_ori": dict(image_size=128, patch_size=16, encoder_embed_dim=768, encoder_depth=12,
                      encoder_num_heads=12, encoder_global_attn_indexes=(2, 5, 8, 11),
                      window_size=14, prompt_embed_dim=384),
}


def get_config(name_or_config: "str | Sam3DConfig | Mapping[str, Any]") -> Sam3DConfig:
    """Resolve a preset name, a dict (``from_dict``) or a config (returned as is)."""
    if isinstance(name_or_config, Sam3DConfig):
        return name_or_config
    if isinstance(name_or_config, str):
        return Sam3DConfig.preset(name_or_config)
    if isinstance(name_or_config, Mapping):
        return Sam3DConfig.from_dict(name_or_config)
    raise ConfigError(f"expected a preset name, dict or Sam3DConfig, got {type(name_or_config).__name__}")
