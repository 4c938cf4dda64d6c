"""The localization task and model: the target is the largest box, perfect predictions score
IoU 1 and zero box loss, images without a box are left out; and (slow) the real entry point
trains on a generated VOC tree."""

import json
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import ConfigError, create_model
from jaxcnn.models.localizer import LocalizationOutputs
from jaxcnn.train import default_config, get_task
from jaxcnn.train.localization_task import largest_box

ROOT = Path(__file__).resolve().parents[1]


def _batch():
    boxes = np.zeros((3, 2, 4), np.float32)
    boxes[0] = [[0, 0, 8, 8], [4, 4, 28, 20]]  # the second is larger
    boxes[1] = [[2, 2, 30, 30], [0, 0, 31, 31]]  # the larger one is padding
    return {
        "image": jnp.zeros((3, 32, 32, 3)),
        "boxes": jnp.asarray(boxes),
        "box_labels": jnp.asarray([[0, 2], [1, 0], [0, 0]]),
        "box_mask": jnp.asarray([[True, True], [True, False], [False, False]]),
    }


def test_largest_valid_box_is_the_target():
    b = _batch()
    box, label, has = largest_box(b["boxes"], b["box_labels"], b["box_mask"])
    np.testing.assert_array_equal(box[:2], [[4, 4, 28, 20], [2, 2, 30, 30]])
    np.testing.assert_array_equal(label[:2], [2, 1])
    np.testing.assert_array_equal(has, [True, True, False])


@pytest.mark.parametrize("box_loss", ["smooth_l1", "l2"])
def test_perfect_prediction_has_iou_one_and_no_box_loss(box_loss):
    config = default_config()
    config.task_kwargs.box_loss = box_loss
    task = get_task("localization", config)
    b = _batch()
    target = jnp.asarray([[16, 12, 24, 16], [16, 16, 28, 28], [5, 5, 5, 5]], jnp.float32) / 32
    logits = jnp.asarray([[0, 0, 9.0], [0, 9.0, 0], [9.0, 0, 0]])
    loss, sums = task.loss(LocalizationOutputs(logits=logits, boxes=target), b)
    assert float(sums["count"]) == 2  # the image without a box is left out
    assert float(sums["mean_iou"]) == pytest.approx(2.0)
    assert float(sums["iou50_accuracy"]) == 2.0 and float(sums["accuracy"]) == 2.0
    assert float(loss) == pytest.approx(float(np.log1p(2 * np.exp(-9.0))), abs=1e-6)  # CE only
    shifted = target.at[:, 0].add(0.4)  # moved 0.4 of the image right: IoU 0.30, 0.37
    sums = task.eval_metrics(
        LocalizationOutputs(logits=logits, boxes=shifted), b | {"weight": jnp.ones(3)}
    )
    assert float(sums["mean_iou"]) / 2 == pytest.approx((11.2 / 36.8 + 15.2 / 40.8) / 2, rel=1e-4)
    assert float(sums["iou50_accuracy"]) == 0.0


def test_localizer_outputs_and_bad_options():
    import jax

    model = create_model(
        "localizer", num_classes=3, backbone="small_cnn", backbone_kwargs={"width": 4}
    )
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape)))
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(x.shape)), variables)
    assert out.logits.shape == (2, 3) and out.boxes.shape == (2, 4)
    with pytest.raises(ConfigError, match="pool must be one of"):
        create_model("localizer", pool="max")
    with pytest.raises(ConfigError, match="classification backbone"):
        create_model("localizer", backbone="unet")
    with pytest.raises(ConfigError, match="unknown localization task_kwargs"):
        config = default_config()
        config.task_kwargs.box_weigth = 2.0
        get_task("localization", config)


@pytest.mark.slow
def test_train_py_localization_on_a_generated_voc_tree(tmp_path):
    from test_data_voc import FLAT, write_image

    rng = np.random.default_rng(0)
    for i in range(12):
        x, y = rng.integers(0, 20, 2)
        split = "train" if i < 8 else "test"
        write_image(
            tmp_path, FLAT, f"im{i}", (48, 40), [("raccoon", x, y, x + 24, y + 18, 0)], split
        )
    overrides = {
        "data.path": tmp_path, "data.image_size": 32, "data.batch_size": 4,
        "data.eval_batch_size": 4, "num_epochs": 3, "schedule.warmup_epochs": 1,
        "progress": False, "model.kwargs.backbone": "small_cnn",
    }  # fmt: skip
    config = str(ROOT / "configs/raccoon_localization.py")
    run = str(tmp_path / "run")
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", config, "--workdir", run]
    cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0.0 <= result["test_mean_iou"] <= 1.0 and "test_iou50_accuracy" in result
    assert result["epochs"] == 3
