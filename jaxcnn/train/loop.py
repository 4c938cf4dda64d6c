"""`fit(config, workdir)`: train, resume, checkpoint, log. The loop reads as the compiled step
followed by its periodic actions (`jaxcnn.train.actions`), then the end-of-epoch
evaluation, log and checkpoint. Data flows one way: config -> data source -> model and
state -> compiled step -> checkpoints and logs."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections

from jaxcnn.data.pipeline import (
    StreamData,
    batch_at,
    is_streamed,
    make_feeder,
    replicated,
    train_batches,
)
from jaxcnn.data.sources import Splits
from jaxcnn.errors import ConfigError
from jaxcnn.train import monitor
from jaxcnn.train.actions import (
    CurvePlot,
    FiniteCheck,
    Preempted,
    Preemption,
    Progress,
    StepCheckpoint,
)
from jaxcnn.train.averaging import lookahead_from_config
from jaxcnn.train.checkpoint import Checkpointer, save_run_info
from jaxcnn.train.config import validate_config
from jaxcnn.train.distributed import barrier, peer_failure
from jaxcnn.train.optim import current_lr, make_optimizer, set_plateau_scale
from jaxcnn.train.run import Evaluator, Run, eval_metric_names, initial_state, setup
from jaxcnn.train.state import TrainState
from jaxcnn.train.steps import jit_train_step, make_eval_step, make_train_step
from jaxcnn.train.stopping import EpochControl
from jaxcnn.train.transfer import TxWrap, make_tx_wrap, stats_filter
from jaxcnn.train.workdir import (
    check_config,
    committed_steps,
    lock_workdir,
    prepare_workdir,
    record_config,
)


def _meta(run: Run, step: int, history: list[dict], control: EpochControl) -> dict:
    return {
        "step": step,
        "epoch": step // run.steps_per_epoch,
        "step_in_epoch": step % run.steps_per_epoch,
        "steps_per_epoch": run.steps_per_epoch,
        "model": run.config.model.name,
        "history": history,
        "epoch_control": control.state_dict(),  # early stopping / plateau counters
    }


def fit(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
        data: Splits | None = None, init_variables: dict | None = None,
        tx_wrap: TxWrap | None = None, allow_config_change: bool = False) -> dict:
    """Train `config` in `workdir` (resuming from its newest good checkpoint) and return the
    final metrics: test_accuracy (or the task's metric), epochs, train_seconds,
    compile_seconds, images_per_second, ... The workdir is locked for the run; resuming
    with another config needs `allow_config_change` (see jaxcnn.train.workdir)."""
    t_start = time.perf_counter()
    workdir = Path(workdir)
    with Preemption() as preemption:  # first: a SIGTERM during start-up is answered too
        try:
            validate_config(config)
            prepare_workdir(workdir)
            with lock_workdir(workdir):
                changes = check_config(workdir, config, allow_change=allow_config_change)
                if not committed_steps(workdir):
                    record_config(workdir, config, {}, None)  # a fresh run, from now on
                return _fit(config, workdir, data, init_variables, tx_wrap, preemption,
                            changes, t_start)
        except Preempted:
            steps = committed_steps(workdir)
            print("SIGTERM during start-up (data loading or compilation), before the first "
                  "training step: stopped with nothing new to save"
                  + (f"; the latest checkpoint is step {steps[-1]}" if steps else "")
                  + ". Rerun the same command to continue.", file=sys.stderr, flush=True)
            return {"preempted": True, "step": steps[-1] if steps else 0, "started": False,
                    "workdir": str(workdir)}


def _fit(config: ml_collections.ConfigDict, workdir: Path, data: Splits | None,
         init_variables: dict | None, tx_wrap: TxWrap | None, preemption: Preemption,
         changes: dict, t_start: float) -> dict:
    run = setup(config, data=data, init_variables=init_variables)
    if tx_wrap is None:  # config.transfer: frozen stages, per-stage rates (or None)
        tx_wrap = make_tx_wrap(config, run.model)
    tx, schedule = make_optimizer(config, run.variables["params"], run.steps_per_epoch,
                                  wrap=tx_wrap)
    state = initial_state(run, tx)
    ckpt = Checkpointer(workdir, keep=config.checkpoint.keep, keep_best=config.checkpoint.keep_best,
                        best_metric=run.task.best_metric, best_mode=run.task.best_mode,
                        async_save=config.checkpoint.async_save,
                        data=is_streamed(run.splits.train))
    try:
        return _train(run, state, tx, schedule, ckpt, workdir, preemption, changes, t_start)
    except Exception as err:
        lost = peer_failure(err)  # a multi-process run whose peer died: name it
        if lost is not None:
            raise lost from err
        raise
    finally:
        ckpt.close()


def _resume(run: Run, state: TrainState, ckpt: Checkpointer, workdir: Path, feeder: Any
            ) -> tuple[TrainState, dict, int | None]:
    """The newest good checkpoint's state, metadata and step (damaged ones are named and set
    aside), or the fresh state, no metadata and None; a streamed `feeder` continues from the
    checkpoint's input-pipeline state."""
    found = ckpt.restore_good(state, run.mesh)
    if found is None:
        return state, {}, None
    step, state, meta = found
    if isinstance(feeder, StreamData):
        feeder.restore(ckpt.read_data(step), step)
    spe = run.steps_per_epoch
    if meta.get("steps_per_epoch") != spe:
        raise ConfigError(
            f"{workdir} holds a run with {meta.get('steps_per_epoch')} steps per epoch but this "
            f"config gives {spe} (another batch size or dataset?); the data order could not "
            "resume exactly. Use a fresh --workdir."
        )
    stopped = meta.get("epoch_control", {}).get("early_stopping", {}).get("stopped_epoch")
    if step < math.ceil(run.config.num_epochs * spe) and not stopped:
        print(f"Resuming from {ckpt.directory / str(step)}: step {step}, epoch "
              f"{step // spe + 1}, batch {step % spe}", file=sys.stderr, flush=True)
    return state, meta, step


def _train(run: Run, state: TrainState, tx: Any, schedule: Any, ckpt: Checkpointer,
           workdir: Path, preemption: Preemption, changes: dict, t_start: float) -> dict:
    with contextlib.ExitStack() as cleanup:
        feeder = make_feeder(run.splits.train, run.mesh, run.on_device())
        if isinstance(feeder, StreamData):
            cleanup.callback(feeder.close)  # stop the input worker processes
        evaluator = Evaluator(run, make_eval_step(run.model, run.task, run.augment,
                                                  tta=run.config.data.tta))
        cleanup.callback(evaluator.close)
        return _train_with(run, state, tx, schedule, ckpt, workdir, preemption, changes,
                           t_start, feeder, evaluator)


def _train_with(run: Run, state: TrainState, tx: Any, schedule: Any, ckpt: Checkpointer,
                workdir: Path, preemption: Preemption, changes: dict, t_start: float,
                feeder: Any, evaluator: Evaluator) -> dict:
    config, spe, bs = run.config, run.steps_per_epoch, run.config.data.batch_size
    control = EpochControl.from_config(config, run.task, lambda: eval_metric_names(run))
    state, meta, resumed_at = _resume(run, state, ckpt, workdir, feeder)
    history = list(meta.get("history", []))
    control.load_state_dict(meta.get("epoch_control", {}))
    record_config(workdir, config, changes, resumed_at)  # once the resume has worked
    save_run_info(workdir, run.info())
    metrics_path = workdir / "metrics.jsonl"
    monitor.write_jsonl(metrics_path, history)  # drop records newer than the checkpoint

    frozen_stats = stats_filter(config, run.model, run.variables["params"])
    total_steps = math.ceil(spe * config.num_epochs)  # a fractional last epoch stops early
    train_fn = make_train_step(run.model, run.task, tx, run.augment, spe,
                               freeze_stats=frozen_stats,
                               eval_forward=config.transfer.freeze == "linear_probe",
                               lookahead=lookahead_from_config(config, total_steps))
    step = int(jax.device_get(state.step))
    n_train = len(run.splits.train)

    complete = step >= total_steps or bool(control.stopped_epoch)
    compile_seconds = 0.0
    if complete:
        done = (f"stopped early after epoch {control.stopped_epoch}" if control.stopped_epoch
                else f"{config.num_epochs:g} epochs")
        print(f"{workdir}: the run is complete ({done}, step {step}); nothing to train. "
              "Reporting its best checkpoint on the test split.", file=sys.stderr, flush=True)
    else:
        t0 = time.perf_counter()
        with monitor.phase("compiling the train step"):
            first = batch_at(feeder, seed=config.seed, step=step, n=n_train, batch_size=bs)
            compiled = jit_train_step(train_fn, run.mesh).lower(state, first).compile()
            del first
        compile_seconds = time.perf_counter() - t0
        barrier("compiled")  # the first step's all-reduce finds every process ready

    def save(s: int, st: TrainState, metrics: dict | None = None) -> None:
        # A streamed run's checkpoint also holds where its input pipeline stands.
        data = feeder.consumed if isinstance(feeder, StreamData) else None
        ckpt.save(s, st, _meta(run, s, history, control), metrics=metrics, data=data)

    check = FiniteCheck(run, train_fn, feeder)
    progress = Progress(run, check)
    step_actions = [progress, StepCheckpoint(run, check, save)]
    plot = CurvePlot(workdir / "curves.png", run.task.best_metric)
    table = monitor.EpochTable(run.task.best_metric)
    board = monitor.TensorBoard(workdir) if config.log.tensorboard else None
    train_seconds, images = 0.0, 0
    preemption.start_loop()
    # A run stopped early stays stopped; a fractional last epoch stops at total_steps.
    last_epoch = control.stopped_epoch or math.ceil(total_steps / spe)
    for epoch in range(step // spe, last_epoch):
        start = step
        progress.begin_epoch(epoch, step)
        t_epoch = time.perf_counter()
        for pos, batch in train_batches(feeder, seed=config.seed, epoch=epoch,
                                        start_step=step % spe, n=n_train, batch_size=bs):
            state, _ = compiled(state, batch)
            step = epoch * spe + pos + 1
            last = step >= total_steps
            for action in step_actions[:1] if last else step_actions:
                action(step, state)  # the last step's checkpoint is the epoch end's
            if preemption.requested or last:
                break
        jax.block_until_ready(state)
        elapsed = time.perf_counter() - t_epoch
        train_seconds += elapsed
        images += (step - start) * bs
        progress.end_epoch()
        check(state)
        if preemption.requested:
            save(step, state)
            ckpt.wait()
            print(f"SIGTERM: saved step {step} to {ckpt.directory}; rerun the same command "
                  "to resume.", file=sys.stderr, flush=True)
            return {"preempted": True, "step": step, "epoch": step // spe,
                    "workdir": str(workdir)}
        valid = evaluator.metrics(state, "valid")
        record = {"epoch": epoch + 1, "step": step, "epoch_seconds": elapsed,
                  "lr": current_lr(schedule, state.opt_state, step - 1),
                  **{f"train_{k}": v for k, v in
                     run.task.summarize(jax.device_get(state.sums)).items()},
                  **{f"valid_{k}": v for k, v in valid.items()}}
        stop, scale = control.update(epoch + 1, valid)
        if scale is not None:  # the plateau schedule's rate for the next epoch
            record["lr_scale"] = scale
            state = state.replace(opt_state=set_plateau_scale(state.opt_state, scale,
                                                              replicated(run.mesh)))
        history.append(record)
        save(step, state, valid)
        table.row(record)
        monitor.append_jsonl(metrics_path, record)
        if board is not None:
            board.write(record)
        plot(history, force=stop or step >= total_steps)
        if stop:
            es = control.early_stopping
            print(f"Early stopping after epoch {epoch + 1}: valid_{es.metric} has not improved "
                  f"on {es.best:.4g} (epoch {es.best_epoch}) for {es.patience} epoch(s).",
                  file=sys.stderr, flush=True)
            break
    ckpt.wait()
    # The test split reports the checkpoint chosen on validation (what --eval_only restores).
    best = ckpt.best_step()
    if best is not None and best != step:  # (a damaged best: named, the next older one used)
        best, state, _ = ckpt.restore_good(state, run.mesh, first=best)
    test = evaluator.metrics(state, "test")
    if board is not None:
        board.write({"step": step, **{f"test_{k}": v for k, v in test.items()}})
        board.close()
    result = {
        **{f"test_{k}": v for k, v in test.items()},
        "epochs": config.num_epochs,
        "steps": step,
        **({"stopped_epoch": control.stopped_epoch} if control.stopped_epoch else {}),
        "best_step": best,
        "devices": run.mesh.devices.size,
        "workdir": str(workdir),
        "wall_seconds": round(time.perf_counter() - t_start, 3),
    }
    if complete:
        result["already_complete"] = True
    else:
        result.update({
            "train_seconds": round(train_seconds, 3),
            "compile_seconds": round(compile_seconds + evaluator.compile_seconds, 3),
            "images_per_second": round(images / train_seconds, 1) if train_seconds else 0.0,
        })
    if history:
        pick = max if run.task.best_mode == "max" else min
        result["best_valid_" + run.task.best_metric] = pick(
            r.get("valid_" + run.task.best_metric, -math.inf if pick is max else math.inf)
            for r in history)
    monitor.append_jsonl(metrics_path, {"final": True, **result})
    return result
