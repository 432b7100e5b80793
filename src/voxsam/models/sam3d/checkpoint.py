"""Loading and saving SAM-Med3D checkpoints.

Accepted inputs of `load_sam3d_checkpoint`:

- the released training checkpoint (``sam_med3d.pth``, ``sam_med3d_turbo.pth``): a dict with
  ``epoch, model_state_dict, optimizer_state_dict, ..., args`` where ``args`` is an
  ``argparse.Namespace``. Unpickling it can run code from the file, so it is loaded with
  ``weights_only=False`` only when ``trust=True`` (CLI: ``--trust-checkpoint``), after a warning;
- a plain state dict (optionally wrapped as ``{"state_dict": ...}`` or with ``module.`` prefixes);
- this project's format, written by `save_sam3d_checkpoint`::

      {"format": "voxsam.sam3d", "format_version": 1,
       "config": Sam3DConfig.to_dict(), "model": state_dict, "extra": {...}}

  (only tensors, strings, numbers, lists and dicts: it loads with ``weights_only=True``).

The configuration is taken from the ``config`` argument, else from the file, else inferred from the
tensor shapes. The box-prompt embeddings (`BOX_PROMPT_KEYS`) may be absent: they are initialised
(``randn * 0.02``, fixed seed) and listed in ``LoadReport.newly_initialised``. Every other problem
(missing file, truncated or corrupt file, another architecture, shape mismatch) raises
`voxsam.errors.CheckpointError` with a one-line message.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from voxsam.errors import CheckpointError, ConfigError, OutputPathError
from voxsam.models.sam3d.build import BOX_PROMPT_KEYS, Sam3D, build_sam3d
from voxsam.models.sam3d.config import Sam3DConfig, get_config

log = logging.getLogger(__name__)

FORMAT_TAG = "voxsam.sam3d"
FORMAT_VERSION = 1
_BOX_INIT_SEED = 0
_BOX_INIT_STD = 0.02


@dataclass
class LoadReport:
    """What `load_sam3d_checkpoint` did.

    Attributes:
        path: the file.
        source_format: "released-training", "state-dict" or "voxsam".
        config: the configuration the model was built with.
        config_source: "argument", "file" or "inferred".
        loaded_keys: number of tensors copied from the file.
        newly_initialised: model keys absent from the file and initialised (box prompts).
        ignored_keys: file keys not used (box prompts of a model built without them).
        unsafe_load: True when the file was unpickled with ``weights_only=False`` (``trust=True``).
        metadata: scalar entries of a training checkpoint (epoch, best_dice, ...) or ``extra``.
    """

    path: str
    source_format: str
    config: Sam3DConfig
    config_source: str
    loaded_keys: int
    newly_initialised: list[str] = field(default_factory=list)
    ignored_keys: list[str] = field(default_factory=list)
    unsafe_load: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        c = self.config
        s = (f"loaded {self.loaded_keys} tensors from {self.path} ({self.source_format}; config "
             f"{self.config_source}: embed {c.encoder_embed_dim}, depth {c.encoder_depth}, "
             f"heads {c.encoder_num_heads}, prompt {c.prompt_embed_dim})")
        if self.newly_initialised:
            s += f"; newly initialised: {', '.join(self.newly_initialised)}"
        if self.ignored_keys:
            s += f"; ignored: {', '.join(self.ignored_keys)}"
        return s


# ---------------------------------------------------------------------- reading
def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n|$)", text)
    if m and m.group(1).strip():
        return m.group(1).strip()
    m = re.search(r"WeightsUnpickler error:\s*\n+\s*(.+?)(?:\n|$)", text)
    if m:
        return m.group(1).strip()
    line = text.splitlines()[0].split(". ")[0][:160] if text else ""
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


def _torch_load(path: Path, map_location: Any, weights_only: bool) -> Any:
    # mmap avoids reading a training checkpoint's optimizer state into memory; legacy
    # (non-zip) files cannot be mmapped and are read normally.
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise
    return torch.load(path, map_location=map_location, weights_only=weights_only)


def _read_file(path: Path, map_location: Any, trust: bool) -> tuple[Any, bool]:
    """torch.load with weights_only=True, falling back to weights_only=False only when trusted."""
    try:
        return _torch_load(path, map_location, weights_only=True), False
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" not in msg:
            raise CheckpointError(f"{path}: cannot read checkpoint (corrupt or truncated file): "
                                  f"{_first_line(e)}") from None
        if not trust:
            if "Unsupported global" in msg:
                g = re.search(r"Unsupported global: GLOBAL (\S+)", msg)
                what = f" ({g.group(1)})" if g else ""
                raise CheckpointError(
                    f"{path} contains pickled Python objects{what}, as released SAM-Med3D training "
                    "checkpoints do; unpickling can run code from the file: load it only if you trust "
                    "its source, with trust=True (--trust-checkpoint)") from None
            raise CheckpointError(
                f"{path}: not a readable weights-only checkpoint (corrupt, truncated, or a legacy "
                f"pickle that needs trust=True / --trust-checkpoint): {_first_line(e)}") from None
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - RuntimeError (zip), EOFError, OSError, ...
        raise CheckpointError(f"{path}: cannot read checkpoint (corrupt or truncated file): "
                              f"{_first_line(e)}") from None
    log.warning("loading %s with weights_only=False (trust=True): unpickling runs code from the file, "
                "so it must come from a trusted source", path)
    try:
        return _torch_load(path, map_location, weights_only=False), True
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot read checkpoint (corrupt or truncated file): "
                              f"{_first_line(e)}") from None


def _scalars(d: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for k in keys:
        v = d.get(k)
        if isinstance(v, (int, float, str, bool)):
            out[k] = v
        elif isinstance(v, Tensor) and v.numel() == 1:
            out[k] = v.item()
    return out


def _extract(obj: Any, path: Path) -> tuple[dict[str, Tensor], str, Mapping[str, Any] | None, dict[str, Any]]:
    """(state dict, source format, config dict from the file or None, metadata)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict (state dict or training checkpoint), "
                              f"got {type(obj).__name__}")
    file_cfg = None
    meta: dict[str, Any] = {}
    if "model_state_dict" in obj:
        fmt, state = "released-training", obj["model_state_dict"]
        meta = _scalars(obj, ("epoch", "best_loss", "best_dice"))
    elif obj.get("format") == FORMAT_TAG or ("config" in obj and "model" in obj):
        fmt, state, file_cfg = "voxsam", obj.get("model"), obj.get("config")
        extra = obj.get("extra")
        meta = dict(extra) if isinstance(extra, Mapping) else {}
        version = obj.get("format_version", FORMAT_VERSION)
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise CheckpointError(f"{path}: checkpoint format version {version} is newer than this "
                                  f"voxsam supports ({FORMAT_VERSION})")
    elif isinstance(obj.get("state_dict"), Mapping):
        fmt, state = "state-dict", obj["state_dict"]
    elif obj and all(isinstance(v, Tensor) for v in obj.values()):
        fmt, state = "state-dict", obj
    else:
        top = ", ".join(list(map(str, obj))[:6])
        raise CheckpointError(f"{path}: no model weights found (expected 'model_state_dict', 'model' "
                              f"or a state dict); top-level keys: {top or '(none)'}")
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{path}: the model weights entry is empty or not a dict")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} state-dict entries are not named tensors "
                              f"(first: {bad[0]!r})")
    state = dict(state)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, fmt, file_cfg, meta


# ---------------------------------------------------------------------- config inference
def infer_config(state: Mapping[str, Tensor]) -> Sam3DConfig:
    """Infer a `Sam3DConfig` from released-style key names and shapes.

    Not inferable from shapes and taken as released: ``rel_pos="released"``, ``decoder_num_heads=8``.

    Raises:
        CheckpointError: a key needed for the inference is missing or the shapes are inconsistent.
    """
    def get(k: str) -> Tensor:
        try:
            return state[k]
        except KeyError:
            raise CheckpointError(f"not a SAM-Med3D state dict: missing {k!r} (needed to infer the "
                                  "architecture; pass a config to name it)") from None

    def count(prefix: str, suffix: str) -> int:
        rx = re.compile(re.escape(prefix) + r"(\d+)\." + re.escape(suffix) + "$")
        idx = [int(m.group(1)) for k in state if (m := rx.match(k))]
        return max(idx) + 1 if idx else 0

    try:
        pos = get("image_encoder.pos_embed")
        c, n = int(pos.shape[-1]), int(pos.shape[1])
        patch = int(get("image_encoder.patch_embed.proj.weight").shape[-1])
        depth = count("image_encoder.blocks.", "norm1.weight")
        if depth == 0:
            raise CheckpointError("not a SAM-Med3D state dict: no image_encoder.blocks.*")
        rel0 = state.get("image_encoder.blocks.0.attn.rel_pos_d")
        if rel0 is None:
            raise CheckpointError("cannot infer heads and windows without relative positions; pass a config")
        head_dim = int(rel0.shape[1])
        sizes = [(int(get(f"image_encoder.blocks.{i}.attn.rel_pos_d").shape[0]) + 1) // 2 for i in range(depth)]
        global_idx = tuple(i for i, s in enumerate(sizes) if s == n)
        windows = {s for s in sizes if s != n}
        if len(windows) > 1:
            raise CheckpointError(f"inconsistent window sizes across blocks: {sorted(windows)}")
        window = windows.pop() if windows else 14
        lin1 = get("image_encoder.blocks.0.mlp.lin1.weight")
        p = int(get("image_encoder.neck.0.weight").shape[0])
        dec_depth = count("mask_decoder.transformer.layers.", "norm1.weight")
        # evaluated in this order so that a bad checkpoint fails on the same key/division as before
        num_heads = c // head_dim
        mlp_ratio = int(lin1.shape[0]) / c
        mask_in_chans = int(get("prompt_encoder.mask_downscaling.3.weight").shape[0])
        num_multimask = int(get("mask_decoder.mask_tokens.weight").shape[0]) - 1
        iou_depth = count("mask_decoder.iou_prediction_head.layers.", "weight")
        iou_hidden = int(get("mask_decoder.iou_prediction_head.layers.0.weight").shape[0])
        decoder_mlp_dim = (int(get("mask_decoder.transformer.layers.0.mlp.lin1.weight").shape[0])
                           if dec_depth else Sam3DConfig.decoder_mlp_dim)  # no layers: the default
        if mlp_ratio == int(mlp_ratio):
            mlp_ratio = float(int(mlp_ratio))
        return Sam3DConfig(
            image_size=n * patch, patch_size=patch, encoder_embed_dim=c, encoder_depth=depth,
            encoder_num_heads=num_heads, encoder_global_attn_indexes=global_idx, window_size=window,
            prompt_embed_dim=p, mlp_ratio=mlp_ratio, mask_in_chans=mask_in_chans,
            num_multimask_outputs=num_multimask, iou_head_depth=iou_depth,
            iou_head_hidden_dim=iou_hidden, decoder_depth=dec_depth, decoder_mlp_dim=decoder_mlp_dim,
        )
    except (ConfigError, IndexError, ZeroDivisionError) as e:
        raise CheckpointError(f"cannot infer the SAM-Med3D architecture from the shapes: {e}") from None


# ---------------------------------------------------------------------- loading
def _names(keys: list[str], k: int = 3) -> str:
    more = f", ... (+{len(keys) - k})" if len(keys) > k else ""
    return ", ".join(keys[:k]) + more


def _init_box_embedding(shape: torch.Size, device: Any, dtype: torch.dtype) -> Tensor:
    g = torch.Generator().manual_seed(_BOX_INIT_SEED)
    return (torch.randn(tuple(shape), generator=g) * _BOX_INIT_STD).to(device=device, dtype=dtype)


def load_state_dict_into(model: Sam3D, state: Mapping[str, Tensor], path: str = "<state dict>",
                         assign: bool = False) -> tuple[int, list[str], list[str]]:
    """Check keys and shapes against ``model`` and load.

    Returns:
        (loaded tensor count, newly initialised keys, ignored keys).
    Raises:
        CheckpointError: missing/unexpected keys (other than box prompts) or shape mismatches.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    new_init = [k for k in missing if k in BOX_PROMPT_KEYS]
    ignored = [k for k in unexpected if k in BOX_PROMPT_KEYS]
    missing = [k for k in missing if k not in BOX_PROMPT_KEYS]
    unexpected = [k for k in unexpected if k not in BOX_PROMPT_KEYS]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_names(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
        raise CheckpointError(f"{path}: keys do not match the SAM-Med3D architecture: {'; '.join(parts)}")
    wrong = [f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(f"{path}: {len(wrong)} shape mismatch(es) with the configuration: {_names(wrong, 2)}")
    nonfloat = [k for k, v in state.items() if k in expected and not v.is_floating_point()]
    if nonfloat:
        raise CheckpointError(f"{path}: non-floating tensors for {_names(nonfloat)}")
    dtype = torch.float32
    to_load: dict[str, Tensor] = {}
    for k, v in expected.items():
        if k in state:
            t = state[k]
            to_load[k] = t.to(dtype=v.dtype if v.dtype.is_floating_point else dtype, copy=assign)
        else:
            dev = next(iter(state.values())).device if assign else v.device
            to_load[k] = _init_box_embedding(v.shape, dev, v.dtype if v.dtype.is_floating_point else dtype)
    with torch.no_grad():
        model.load_state_dict(to_load, strict=True, assign=assign)
    return len(to_load) - len(new_init), new_init, ignored


def load_sam3d_checkpoint(path: str | os.PathLike[str], config: Sam3DConfig | str | Mapping[str, Any] | None = None,
                          map_location: Any = "cpu", trust: bool = False) -> tuple[Sam3D, LoadReport]:
    """Load a released, plain or voxsam SAM-Med3D checkpoint.

    Args:
        path: the file.
        config: a `Sam3DConfig`, preset name or dict; default: the file's config, else inferred.
        map_location: passed to ``torch.load`` (the model ends up there).
        trust: allow ``weights_only=False`` for files holding pickled Python objects (released
            training checkpoints). Never set it for files of unknown origin.
    Returns:
        (model in eval mode, `LoadReport`).
    Raises:
        CheckpointError: missing/unreadable file, untrusted pickle, other architecture, mismatch.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: checkpoint file is empty")
    obj, unsafe = _read_file(p, map_location, trust)
    state, fmt, file_cfg, meta = _extract(obj, p)
    del obj
    if not any(k.startswith("image_encoder.") for k in state):
        raise CheckpointError(f"{p}: not a SAM-Med3D checkpoint (no image_encoder.* keys; first keys: "
                              f"{_names(list(state))})")
    try:
        if config is not None:
            cfg, source = get_config(config), "argument"
        elif file_cfg is not None:
            cfg, source = Sam3DConfig.from_dict(file_cfg), "file"
        else:
            cfg, source = infer_config(state), "inferred"
    except ConfigError as e:
        raise CheckpointError(f"{p}: {e}") from None
    except CheckpointError as e:
        raise CheckpointError(f"{p}: {e}") from None
    with torch.device("meta"):
        model = build_sam3d(cfg)
    loaded, new_init, ignored = load_state_dict_into(model, state, str(p), assign=True)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:  # pragma: no cover - every tensor is in the state dict
        raise CheckpointError(f"{p}: tensors left uninitialised: {_names(leftover)}")
    model.eval()
    report = LoadReport(str(p), fmt, cfg, source, loaded, new_init, ignored, unsafe, meta)
    log.info("%s", report.summary())
    return model, report


# ---------------------------------------------------------------------- saving
def save_sam3d_checkpoint(model: Sam3D, config: Sam3DConfig | None, path: str | os.PathLike[str],
                          extra: Mapping[str, Any] | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write ``{"format", "format_version", "config", "model", "extra"}`` atomically (tmp + os.replace).

    Args:
        model: the model; its state dict is saved (on CPU).
        config: its configuration (default ``model.config``).
        path: destination; its folder must exist.
        extra: small metadata (numbers, strings, lists, dicts) stored under ``extra``.
        dtype: store floating tensors in this dtype (e.g. ``torch.float16`` halves a shipped file;
            loading casts back to the model's float32).
    Returns:
        the path written.
    Raises:
        OutputPathError: the destination folder does not exist or is not writable.
    """
    dest = Path(path)
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(f"{dest}: folder {parent} does not exist")
    cfg = config if config is not None else model.config
    payload = {
        "format": FORMAT_TAG,
        "format_version": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "model": {k: v.detach().to("cpu", dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype)
                  for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
    }
    from voxsam.io.atomic import save_torch_atomic

    return save_torch_atomic(payload, dest)
