"""The training loop's periodic actions, each in one small place (clu's `periodic_actions` in
the Flax examples, big_vision's scheduled evaluations and checkpoints): the progress bar,
the check that no step went non-finite, SIGTERM handling, step checkpoints and the curves
plot. `jaxcnn.train.loop` calls them around the compiled step."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxcnn.data.pipeline import batch_at
from jaxcnn.errors import TrainingError
from jaxcnn.train import monitor
from jaxcnn.train.run import Run
from jaxcnn.train.state import TrainState


class Preempted(BaseException):
    """SIGTERM during start-up (a BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way swallows it)."""


class Preemption:
    """SIGTERM handling for a whole run, installed before anything slow starts. During
    start-up (data loading, compilation) a SIGTERM raises `Preempted` at once: nothing new
    exists to save, and `fit` returns saying so. Once the loop runs (`start_loop`) it only
    sets a flag: the loop finishes the current step, saves, and returns (what preemptible
    clouds expect). Single-process runs need their own handler: orbax's preemption sync
    point only works multi-host."""

    def __init__(self) -> None:
        self.requested = False
        self.looping = False
        self._previous = None

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        if not self.looping:
            raise Preempted()

    def start_loop(self) -> None:
        """From now on a SIGTERM stops the loop after the current step."""
        self.looping = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class FiniteCheck:
    """Raises TrainingError once the NaN guard of the step has recorded a non-finite step
    (TrainState.bad_step); with config.debug_nans, re-runs that step under checkify first to
    name the operation that produced the first NaN."""

    def __init__(self, run: Run, train_fn: Callable, feeder: Any):
        self.run, self.train_fn, self.feeder = run, train_fn, feeder

    def __call__(self, state: TrainState) -> None:
        bad = int(jax.device_get(state.bad_step))
        if bad < 0:
            return
        config, spe = self.run.config, self.run.steps_per_epoch
        where = " " + self._locate(state, bad) if config.debug_nans else ""
        raise TrainingError(
            f"non-finite loss, gradient or update at step {bad} (epoch {bad // spe + 1}, batch "
            f"{bad % spe}); training stopped and the last good checkpoint is kept as the "
            f"latest.{where} Lower optimizer.lr, enable optimizer.clip_norm, or check the data"
            + ("." if config.debug_nans
               else "; rerun with --config.debug_nans=True to locate the first NaN.")
        )

    def _locate(self, state: TrainState, bad: int) -> str:
        """Re-run the failing step under checkify (float checks) to name the first NaN."""
        from jax.experimental import checkify

        run = self.run
        batch = batch_at(self.feeder, seed=run.config.seed, step=bad, n=len(run.splits.train),
                         batch_size=run.config.data.batch_size)
        checked = jax.jit(checkify.checkify(self.train_fn, errors=checkify.float_checks))
        err, (_, metrics) = checked(state.replace(bad_step=jnp.full((), -1, jnp.int32)), batch)
        values = ", ".join(f"{k}={float(metrics[k]):.4g}" for k in ("loss", "grad_norm"))
        msg = err.get()
        found = f"checkify: {msg}" if msg else "checkify found no NaN-producing operation"
        return f"Re-run of step {bad}: {values}; {found}."


class Progress:
    """A tqdm bar per epoch (on stderr when it is a terminal; off with config.progress=False
    and in logs or pipes, where a bar only adds lines); every
    config.log_every steps (and at the epoch's end) the running loss, the task's metric and
    images/s in its postfix, after the finite check."""

    def __init__(self, run: Run, check: FiniteCheck):
        self.run, self.check = run, check
        self.bar: Any = None
        self.t_log, self.step_log = 0.0, 0

    def begin_epoch(self, epoch: int, step: int) -> None:
        """Open the bar of `epoch`, resumed at global `step`."""
        config, spe = self.run.config, self.run.steps_per_epoch
        self.t_log, self.step_log = time.perf_counter(), step
        if config.progress and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=spe, initial=step % spe,
                            desc=f"epoch {epoch + 1}/{config.num_epochs}", leave=False,
                            file=sys.stderr, dynamic_ncols=True, mininterval=0.5)

    def __call__(self, step: int, state: TrainState) -> None:
        """After optimizer step number `step` (1-based, global)."""
        if self.bar is not None:
            self.bar.update(1)
        spe = self.run.steps_per_epoch
        if step % self.run.config.log_every and step % spe:
            return
        self.check(state)
        now = time.perf_counter()
        rate = (step - self.step_log) * self.run.config.data.batch_size / max(
            now - self.t_log, 1e-9)
        self.t_log, self.step_log = now, step
        if self.bar is not None:
            shown = self.run.task.summarize(jax.device_get(state.sums))
            metric = self.run.task.best_metric
            self.bar.set_postfix(loss=f"{shown.get('loss', 0):.4f}",
                                 **{metric[:3]: f"{shown.get(metric, 0):.4f}"},
                                 img_s=f"{rate:.0f}")

    def end_epoch(self) -> None:
        """Close the epoch's bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class StepCheckpoint:
    """Saves every config.checkpoint.every_steps steps inside an epoch (epoch ends always
    save, with their validation metrics), after the finite check."""

    def __init__(self, run: Run, check: FiniteCheck, save: Callable[[int, TrainState], None]):
        self.every = run.config.checkpoint.every_steps
        self.spe, self.check, self.save = run.steps_per_epoch, check, save

    def __call__(self, step: int, state: TrainState) -> None:
        """After optimizer step number `step`."""
        if self.every and step % self.every == 0 and step % self.spe:
            self.check(state)
            self.save(step, state)


class CurvePlot:
    """Redraws curves.png (~0.2 s) at most every `interval` seconds, and always when asked
    to `force` (the last epoch)."""

    def __init__(self, path: Path, metric: str, interval: float = 30.0):
        self.path, self.metric, self.interval = path, metric, interval
        self.t_last = time.perf_counter()

    def __call__(self, history: list[dict], force: bool = False) -> None:
        """Plot `history` if due."""
        if force or time.perf_counter() - self.t_last > self.interval:
            monitor.plot_curves(history, self.path, self.metric)
            self.t_last = time.perf_counter()
