"""The segmentation task's metrics on constructed cases, numbers worked by hand: per-class
IoU (predicting class 1 on class-2 pixels scores 0, not the 1.0 a foreground-vs-background
IoU gives), mean IoU over the classes present, Dice, pixel accuracy, IoU over a split as
summed intersections over summed unions, padding rows ignored, binary (one-logit) masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.train.config import default_config
from jaxcnn.train.tasks import get_task


def _task():
    return get_task("segmentation", default_config())


def _logits(pred: np.ndarray, k: int) -> jnp.ndarray:
    """Logits whose argmax is `pred` [N, H, W]."""
    return jnp.asarray(np.eye(k, dtype=np.float32)[pred] * 5.0)


def _scores(pred, mask, k=3, weight=None):
    task = _task()
    batch = {"mask": jnp.asarray(mask, jnp.int32)}
    if weight is not None:
        batch["weight"] = jnp.asarray(weight, jnp.float32)
    sums = jax.jit(task.eval_metrics)(_logits(np.asarray(pred), k), batch)
    return task.summarize({k: float(v) for k, v in sums.items()})


def test_wrong_foreground_class_scores_zero_not_one():
    mask = np.zeros((1, 4, 4), int)
    mask[0, :2] = 2  # top half: class 2
    pred = np.zeros((1, 4, 4), int)
    pred[0, :2] = 1  # predicted as class 1
    s = _scores(pred, mask)
    assert s["accuracy"] == 0.5
    assert s["iou_0"] == 1.0 and s["iou_1"] == 0.0 and s["iou_2"] == 0.0
    assert s["iou"] == pytest.approx(1 / 3)  # background, 1, 2: the three classes present
    assert s["dice"] == pytest.approx(1 / 3)
    # only the wrong classes: no background to help
    s = _scores(np.ones((1, 4, 4), int), np.full((1, 4, 4), 2))
    assert s["iou"] == 0.0 and s["accuracy"] == 0.0 and s["dice"] == 0.0


def test_partial_overlap_numbers():
    mask = np.zeros((1, 16), int)
    mask[0, :6] = 1  # 6 pixels of class 1, 10 of background
    pred = np.zeros((1, 16), int)
    pred[0, 2:10] = 1  # 8 predicted, 4 of them right
    s = _scores(pred.reshape(1, 4, 4), mask.reshape(1, 4, 4), k=2)
    assert s["iou_1"] == pytest.approx(4 / 10)  # inter 4, union 6 + 8 - 4
    assert s["iou_0"] == pytest.approx(6 / 12)  # inter 6 (pixels 10..15), union 10 + 8 - 6
    assert s["iou"] == pytest.approx(0.45)
    assert s["dice"] == pytest.approx((8 / 14 + 12 / 18) / 2)
    assert s["accuracy"] == pytest.approx(10 / 16)
    perfect = _scores(mask.reshape(1, 4, 4), mask.reshape(1, 4, 4), k=2)
    assert perfect["iou"] == perfect["dice"] == perfect["accuracy"] == 1.0


def test_split_iou_is_summed_intersection_over_summed_union_and_padding_is_ignored():
    # image A: class 1 fully right (4 px); image B: class 1 predicted on 4 px, true on 12 px
    mask = np.zeros((3, 4, 4), int)
    pred = np.zeros((3, 4, 4), int)
    mask[0, 0] = pred[0, 0] = 1
    mask[1, :3] = 1
    pred[1, 0] = 1
    pred[2] = 2  # a padding row: weight 0, must not count
    s = _scores(pred, mask, weight=[1.0, 1.0, 0.0])
    assert s["iou_1"] == pytest.approx((4 + 4) / (4 + 12))  # not the mean of 1.0 and 1/3
    assert "iou_2" not in s  # class 2 occurs only in the padding row
    assert s["accuracy"] == pytest.approx((16 + 8) / 32)


def test_binary_masks_with_one_logit():
    task = _task()
    mask = np.zeros((1, 2, 2), int)
    mask[0, 0] = 1
    logits = jnp.asarray([[[[3.0], [3.0]], [[3.0], [-3.0]]]])  # predicts 1, 1, 1, 0
    sums = task.eval_metrics(logits, {"mask": jnp.asarray(mask)})
    s = task.summarize({k: float(v) for k, v in sums.items()})
    assert s["iou_1"] == pytest.approx(2 / 3) and s["iou_0"] == pytest.approx(1 / 2)
    assert s["accuracy"] == pytest.approx(3 / 4)
    loss, train_sums = task.loss(logits, {"mask": jnp.asarray(mask)})
    assert float(loss) > 0 and set(train_sums) == set(sums)
    assert task.best_metric == "iou"
