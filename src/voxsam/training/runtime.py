"""Process-level plumbing of a training run: the torchrun process group, stop signals, RNG states."""
from __future__ import annotations

import os
import random
import signal
from dataclasses import dataclass
from types import FrameType
from typing import Any, Callable

import numpy as np
import torch


# ---------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def barrier(dist_info: DistInfo) -> None:
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()


def mean_across(values: list[float], dist_info: DistInfo) -> list[float]:
    """The mean of each value over the processes (the values themselves in one process)."""
    if dist_info.world <= 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    out: list[float] = (t / dist_info.world).tolist()
    return out


def agree_stop(local: bool, dist_info: DistInfo) -> bool:
    """Any rank that got a signal stops them all at the same step (so the checkpoint is consistent)."""
    if dist_info.world <= 1:
        return local
    import torch.distributed as dist

    t = torch.tensor([1.0 if local else 0.0])
    dist.all_reduce(t)
    return bool(t.item() > 0)


# ---------------------------------------------------------------------- signals
_Handler = Callable[[int, FrameType | None], Any] | int | None


class StopFlag:
    """SIGTERM / SIGINT ask the loop to checkpoint and leave after the current step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, _Handler] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. called from a worker thread in tests)
                pass

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def reason(self) -> str:
        return f"signal {signal.Signals(self.signal).name if self.signal else 'on another rank'}"


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM / SIGINT to the main process: a scheduler signals the whole process
    group, and a worker dying first would abort the step instead of letting it finish and checkpoint."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ---------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
