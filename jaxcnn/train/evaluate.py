"""`evaluate_checkpoint` (--eval_only): the best checkpoint of a workdir (or a given step)
on the test split: the task's metrics and, for class scores, the per-class confusion
matrix."""

from __future__ import annotations

import os
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcnn.data.sources import Splits
from jaxcnn.errors import CheckpointError
from jaxcnn.train import monitor
from jaxcnn.train.checkpoint import Checkpointer
from jaxcnn.train.optim import make_optimizer
from jaxcnn.train.run import Evaluator, Run, initial_state, setup
from jaxcnn.train.state import TrainState
from jaxcnn.train.steps import make_eval_step, make_predict_step


def confusion_matrix(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [K, K]: entry (i, j) counts examples of class i predicted as class j."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(true), np.asarray(pred)), 1)
    return matrix


def _predictions(run: Run, state: TrainState, split: str, limit: int | None = None
                 ) -> np.ndarray:
    """The argmax class of every example (or pixel, for dense outputs; a single logit is
    thresholded at 0) of `split`, or of its first `limit` examples."""
    predictor = Evaluator(run, make_predict_step(run.model, run.task, run.augment,
                                                 tta=run.config.data.tta))
    preds, n = [], len(getattr(run.splits, split)) if limit is None else limit
    try:
        for batch in predictor.batches(split):
            logits = predictor.call(state, batch)
            preds.append(np.asarray(jnp.argmax(logits, -1) if logits.shape[-1] > 1
                                    else (logits[..., 0] > 0).astype(jnp.int32)))
            if sum(len(p) for p in preds) >= n:
                break
    finally:
        predictor.close()
    return np.concatenate(preds)[:n]


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
                        data: Splits | None = None, step: int | None = None) -> dict:
    """Restore the best checkpoint (or `step`) and report the task's metrics on the test
    split; for class scores also the per-class accuracy and the confusion matrix
    (confusion.png, and eval.jsonl); for segmentation the first test images with their true
    and predicted masks overlaid (segmentation.png)."""
    workdir = Path(workdir)
    run = setup(config, data=data)
    tx, _ = make_optimizer(config, run.variables["params"], run.steps_per_epoch)
    state = initial_state(run, tx)
    ckpt = Checkpointer(workdir, best_metric=run.task.best_metric, best_mode=run.task.best_mode,
                        read_only=True)
    try:
        if step is not None:
            state, _ = ckpt.restore(step, state, run.mesh)
        elif (found := ckpt.restore_good(state, run.mesh, first=ckpt.best_step())) is None:
            raise CheckpointError(
                f"no checkpoint in {ckpt.directory}; train first with the same --workdir."
            )
        else:  # the best good one: a damaged best is named and the next older one used
            step, state, _ = found
    finally:
        ckpt.manager.close()
    evaluator = Evaluator(run, make_eval_step(run.model, run.task, run.augment,
                                              tta=run.config.data.tta))
    try:
        metrics = evaluator.metrics(state, "test")
    finally:
        evaluator.close()
    result = {"step": step, **{f"test_{k}": v for k, v in metrics.items()}}
    if run.task.reports_confusion:
        k = run.splits.num_classes
        matrix = confusion_matrix(np.asarray(run.splits.test.arrays["label"]),
                                  _predictions(run, state, "test"), k)
        names = list(run.splits.class_names) or [str(i) for i in range(k)]
        monitor.plot_confusion(matrix, names, workdir / "confusion.png")
        result["confusion_matrix"] = matrix.tolist()
        result["per_class_accuracy"] = {
            names[i]: float(matrix[i, i] / max(matrix[i].sum(), 1)) for i in range(k)}
        result["confusion_plot"] = str(workdir / "confusion.png")
    if run.task.reports_overlay:
        n = min(6, len(run.splits.test))
        test = run.splits.test.arrays
        names = list(run.splits.class_names) or [str(c) for c in range(run.splits.num_classes)]
        monitor.plot_segmentation(test["image"][:n], test["mask"][:n],
                                  _predictions(run, state, "test", n), names,
                                  workdir / "segmentation.png")
        result["segmentation_plot"] = str(workdir / "segmentation.png")
    monitor.write_jsonl(workdir / "eval.jsonl", [result])
    return result
