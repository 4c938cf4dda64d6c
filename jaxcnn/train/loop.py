"""The training loop: `fit(config, workdir)` (train, resume, checkpoint, log), `lr_find`
and `evaluate_checkpoint` (--eval_only). Data flows one way: config -> data source -> model
and state -> compiled step -> checkpoints and logs."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxcnn.data.pipeline import (
    check_batch_size,
    eval_batches,
    make_feeder,
    make_mesh,
    replicated,
    steps_per_epoch,
    train_batches,
    train_indices,
)
from jaxcnn.data.sources import Splits, load_data
from jaxcnn.errors import CheckpointError, ConfigError, TrainingError
from jaxcnn.models import create_model, get_model_spec, model_options
from jaxcnn.train import monitor
from jaxcnn.train.checkpoint import Checkpointer, save_config
from jaxcnn.train.config import check_image_size, validate_config
from jaxcnn.train.init import load_init_variables, merge_variables
from jaxcnn.train.optim import current_lr, make_optimizer
from jaxcnn.train.state import TrainState, create_state
from jaxcnn.train.steps import (
    Preprocess,
    jit_eval_step,
    jit_train_step,
    make_eval_step,
    make_predict_step,
    make_train_step,
)
from jaxcnn.train.tasks import Task, get_task

TxWrap = Callable[[optax.GradientTransformation, Any], optax.GradientTransformation]


@dataclasses.dataclass
class Run:
    """Everything built from a config before the first compile."""

    config: ml_collections.ConfigDict
    mesh: jax.sharding.Mesh
    splits: Splits
    model: nn.Module
    task: Task
    prep: Preprocess
    steps_per_epoch: int
    eval_batch_size: int
    variables: dict


def setup(config: ml_collections.ConfigDict, *, data: Splits | None = None,
          init_variables: dict | None = None) -> Run:
    """Validate the config, load the data, build the model and its initial variables.
    Every config and data error is raised here, before anything is compiled."""
    validate_config(config)
    mesh = make_mesh()
    check_batch_size(config.data.batch_size, mesh)
    eval_bs = config.data.eval_batch_size or config.data.batch_size
    check_batch_size(eval_bs, mesh, "data.eval_batch_size")
    spec = get_model_spec(config.model.name)
    task = get_task(config.task or spec.task, config)
    splits = data if data is not None else load_data(config.data, seed=config.seed)
    missing = [k for k in task.batch_keys if k not in splits.train.arrays]
    if missing:
        raise ConfigError(
            f"task {task.name!r} needs {missing} in every example; dataset {splits.name!r} "
            f"has {sorted(splits.train.arrays)}."
        )
    spe = steps_per_epoch(len(splits.train), config.data.batch_size)
    if spe == 0:
        raise ConfigError(
            f"data.batch_size={config.data.batch_size} is larger than the {len(splits.train)} "
            "training examples; lower it."
        )
    channels = splits.train.image_shape[-1]
    check_image_size(config, splits.train.image_shape[:2])
    if len(config.data.mean) not in (1, channels):
        raise ConfigError(
            f"data.mean has {len(config.data.mean)} values but the images have {channels} "
            "channel(s)."
        )
    kwargs = dict(config.model.kwargs)
    sized_by_data = ("classification", "segmentation", "localization")
    if task.name in sized_by_data and "num_classes" not in kwargs:
        kwargs["num_classes"] = splits.num_classes
    if "in_channels" in model_options(config.model.name) and "in_channels" not in kwargs:
        kwargs["in_channels"] = channels  # the data decides: digits 1, CIFAR 3
    if config.bf16:
        kwargs["dtype"] = jnp.bfloat16  # compute only: param_dtype stays float32
    model = create_model(config.model.name, **kwargs)
    prep = Preprocess.from_config(config.data)
    example = prep(None, {k: jnp.asarray(v) for k, v in splits.train.take(np.arange(2)).items()},
                   train=False)
    rngs = {"params": jax.random.PRNGKey(config.seed),
            "dropout": jax.random.PRNGKey(config.seed + 1)}
    # train=True creates the layers that only exist in training (auxiliary heads).
    init = jax.jit(lambda r, b: model.init(r, *task.model_inputs(b), train=True),
                   out_shardings=replicated(mesh))
    variables = dict(init(rngs, example))
    variables.setdefault("batch_stats", {})
    variables = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    loaded = init_variables
    if loaded is None and config.init.path:
        loaded = load_init_variables(config.init.path, config)
    if loaded is not None:
        # ImageNet weights for another number of classes: keep the backbone, fresh head.
        reinit = config.init.reinit_head or config.init.path.startswith("torchvision:")
        merged = merge_variables(variables, loaded, reinit_head=reinit,
                                 where=config.init.path or "passed to fit()")
        variables = jax.device_put(merged, replicated(mesh))
    return Run(config, mesh, splits, model, task, prep, spe, eval_bs, variables)


def sum_keys(run: Run) -> tuple[str, ...]:
    example = run.prep(None, {k: jnp.asarray(v) for k, v in run.splits.train.take(np.arange(2))
                              .items()}, train=False)

    def sums(variables: dict, batch: dict) -> dict:
        out, _ = run.model.apply(variables, *run.task.model_inputs(batch), train=True,
                                 rngs={"dropout": jax.random.PRNGKey(0)}, mutable=["batch_stats"])
        return run.task.loss(out, batch)[1]

    return tuple(sorted(jax.eval_shape(sums, run.variables, example)))


def initial_state(run: Run, tx: optax.GradientTransformation, mesh: Any = None) -> TrainState:
    """A fresh TrainState from `run`'s initial variables, replicated on `mesh` (or run.mesh)."""
    variables = jax.device_get(run.variables) if mesh is not None else run.variables
    state = create_state(variables, tx, run.config.seed, sum_keys(run))
    return jax.device_put(state, replicated(run.mesh if mesh is None else mesh))


class _Evaluator:
    """Runs the eval step over a split, compiled once on its first batch."""

    def __init__(self, run: Run, step_fn: Callable):
        self.run = run
        self.jitted = jit_eval_step(step_fn, run.mesh)
        self.compiled = None
        self.compile_seconds = 0.0
        self.feeders: dict[str, Any] = {}

    def batches(self, split: str):
        """Padded, weighted eval batches of `split` (valid or test)."""
        source = getattr(self.run.splits, split)
        if split not in self.feeders:
            self.feeders[split] = make_feeder(source, self.run.mesh, self.run.config.data.on_device
                                              if self.run.config.data.on_device == "auto"
                                              else self.run.config.data.on_device == "on")
        return eval_batches(self.feeders[split], len(source), self.run.eval_batch_size)

    def call(self, state: TrainState, batch: dict) -> Any:
        """The compiled step on one batch."""
        if self.compiled is None:
            t0 = time.perf_counter()
            self.compiled = self.jitted.lower(state, batch).compile()
            self.compile_seconds = time.perf_counter() - t0
        return self.compiled(state, batch)

    def metrics(self, state: TrainState, split: str) -> dict[str, float]:
        """Summarized metrics of the whole split."""
        total = None
        for batch in self.batches(split):
            out = jax.device_get(self.call(state, batch))
            total = out if total is None else {k: total[k] + out[k] for k in out}
        return self.run.task.summarize(total)


class _Preemption:
    """SIGTERM (what preemptible clouds send) sets a flag: the loop finishes the current
    step, saves, and returns. Single-process runs need their own handler: orbax's
    preemption sync point only works multi-host."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> _Preemption:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _check_finite(state: TrainState, run: Run, train_fn: Callable, feeder: Any) -> None:
    bad = int(jax.device_get(state.bad_step))
    if bad < 0:
        return
    where = ""
    if run.config.debug_nans:
        where = " " + _locate_nan(state, run, train_fn, feeder, bad)
    raise TrainingError(
        f"non-finite loss, gradient or update at step {bad} (epoch "
        f"{bad // run.steps_per_epoch + 1}, batch {bad % run.steps_per_epoch}); training stopped "
        "and the last good checkpoint is "
        f"kept as the latest.{where} Lower optimizer.lr, enable optimizer.clip_norm, or check the "
        "data" + ("." if run.config.debug_nans
                  else "; rerun with --config.debug_nans=True to locate the first NaN.")
    )


def _locate_nan(state: TrainState, run: Run, train_fn: Callable, feeder: Any, bad: int) -> str:
    """Re-run the failing step under checkify (float checks) to name the first NaN."""
    from jax.experimental import checkify

    spe, bs = run.steps_per_epoch, run.config.data.batch_size
    idx = train_indices(run.config.seed, bad // spe, bad % spe, len(run.splits.train), bs)
    batch = feeder.batch(idx)
    checked = jax.jit(checkify.checkify(train_fn, errors=checkify.float_checks))
    err, (_, metrics) = checked(state.replace(bad_step=jnp.full((), -1, jnp.int32)), batch)
    values = ", ".join(f"{k}={float(metrics[k]):.4g}" for k in ("loss", "grad_norm"))
    msg = err.get()
    found = f"checkify: {msg}" if msg else "checkify found no NaN-producing operation"
    return f"Re-run of step {bad}: {values}; {found}."


def _meta(run: Run, step: int, history: list[dict]) -> dict:
    return {
        "step": step,
        "epoch": step // run.steps_per_epoch,
        "step_in_epoch": step % run.steps_per_epoch,
        "steps_per_epoch": run.steps_per_epoch,
        "model": run.config.model.name,
        "history": history,
    }


def fit(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
        data: Splits | None = None, init_variables: dict | None = None,
        tx_wrap: TxWrap | None = None) -> dict:
    """Train `config` in `workdir` (resuming from its latest checkpoint) and return the
    final metrics: test_accuracy (or the task's metric), epochs, train_seconds,
    compile_seconds, images_per_second, ..."""
    t_start = time.perf_counter()
    workdir = Path(workdir)
    run = setup(config, data=data, init_variables=init_variables)
    _prepare_workdir(workdir)
    if tx_wrap is None:  # config.transfer: frozen stages, per-stage rates (or None)
        from jaxcnn.pretrained.transfer import make_tx_wrap

        tx_wrap = make_tx_wrap(config, run.model)
    tx, schedule = make_optimizer(config, run.variables["params"], run.steps_per_epoch,
                                  wrap=tx_wrap)
    state = initial_state(run, tx)
    ckpt = Checkpointer(workdir, keep=config.checkpoint.keep, keep_best=config.checkpoint.keep_best,
                        best_metric=run.task.best_metric, best_mode=run.task.best_mode,
                        async_save=config.checkpoint.async_save)
    try:
        return _train(run, state, tx, schedule, ckpt, workdir, t_start)
    finally:
        ckpt.close()


def _prepare_workdir(workdir: Path) -> None:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise CheckpointError(
            f"cannot write to workdir {workdir}: {err.strerror or err}. Choose a writable "
            "--workdir."
        ) from None


def _train(run: Run, state: TrainState, tx: Any, schedule: Any, ckpt: Checkpointer,
           workdir: Path, t_start: float) -> dict:
    config, spe = run.config, run.steps_per_epoch
    bs = config.data.batch_size
    history: list[dict] = []
    latest = ckpt.latest_step()
    if latest is not None:
        meta = ckpt.read_meta(latest)
        if meta.get("steps_per_epoch") != spe:
            raise ConfigError(
                f"{workdir} holds a run with {meta.get('steps_per_epoch')} steps per epoch but "
                f"this config gives {spe} (another batch size or dataset?); the data order "
                "could not resume exactly. Use a fresh --workdir."
            )
        state, meta = ckpt.restore(latest, state, run.mesh)
        history = list(meta.get("history", []))
        print(f"Resuming from {ckpt.directory / str(latest)}: step {latest}, epoch "
              f"{latest // spe + 1}, batch {latest % spe}", file=sys.stderr, flush=True)
    save_config(workdir, config)
    metrics_path = workdir / "metrics.jsonl"
    monitor.write_jsonl(metrics_path, history)  # drop records newer than the checkpoint

    from jaxcnn.pretrained.transfer import stats_filter

    frozen_stats = stats_filter(config, run.model, run.variables["params"])
    train_fn = make_train_step(run.model, run.task, tx, run.prep, spe, freeze_stats=frozen_stats,
                               eval_forward=config.transfer.freeze == "linear_probe")
    on_device = config.data.on_device
    feeder = make_feeder(run.splits.train, run.mesh,
                         "auto" if on_device == "auto" else on_device == "on")
    evaluator = _Evaluator(run, make_eval_step(run.model, run.task, run.prep))
    table = monitor.EpochTable(run.task.best_metric)
    step = int(jax.device_get(state.step))
    n_train = len(run.splits.train)

    first = train_indices(config.seed, step // spe, step % spe, n_train, bs)
    t0 = time.perf_counter()
    compiled = jit_train_step(train_fn, run.mesh).lower(state, feeder.batch(first)).compile()
    compile_seconds = time.perf_counter() - t0

    train_seconds, images, preempted = 0.0, 0, False
    t_plot = time.perf_counter()
    with _Preemption() as preemption:
        for epoch in range(step // spe, config.num_epochs):
            start = step % spe
            bar = _bar(config, epoch, spe, start)
            t_epoch = time.perf_counter()
            t_log, step_log = t_epoch, step
            for pos, batch in train_batches(feeder, seed=config.seed, epoch=epoch,
                                            start_step=start, n=n_train, batch_size=bs):
                state, _ = compiled(state, batch)
                step = epoch * spe + pos + 1
                if bar is not None:
                    bar.update(1)
                if step % config.log_every == 0 or pos + 1 == spe:
                    sums = jax.device_get(state.sums)
                    _check_finite(state, run, train_fn, feeder)
                    now = time.perf_counter()
                    rate = (step - step_log) * bs / max(now - t_log, 1e-9)
                    if bar is not None:
                        shown = run.task.summarize(sums)
                        bar.set_postfix(loss=f"{shown.get('loss', 0):.4f}",
                                        **{run.task.best_metric[:3]:
                                           f"{shown.get(run.task.best_metric, 0):.4f}"},
                                        img_s=f"{rate:.0f}")
                    t_log, step_log = now, step
                if preemption.requested:
                    preempted = True
                    break
                if (config.checkpoint.every_steps and step % config.checkpoint.every_steps == 0
                        and pos + 1 != spe):
                    _check_finite(state, run, train_fn, feeder)
                    ckpt.save(step, state, _meta(run, step, history))
            jax.block_until_ready(state)
            elapsed = time.perf_counter() - t_epoch
            train_seconds += elapsed
            images += (step - epoch * spe - start) * bs
            if bar is not None:
                bar.close()
            if preempted:
                _check_finite(state, run, train_fn, feeder)
                ckpt.save(step, state, _meta(run, step, history))
                ckpt.wait()
                print(f"SIGTERM: saved step {step} to {ckpt.directory}; rerun the same command "
                      "to resume.", file=sys.stderr, flush=True)
                return {"preempted": True, "step": step, "epoch": step // spe,
                        "workdir": str(workdir)}
            _check_finite(state, run, train_fn, feeder)
            train = run.task.summarize(jax.device_get(state.sums))
            valid = evaluator.metrics(state, "valid")
            record = {"epoch": epoch + 1, "step": step, "epoch_seconds": elapsed,
                      "lr": current_lr(schedule, state.opt_state, step - 1),
                      **{f"train_{k}": v for k, v in train.items()},
                      **{f"valid_{k}": v for k, v in valid.items()}}
            history.append(record)
            ckpt.save(step, state, _meta(run, step, history), metrics=valid)
            table.row(record)
            monitor.append_jsonl(metrics_path, record)
            if time.perf_counter() - t_plot > 30 or epoch + 1 == config.num_epochs:
                # Plotting costs ~0.2 s: redraw at most every 30 s (and at the end).
                monitor.plot_curves(history, workdir / "curves.png", run.task.best_metric)
                t_plot = time.perf_counter()
    ckpt.wait()
    test = evaluator.metrics(state, "test")
    best = ckpt.best_step()
    result = {
        **{f"test_{k}": v for k, v in test.items()},
        "epochs": config.num_epochs,
        "steps": step,
        "train_seconds": round(train_seconds, 3),
        "compile_seconds": round(compile_seconds + evaluator.compile_seconds, 3),
        "images_per_second": round(images / train_seconds, 1) if train_seconds else 0.0,
        "wall_seconds": round(time.perf_counter() - t_start, 3),
        "best_step": best,
        "devices": run.mesh.devices.size,
        "workdir": str(workdir),
    }
    if history:
        result["best_valid_" + run.task.best_metric] = max(
            r.get("valid_" + run.task.best_metric, -math.inf) for r in history
        ) if run.task.best_mode == "max" else min(
            r.get("valid_" + run.task.best_metric, math.inf) for r in history)
    monitor.append_jsonl(metrics_path, {"final": True, **result})
    return result


def _bar(config: Any, epoch: int, total: int, initial: int) -> Any:
    if not config.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{config.num_epochs}",
                leave=False, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)


def lr_find(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
            data: Splits | None = None, init_variables: dict | None = None) -> dict:
    """fast.ai's learning-rate finder: train from the initial state while the rate grows
    exponentially from lr_find.start_lr to end_lr over lr_find.steps steps; stop when the
    smoothed loss exceeds 4x its minimum; save lr_find.png / lr_find.json. The suggestion is
    the rate of steepest descent of the smoothed loss (fast.ai's `steep`)."""
    workdir = Path(workdir)
    run = setup(config, data=data, init_variables=init_variables)
    _prepare_workdir(workdir)
    lf = config.lr_find
    n = max(2, lf.steps)
    schedule = lambda s: lf.start_lr * (lf.end_lr / lf.start_lr) ** (s / (n - 1))
    tx, _ = make_optimizer(config, run.variables["params"], run.steps_per_epoch, schedule=schedule)
    state = initial_state(run, tx)
    train_fn = make_train_step(run.model, run.task, tx, run.prep, run.steps_per_epoch)
    feeder = make_feeder(run.splits.train, run.mesh)
    step_fn = jit_train_step(train_fn, run.mesh)
    bs, spe = config.data.batch_size, run.steps_per_epoch
    lrs, raw, smooth = [], [], []
    avg, best = 0.0, math.inf
    for step in range(n):
        idx = train_indices(config.seed, step // spe, step % spe, len(run.splits.train), bs)
        state, metrics = step_fn(state, feeder.batch(idx))
        loss = float(metrics["loss"])
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
    result = {"suggested_lr": suggested, "min_loss_lr": float(lrs_s[stop]),
              "steps": len(raw), "lr_find_plot": str(workdir / "lr_find.png")}
    monitor.write_jsonl(workdir / "lr_find.jsonl",
                        [{"lr": lr, "loss": lo, "smoothed": s}
                         for lr, lo, s in zip(lrs_s, raw, losses, strict=False)])
    return result


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
                        data: Splits | None = None, step: int | None = None) -> dict:
    """--eval_only: restore the best checkpoint (or `step`), report top-1, top-5 and the
    per-class confusion matrix (confusion.png, confusion.json) on the test split."""
    workdir = Path(workdir)
    run = setup(config, data=data)
    tx, _ = make_optimizer(config, run.variables["params"], run.steps_per_epoch)
    state = initial_state(run, tx)
    ckpt = Checkpointer(workdir, best_metric=run.task.best_metric, best_mode=run.task.best_mode,
                        read_only=True)
    try:
        step = ckpt.best_step() if step is None else step
        if step is None:
            raise CheckpointError(
                f"no checkpoint in {ckpt.directory}; train first with the same --workdir."
            )
        state, _ = ckpt.restore(step, state, run.mesh)
    finally:
        ckpt.manager.close()
    evaluator = _Evaluator(run, make_eval_step(run.model, run.task, run.prep))
    result = {"step": step, **{f"test_{k}": v for k, v in evaluator.metrics(state, "test").items()}}
    if run.task.name == "classification":
        predictor = _Evaluator(run, make_predict_step(run.model, run.task, run.prep))
        n, k = len(run.splits.test), run.splits.num_classes
        preds = []
        for batch in predictor.batches("test"):
            preds.append(np.asarray(jnp.argmax(predictor.call(state, batch), -1)))
        pred = np.concatenate(preds)[:n]
        true = np.asarray(run.splits.test.arrays["label"])
        matrix = np.zeros((k, k), np.int64)
        np.add.at(matrix, (true, pred), 1)
        names = list(run.splits.class_names) or [str(i) for i in range(k)]
        monitor.plot_confusion(matrix, names, workdir / "confusion.png")
        result["confusion_matrix"] = matrix.tolist()
        result["per_class_accuracy"] = {
            names[i]: float(matrix[i, i] / max(matrix[i].sum(), 1)) for i in range(k)}
        result["confusion_plot"] = str(workdir / "confusion.png")
    monitor.write_jsonl(workdir / "eval.jsonl", [result])
    return result


__all__ = ["Run", "evaluate_checkpoint", "fit", "initial_state", "lr_find", "setup", "sum_keys"]
