"""The training loop: single process or DDP under torchrun, resumable to the exact next step.

State lives in `run.out_dir`:
    last.pt, step_XXXXXXX.pt   full training state (model, optimiser, scheduler, step, RNG, config),
                               written atomically every `checkpoint_every` steps and on SIGTERM/SIGINT
    model.pt                   the weights alone in voxsam's sam3d format (what engines load)
    metrics.jsonl              one JSON line per logged step (loss, Dice of first/last round, lr, samples/s)
    config.yaml                the validated config of the run
    tensorboard/               optional

Data order needs no state: optimiser step s, micro-batch a, process r and slot b read global sample
((s * accumulate + a) * world + r) * batch + b, and every sample is a pure function of (seed, index).
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxsam.errors import CheckpointError, ConfigError
from voxsam.training.config import TrainConfig

log = logging.getLogger(__name__)

TRAIN_FORMAT = "voxsam.train"


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


def _barrier(dist_info: DistInfo) -> None:
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _mean_across(values: list[float], dist_info: DistInfo) -> list[float]:
    if dist_info.world <= 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return (t / dist_info.world).tolist()


# ---------------------------------------------------------------------- optimiser and schedule
def _param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Encoder at lr; prompt encoder + mask decoder at lr * decoder_lr_scale; no decay on norms/biases/embeddings."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_decoder = not name.startswith("image_encoder.")
        no_decay = p.ndim <= 1 or name.endswith("pos_embed") or "rel_pos" in name or "embed.weight" in name
        groups.setdefault((is_decoder, no_decay), []).append(p)
    o = cfg.optim
    return [
        {"params": ps, "lr": o.lr * (o.decoder_lr_scale if dec else 1.0), "weight_decay": 0.0 if nd else o.weight_decay,
         "name": f"{'decoder' if dec else 'encoder'}{'_no_decay' if nd else ''}"}
        for (dec, nd), ps in sorted(groups.items())
    ]


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
        return o.step_gamma ** sum(step >= m for m in o.step_milestones)
    progress = min(1.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps))
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------- checkpoints
def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(out_dir: Path, step: int, cfg: TrainConfig, model: torch.nn.Module, optimizer: Any,
                        scheduler: Any, scaler: Any, keep: int) -> Path:
    """Write last.pt and step_XXXXXXX.pt (atomically), prune old step files, refresh model.pt."""
    from voxsam.io.atomic import save_torch_atomic
    from voxsam.models.sam3d import save_sam3d_checkpoint

    state = {
        "format": TRAIN_FORMAT, "format_version": 1, "step": step, "config": cfg.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_config": model.config.to_dict(),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": _rng_state(),
    }
    step_file = out_dir / f"step_{step:07d}.pt"
    save_torch_atomic(state, step_file)
    save_torch_atomic(state, out_dir / "last.pt")
    for old in sorted(out_dir.glob("step_*.pt"))[:-keep]:
        old.unlink(missing_ok=True)
    save_sam3d_checkpoint(model, model.config, out_dir / "model.pt", extra={"step": step, "trained_by": "voxsam train"})
    return step_file


def load_training_state(path: Path) -> dict[str, Any]:
    """Read a training checkpoint (our own files: weights_only=False is needed for RNG states)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise CheckpointError(f"{path}: cannot read training checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(state, dict) or state.get("format") != TRAIN_FORMAT:
        raise CheckpointError(f"{path}: not a voxsam training checkpoint")
    return state


# ---------------------------------------------------------------------- the run
class _StopFlag:
    """SIGTERM / SIGINT ask the loop to checkpoint and leave after the current step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. called from a worker thread in tests)
                pass

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _build_model(cfg: TrainConfig) -> torch.nn.Module:
    from voxsam.models.sam3d import Sam3DConfig, build_sam3d, load_sam3d_checkpoint

    mcfg = Sam3DConfig.preset(cfg.model.preset)
    if cfg.model.overrides:
        try:
            mcfg = mcfg.replace(**cfg.model.overrides)
        except TypeError as exc:
            raise ConfigError(f"model.overrides: {exc}") from None
    if mcfg.image_size != cfg.data.crop_size:
        raise ConfigError(f"data.crop_size {cfg.data.crop_size} must equal the model's image_size {mcfg.image_size}")
    if cfg.model.init is not None:
        model, report = load_sam3d_checkpoint(cfg.model.init, config=mcfg, trust=cfg.model.trust_init)
        log.info("initialised from %s", report.summary())
        return model.float()
    torch.manual_seed(cfg.run.seed)
    return build_sam3d(mcfg)


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM / SIGINT to the main process: a scheduler signals the whole process
    group, and a worker dying first would abort the step instead of letting it finish and checkpoint."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "image": torch.from_numpy(np.stack([i["image"] for i in items])),
        "target": torch.from_numpy(np.stack([i["target"] for i in items])),
        "info": [i["info"] for i in items],
    }


class _IndexSampler(torch.utils.data.Sampler):
    """Global sample indices of this process from `start_step` on (see the module docstring)."""

    def __init__(self, start_step: int, steps: int, accumulate: int, batch: int, dist_info: DistInfo) -> None:
        self.start, self.steps, self.acc, self.batch, self.d = start_step, steps, accumulate, batch, dist_info

    def __iter__(self):
        for s in range(self.start, self.steps):
            for a in range(self.acc):
                for b in range(self.batch):
                    yield ((s * self.acc + a) * self.d.world + self.d.rank) * self.batch + b

    def __len__(self) -> int:
        return (self.steps - self.start) * self.acc * self.batch


def train(cfg: TrainConfig, resume: bool = False, console: Any = None) -> dict[str, Any]:
    """Run (or resume) a training run. Returns a summary dict (steps done, last metrics, stop reason)."""
    from voxsam.training.data import TrainSamples, build_table
    from voxsam.training.interaction import InteractiveLoss, plan_step, sample_generators

    run = cfg.run
    # A trained model's confident logits give denormal floats in the loss and its gradients, which x86 CPUs
    # handle in microcode (a step took 1.7 s instead of 1.1 s). Set before the first parallel op: the OpenMP
    # threads inherit this thread's floating-point mode when they are created.
    torch.set_flush_denormal(run.flush_denormals)
    if run.threads:
        torch.set_num_threads(run.threads)
    dist_info = init_distributed(run.device)
    device = torch.device(run.device if not run.device.startswith("cuda") else f"cuda:{dist_info.local_rank}" if run.device == "cuda" else run.device)
    out_dir = Path(run.out_dir)
    if dist_info.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    _barrier(dist_info)

    start_step = run.start_step
    state = None
    last = out_dir / "last.pt"
    if resume:
        if not last.is_file():
            raise CheckpointError(f"{last}: nothing to resume (no last.pt in {out_dir})")
        state = load_training_state(last)
        start_step = int(state["step"])
        # where a continued run's schedule started is part of the run, not a knob: take it from the checkpoint
        saved_start = int(state.get("config", {}).get("run", {}).get("start_step", 0))
        if saved_start != run.start_step:
            log.info("resume: run.start_step %d from the checkpoint (given %d)", saved_start, run.start_step)
            run = run.model_copy(update={"start_step": saved_start})
            cfg = cfg.model_copy(update={"run": run})
    elif last.exists():
        raise ConfigError(f"{out_dir} already holds a run (last.pt): pass --resume to continue it, or choose another run.out_dir")

    # data: rank 0 fills the cache, the others then read it
    def progress(i: int, n: int, what: str) -> None:
        if console is not None and dist_info.main and i < n:
            console.print(f"[dim]cache {i + 1}/{n}: {what}[/dim]")

    if dist_info.main:
        table, problems = build_table(cfg.data.sources, cfg.data, progress)
    _barrier(dist_info)
    if not dist_info.main:
        table, problems = build_table(cfg.data.sources, cfg.data)
    samples = TrainSamples(table, cfg.data, cfg.run.seed)

    model = _build_model(cfg)
    if state is not None:
        model.load_state_dict(state["model"])
    model.to(device).train()
    wrapped: torch.nn.Module = InteractiveLoss(model, cfg.interaction)
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(wrapped, device_ids=[device.index] if device.type == "cuda" else None,
                                          find_unused_parameters=True)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.optim.lr, betas=cfg.optim.betas)
    # LambdaLR counts this run's optimiser steps from 0; the schedule is in absolute steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s + run.start_step, cfg))
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.optim.amp) if device.type == "cuda" else None
    scaler = torch.amp.GradScaler("cuda") if amp_dtype is torch.float16 else None
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        del state

    writer = None
    if dist_info.main:
        import yaml

        (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        if run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("run.tensorboard needs the tensorboard package: pip install tensorboard") from None
            writer = SummaryWriter(str(out_dir / "tensorboard"))
        if console is not None:
            console.print(f"training {cfg.model.preset} sam3d: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
                          f"steps {start_step} -> {run.steps}, world {dist_info.world}, targets by source {table.summary()}")
            for p in problems:
                console.print(f"[yellow]skipped[/yellow] {p}")

    loader = torch.utils.data.DataLoader(
        samples, batch_size=cfg.optim.batch_size, collate_fn=_collate, num_workers=run.num_workers,
        sampler=_IndexSampler(start_step, run.steps, cfg.optim.accumulate, cfg.optim.batch_size, dist_info),
        persistent_workers=False, prefetch_factor=2 if run.num_workers else None,
        worker_init_fn=_ignore_stop_signals if run.num_workers else None,
    )
    batches = iter(loader)
    stop = _StopFlag()
    stop.install()
    metrics_file = out_dir / "metrics.jsonl"
    step = start_step
    stop_reason = "finished"
    t_start = time.monotonic()
    last_metrics: dict[str, Any] = {}
    progress_bar = _Progress(console if dist_info.main else None, start_step, run.steps)
    try:
        while step < run.steps:
            t0 = time.monotonic()
            optimizer.zero_grad(set_to_none=True)
            sums = {"loss": 0.0, "dice_first": 0.0, "dice_last": 0.0}
            for micro in range(cfg.optim.accumulate):
                batch = next(batches)
                first_index = ((step * cfg.optim.accumulate + micro) * dist_info.world + dist_info.rank) * cfg.optim.batch_size
                gens = sample_generators(cfg.run.seed, [first_index + b for b in range(batch["image"].shape[0])])
                plan = plan_step(cfg.run.seed, step, micro, cfg.interaction)
                image, target = batch["image"].to(device), batch["target"].to(device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss, stats = wrapped(image, target, plan, gens)
                loss = loss / cfg.optim.accumulate
                if scaler is not None:
                    scaler.scale(loss).backward()
                else:
                    loss.backward()
                sums["loss"] += float(loss.detach())
                sums["dice_first"] += stats["dice_first"] / cfg.optim.accumulate
                sums["dice_last"] += stats["dice_last"] / cfg.optim.accumulate
            if scaler is not None:
                scaler.unscale_(optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad_norm or float("inf")))
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            lr_used = optimizer.param_groups[0]["lr"]
            scheduler.step()
            step += 1
            loss_v, d1, dk = _mean_across([sums["loss"], sums["dice_first"], sums["dice_last"]], dist_info)
            seconds = time.monotonic() - t0
            n_samples = cfg.optim.batch_size * cfg.optim.accumulate * dist_info.world
            last_metrics = {"step": step, "loss": loss_v, "dice_first": d1, "dice_last": dk, "grad_norm": grad_norm,
                            "lr": lr_used, "seconds": seconds, "samples_per_s": n_samples / seconds,
                            "elapsed_s": time.monotonic() - t_start, "world": dist_info.world}
            if dist_info.main and (step % run.log_every == 0 or step == run.steps):
                with metrics_file.open("a") as f:
                    f.write(json.dumps(last_metrics) + "\n")
                if writer is not None:
                    for k in ("loss", "dice_first", "dice_last", "lr", "samples_per_s"):
                        writer.add_scalar(f"train/{k}", last_metrics[k], step)
            progress_bar.update(step, last_metrics)
            stop_now = _agree_stop(stop.signal is not None, dist_info)
            if step % run.checkpoint_every == 0 or step == run.steps or stop_now:
                if dist_info.main:
                    save_training_state(out_dir, step, cfg, model, optimizer, scheduler, scaler, run.keep_checkpoints)
                _barrier(dist_info)
            if stop_now:
                stop_reason = f"signal {signal.Signals(stop.signal).name if stop.signal else 'on another rank'}"
                break
    finally:
        stop.restore()
        progress_bar.close()
        if writer is not None:
            writer.close()
    if dist_info.main and console is not None:
        console.print(f"stopped at step {step}/{run.steps} ({stop_reason}); checkpoint {out_dir / 'last.pt'}")
    return {"step": step, "stop_reason": stop_reason, "metrics": last_metrics, "out_dir": str(out_dir)}


def _agree_stop(local: bool, dist_info: DistInfo) -> bool:
    """Any rank that got a signal stops them all at the same step (so the checkpoint is consistent)."""
    if dist_info.world <= 1:
        return local
    import torch.distributed as dist

    t = torch.tensor([1.0 if local else 0.0])
    dist.all_reduce(t)
    return bool(t.item() > 0)


class _Progress:
    """A rich progress bar with loss, Dice and ETA on a terminal; a plain line per 10 steps otherwise."""

    def __init__(self, console: Any, start: int, total: int) -> None:
        self.console, self.bar, self.task = console, None, None
        self.start_time, self.start = time.monotonic(), start
        if console is not None and console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                                TimeRemainingColumn(), console=console)
            self.task = self.bar.add_task("train", total=total, completed=start, stats="")
            self.bar.start()

    def update(self, step: int, m: dict[str, Any]) -> None:
        stats = f"loss {m['loss']:.3f}  dice {m['dice_first']:.2f}->{m['dice_last']:.2f}  {m['samples_per_s']:.2f} samples/s"
        if self.bar is not None:
            self.bar.update(self.task, completed=step, stats=stats)
        elif self.console is not None and (step % 10 == 0 or step == self.start + 1):
            self.console.print(f"step {step}: {stats}")
            sys.stdout.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
