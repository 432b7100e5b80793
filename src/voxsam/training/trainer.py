"""The training loop of every model family: single process or DDP under torchrun, resumable to the exact next step.

The loop knows a model only through its `ModelFamily` (`voxsam.training.family`, looked up in
`voxsam.training.registry` by the config's `family:`, default sam3d): the family builds the model, names its
parameter groups, provides the samples and computes the loss of a micro-batch. The loop owns AdamW and the lr
schedule, gradient accumulation and clipping, AMP, DDP, checkpoints, SIGTERM/SIGINT, resume and logging.

State lives in `run.out_dir`:
    last.pt, step_XXXXXXX.pt   full training state (family, model, optimiser, scheduler, step, RNG, config),
                               written atomically every `checkpoint_every` steps and on SIGTERM/SIGINT
    model.pt                   the weights alone, in the family's exported format (sam3d: what engines load)
    metrics.jsonl              one JSON line per logged step (loss, the family's metrics - sam3d: Dice of the
                               first/last round -, grad norm, lr, samples/s)
    config.yaml                the validated config of the run
    tensorboard/               optional

Data order needs no state: optimiser step s, micro-batch a, process r and slot b read global sample
((s * accumulate + a) * world + r) * batch + b, and every sample is a pure function of (seed, index).

Nothing is printed: progress goes to the caller's `on_progress` callback (rank 0), messages to `logging`.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from voxsam.errors import CheckpointError, ConfigError
from voxsam.training.checkpoint import TRAIN_FORMAT, checkpoint_family, load_training_state, save_training_state
from voxsam.training.config import TrainConfig
from voxsam.training.family import Batch, ModelFamily, StepInfo
from voxsam.training.progress import ProgressCallback, TrainingProgress
from voxsam.training.registry import get_family
from voxsam.training.runtime import (DistInfo, StopFlag, agree_stop, barrier, ignore_stop_signals, init_distributed,
                                     mean_across, set_rng_state)

__all__ = ["train", "lr_factor", "TRAIN_FORMAT", "DistInfo", "init_distributed", "save_training_state",
           "load_training_state"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- schedule
def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the base lr at optimiser step `step` (0-based): linear warm-up, then the schedule.

    A run continued from exported weights (run.start_step > 0) follows the same schedule from that step, and
    its fresh AdamW moments get a warm-up of their own: early Adam updates are ~lr per weight whatever the
    gradient, which would jolt trained weights at full lr."""
    o = cfg.optim
    if o.warmup_steps and step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    fresh = step - cfg.run.start_step
    if cfg.run.start_step and o.warmup_steps and fresh < o.warmup_steps:
        return (fresh + 1) / o.warmup_steps * _schedule(step, cfg)
    return _schedule(step, cfg)


def _schedule(step: int, cfg: TrainConfig) -> float:
    o, total = cfg.optim, cfg.run.steps
    if o.schedule == "constant":
        return 1.0
    if o.schedule == "step":
        return float(o.step_gamma ** sum(step >= m for m in o.step_milestones))
    progress = min(1.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps))
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------- pieces of the run
class _IndexSampler(torch.utils.data.Sampler[int]):
    """Global sample indices of this process from `start_step` on (see the module docstring)."""

    def __init__(self, start_step: int, steps: int, accumulate: int, batch: int, dist_info: DistInfo) -> None:
        self.start, self.steps, self.acc, self.batch, self.d = start_step, steps, accumulate, batch, dist_info

    def __iter__(self) -> Iterator[int]:
        for s in range(self.start, self.steps):
            for a in range(self.acc):
                for b in range(self.batch):
                    yield ((s * self.acc + a) * self.d.world + self.d.rank) * self.batch + b

    def __len__(self) -> int:
        return (self.steps - self.start) * self.acc * self.batch


class _FamilyStep(nn.Module):
    """The bare model and its family's loss as one module: DDP wraps this, so one forward is one micro-batch."""

    def __init__(self, family: ModelFamily[Any], cfg: TrainConfig, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.family = family
        self.cfg = cfg

    def forward(self, batch: Batch, step: StepInfo) -> tuple[Tensor, dict[str, float]]:
        return self.family.loss(self.cfg, self.model, batch, step)


def _to_device(batch: Batch, device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _device(name: str, dist_info: DistInfo) -> torch.device:
    """run.device, with plain "cuda" meaning this process's GPU (LOCAL_RANK) under torchrun."""
    return torch.device(f"cuda:{dist_info.local_rank}" if name == "cuda" else name)


def _open_run(cfg: TrainConfig, family: ModelFamily[Any], out_dir: Path,
              resume: bool) -> tuple[TrainConfig, int, dict[str, Any] | None]:
    """(config, first step, training state to restore or None): refuse to overwrite a run, check a resume."""
    last = out_dir / "last.pt"
    if not resume:
        if last.exists():
            raise ConfigError(f"{out_dir} already holds a run (last.pt): pass --resume to continue it, or choose another run.out_dir")
        return cfg, cfg.run.start_step, None
    if not last.is_file():
        raise CheckpointError(f"{last}: nothing to resume (no last.pt in {out_dir})")
    state = load_training_state(last)
    saved_family = checkpoint_family(state)
    if saved_family != family.name:
        raise CheckpointError(f"{last}: a {saved_family} run, but the config trains family {family.name}")
    # where a continued run's schedule started is part of the run, not a knob: take it from the checkpoint
    saved_start = int(state.get("config", {}).get("run", {}).get("start_step", 0))
    if saved_start != cfg.run.start_step:
        log.info("resume: run.start_step %d from the checkpoint (given %d)", saved_start, cfg.run.start_step)
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"start_step": saved_start})})
    return cfg, int(state["step"]), state


# ---------------------------------------------------------------------- the run
def train(cfg: TrainConfig, resume: bool = False, on_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Run (or resume) a training run of `cfg`'s family. Returns {"step", "stop_reason", "metrics", "out_dir"}.

    `on_progress` (called on rank 0 only) receives `TrainingProgress` events: data preparation, the start,
    every optimiser step (with the metrics logged to metrics.jsonl), the end."""
    family = get_family(cfg.family)
    if not isinstance(cfg, family.config_type):
        raise ConfigError(f"family {family.name} needs a {family.config_type.__name__}, got a {type(cfg).__name__} "
                          "(build configs with voxsam.training.load.build_config / load_config)")
    run = cfg.run
    # A trained model's confident logits give denormal floats in the loss and its gradients, which x86 CPUs
    # handle in microcode (a sam3d step took 1.7 s instead of 1.1 s). Set before the first parallel op: the
    # OpenMP threads inherit this thread's floating-point mode when they are created.
    torch.set_flush_denormal(run.flush_denormals)
    if run.threads:
        torch.set_num_threads(run.threads)
    dist_info = init_distributed(run.device)
    device = _device(run.device, dist_info)
    out_dir = Path(run.out_dir)
    if dist_info.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    barrier(dist_info)
    report = on_progress if dist_info.main else None

    cfg, start_step, state = _open_run(cfg, family, out_dir, resume)
    run = cfg.run

    def cache_progress(i: int, n: int, what: str) -> None:
        if report is not None and i < n:
            report(TrainingProgress("cache", i + 1, n, message=what))

    # data: rank 0 fills the cache, the others then read it
    data = family.dataset(cfg, cache_progress) if dist_info.main else None
    barrier(dist_info)
    if data is None:
        data = family.dataset(cfg)

    model = family.build(cfg)
    if state is not None:
        model.load_state_dict(state["model"])
    model.to(device).train()
    wrapped: nn.Module = _FamilyStep(family, cfg, model)
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(wrapped, device_ids=[device.index] if device.type == "cuda" else None,
                                          find_unused_parameters=True)
    optimizer = torch.optim.AdamW(family.parameter_groups(model, cfg.optim), lr=cfg.optim.lr, betas=cfg.optim.betas)
    # LambdaLR counts this run's optimiser steps from 0; the schedule is in absolute steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s + run.start_step, cfg))
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.optim.amp) if device.type == "cuda" else None
    scaler = torch.amp.GradScaler("cuda") if amp_dtype is torch.float16 else None
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        del state

    writer = None
    if dist_info.main:
        import yaml  # type: ignore[import-untyped]  # no PyYAML stubs (types-PyYAML) in the environment

        (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        if run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("run.tensorboard needs the tensorboard package: pip install tensorboard") from None
            writer = SummaryWriter(str(out_dir / "tensorboard"))
        message = (f"training {family.name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
                   f"steps {start_step} -> {run.steps}, world {dist_info.world}" + (f", {data.summary}" if data.summary else ""))
        log.info("%s", message)
        if report is not None:
            report(TrainingProgress("start", start_step, run.steps, message=message, problems=tuple(data.problems)))

    o = cfg.optim
    loader: torch.utils.data.DataLoader[Any] = torch.utils.data.DataLoader(
        data.samples, batch_size=o.batch_size, collate_fn=data.collate, num_workers=run.num_workers,
        sampler=_IndexSampler(start_step, run.steps, o.accumulate, o.batch_size, dist_info),
        persistent_workers=False, prefetch_factor=2 if run.num_workers else None,
        worker_init_fn=ignore_stop_signals if run.num_workers else None,
    )
    batches = iter(loader)
    stop = StopFlag()
    stop.install()
    metrics_file = out_dir / "metrics.jsonl"
    step = start_step
    stop_reason = "finished"
    t_start = time.monotonic()
    last_metrics: dict[str, float] = {}
    try:
        while step < run.steps:
            t0 = time.monotonic()
            optimizer.zero_grad(set_to_none=True)
            loss_sum = 0.0
            metric_sums: dict[str, float] = {}
            for micro in range(o.accumulate):
                first = ((step * o.accumulate + micro) * dist_info.world + dist_info.rank) * o.batch_size
                where = StepInfo(run.seed, step, micro, tuple(range(first, first + o.batch_size)))
                batch = _to_device(next(batches), device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss, stats = wrapped(batch, where)
                loss = loss / o.accumulate
                if scaler is not None:
                    scaler.scale(loss).backward()
                else:
                    loss.backward()
                loss_sum += float(loss.detach())
                for k, v in stats.items():
                    metric_sums[k] = metric_sums.get(k, 0.0) + v / o.accumulate
            if scaler is not None:
                scaler.unscale_(optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_grad_norm or float("inf")))
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            lr_used = float(optimizer.param_groups[0]["lr"])
            scheduler.step()
            step += 1
            loss_v, *means = mean_across([loss_sum, *metric_sums.values()], dist_info)
            seconds = time.monotonic() - t0
            n_samples = o.batch_size * o.accumulate * dist_info.world
            last_metrics = {"step": step, "loss": loss_v, **dict(zip(metric_sums, means)), "grad_norm": grad_norm,
                            "lr": lr_used, "seconds": seconds, "samples_per_s": n_samples / seconds,
                            "elapsed_s": time.monotonic() - t_start, "world": dist_info.world}
            if dist_info.main and (step % run.log_every == 0 or step == run.steps):
                with metrics_file.open("a") as f:
                    f.write(json.dumps(last_metrics) + "\n")
                if writer is not None:
                    for k in ("loss", *metric_sums, "lr", "samples_per_s"):
                        writer.add_scalar(f"train/{k}", last_metrics[k], step)
            if report is not None:
                report(TrainingProgress("step", step, run.steps, metrics=last_metrics))
            stop_now = agree_stop(stop.signal is not None, dist_info)
            if step % run.checkpoint_every == 0 or step == run.steps or stop_now:
                if dist_info.main:
                    save_training_state(out_dir, step, cfg, family, model, optimizer, scheduler, scaler, run.keep_checkpoints)
                barrier(dist_info)
            if stop_now:
                stop_reason = stop.reason()
                break
    finally:
        stop.restore()
        if writer is not None:
            writer.close()
    if dist_info.main:
        log.info("stopped at step %d/%d (%s); checkpoint %s", step, run.steps, stop_reason, out_dir / "last.pt")
        if report is not None:
            report(TrainingProgress("end", step, run.steps, metrics=last_metrics, message=stop_reason))
    return {"step": step, "stop_reason": stop_reason, "metrics": last_metrics, "out_dir": str(out_dir)}
