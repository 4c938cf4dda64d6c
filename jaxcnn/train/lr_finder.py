"""fast.ai's learning-rate finder (`--lr_find`): train from the initial state while the rate
grows exponentially, and suggest the rate of steepest descent of the smoothed loss."""

from __future__ import annotations

import math
import os
from pathlib import Path

import ml_collections
import numpy as np

from jaxcnn.data.pipeline import batch_at, make_feeder
from jaxcnn.data.sources import Splits
from jaxcnn.train import monitor
from jaxcnn.train.optim import make_optimizer
from jaxcnn.train.run import initial_state, setup
from jaxcnn.train.steps import jit_train_step, make_train_step
from jaxcnn.train.workdir import lock_workdir, prepare_workdir


def lr_find(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
            data: Splits | None = None, init_variables: dict | None = None) -> dict:
    """Train from the initial state while the rate grows exponentially from
    lr_find.start_lr to end_lr over lr_find.steps steps; stop when the smoothed loss exceeds
    4x its minimum; save lr_find.png / lr_find.jsonl. The suggestion is the rate of steepest
    descent of the smoothed loss (fast.ai's `steep`)."""
    workdir = Path(workdir)
    prepare_workdir(workdir)
    with lock_workdir(workdir):  # one run at a time writes a workdir
        return _lr_find(config, workdir, data, init_variables)


def _lr_find(config: ml_collections.ConfigDict, workdir: Path, data: Splits | None,
             init_variables: dict | None) -> dict:
    run = setup(config, data=data, init_variables=init_variables)
    lf = config.lr_find
    n = max(2, lf.steps)
    schedule = lambda s: lf.start_lr * (lf.end_lr / lf.start_lr) ** (s / (n - 1))
    tx, _ = make_optimizer(config, run.variables["params"], run.steps_per_epoch, schedule=schedule)
    state = initial_state(run, tx)
    train_fn = make_train_step(run.model, run.task, tx, run.augment, run.steps_per_epoch)
    feeder = make_feeder(run.splits.train, run.mesh)
    step_fn = jit_train_step(train_fn, run.mesh)
    bs = config.data.batch_size
    lrs, raw, smooth = [], [], []
    avg, best = 0.0, math.inf
    for step in range(n):  # (a streamed split's batches are made here, without workers)
        batch = batch_at(feeder, seed=config.seed, step=step, n=len(run.splits.train),
                         batch_size=bs)
        state, metrics = step_fn(state, batch)
        loss = float(metrics["loss"])  # the mean loss of the batch
        lrs.append(float(schedule(step)))
        raw.append(loss)
        if not math.isfinite(loss):
            break
        avg = 0.98 * avg + 0.02 * loss
        smoothed = avg / (1 - 0.98 ** (step + 1))
        smooth.append(smoothed)
        best = min(best, smoothed)
        if step > 5 and smoothed > 4 * best:
            break
    lrs_s = np.array(lrs[:len(smooth)])
    losses = np.array(smooth)
    stop = int(np.argmin(losses))
    if stop >= 2:
        slopes = np.gradient(losses[:stop + 1], np.log(lrs_s[:stop + 1]))
        suggested = float(lrs_s[int(np.argmin(slopes))])
    else:
        suggested = float(lrs_s[stop] / 10)
    monitor.plot_lr_find(list(lrs_s), list(losses), suggested, workdir / "lr_find.png")
    monitor.write_jsonl(workdir / "lr_find.jsonl",
                        [{"lr": lr, "loss": lo, "smoothed": s}
                         for lr, lo, s in zip(lrs_s, raw, losses, strict=False)])
    return {"suggested_lr": suggested, "min_loss_lr": float(lrs_s[stop]),
            "steps": len(raw), "lr_find_plot": str(workdir / "lr_find.png")}
