"""The segmentation, reconstruction and regression tasks end to end through `fit` and
`evaluate_checkpoint` on tiny real data: a U-Net on the generated shapes (per-class IoU,
Dice, the overlay PNG), the conv autoencoder on the digits (PSNR) and a regression of the
rotation angle of the digits (MAE, lower is better)."""

import numpy as np
import pytest
from train_helpers import tiny_config

import jaxcnn
from jaxcnn.data import load_shapes, make_shapes
from jaxcnn.data.synthetic import SHAPE_CLASSES
from jaxcnn.train import evaluate_checkpoint, fit


def _small(splits, n_train, n_test):
    splits.train = splits.train.subset(np.arange(n_train))
    splits.test = splits.valid = splits.test.subset(np.arange(n_test))
    return splits


def test_shapes_have_per_class_masks():
    images, masks = make_shapes(8, 32, seed=3)
    assert images.shape == (8, 32, 32, 3) and images.dtype == np.uint8
    assert masks.shape == (8, 32, 32) and set(np.unique(masks)) <= {0, 1, 2, 3}
    assert len(set(np.unique(masks))) >= 3  # background and at least two shape classes
    # shape pixels are brighter than the background they were drawn on
    for image, mask in zip(images, masks, strict=True):
        assert image[mask > 0].mean() > image[mask == 0].mean() + 40
    again, _ = make_shapes(8, 32, seed=3)
    np.testing.assert_array_equal(images, again)  # deterministic given the seed


def test_overlay_colours_the_mask_classes_and_leaves_background(tmp_path):
    from jaxcnn.train.monitor import overlay_masks, plot_segmentation

    images = np.full((2, 4, 4, 3), 100, np.uint8)
    masks = np.zeros((2, 4, 4), np.int32)
    masks[0, 0, 0], masks[1, 1, 1] = 1, 3
    out = overlay_masks(images, masks, alpha=0.5)
    assert (out[masks == 0] == 100).all()
    np.testing.assert_array_equal(out[0, 0, 0], np.round((100 + np.array([31, 119, 180])) / 2))
    np.testing.assert_array_equal(out[1, 1, 1], np.round((100 + np.array([44, 160, 44])) / 2))
    plot_segmentation(images, masks, masks[::-1], list(SHAPE_CLASSES), tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_unet_segmentation_end_to_end_with_overlay_png(tmp_path):
    config = tiny_config("unet", n_filters=4, dropout=0.0)
    config.data.batch_size = 16
    config.data.flip = True
    config.data.vertical_flip = True
    config.checkpoint.every_steps = 0
    splits = _small(load_shapes(16), 64, 32)
    result = fit(config, tmp_path, data=splits)
    for key in ("test_iou", "test_dice", "test_accuracy", "test_iou_0"):
        assert 0.0 <= result[key] <= 1.0
    assert result["best_valid_iou"] == max(
        r["valid_iou"] for r in _records(tmp_path) if "valid_iou" in r)
    evaluated = evaluate_checkpoint(config, tmp_path, data=splits)
    assert evaluated["test_iou"] == pytest.approx(result["test_iou"])
    png = tmp_path / "segmentation.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and evaluated["segmentation_plot"] == str(png)
    assert len(SHAPE_CLASSES) == 4


def _records(workdir):
    import json

    return [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_conv_autoencoder_reconstruction_end_to_end(tmp_path):
    config = tiny_config("conv_autoencoder")
    config.data.image_size = 28
    config.data.max_examples = 128
    config.data.mean, config.data.std = (0.0,), (255.0,)
    config.data.batch_size = 16
    config.optimizer.lr = 2e-3
    config.num_epochs = 4
    config.checkpoint.every_steps = 0
    result = fit(config, tmp_path)
    records = [r for r in _records(tmp_path) if "valid_psnr" in r]
    # it learns to reconstruct: the MSE loss down, PSNR (dB) up on held-out digits too
    assert records[-1]["train_loss"] < records[0]["train_loss"] / 2
    assert result["best_valid_psnr"] > records[0]["valid_psnr"] + 1.0
    evaluated = evaluate_checkpoint(config, tmp_path)  # the best checkpoint, as fit's test
    assert evaluated["test_psnr"] == pytest.approx(result["test_psnr"])


@pytest.mark.slow
def test_regression_of_the_rotation_angle_end_to_end(tmp_path):
    config = tiny_config("lenet5", activation="relu")
    config.task = "regression"
    config.task_kwargs.loss = "l1"
    config.data.source = "rotated_digits"
    config.data.max_examples = 256
    config.num_epochs = 3
    config.checkpoint.every_steps = 0
    result = fit(config, tmp_path)
    records = [r for r in _records(tmp_path) if "valid_mae" in r]
    # the targets are uniform in [-1, 1]: predicting 0 scores an MAE of 0.5
    assert result["best_valid_mae"] == min(r["valid_mae"] for r in records) < 0.45
    assert result["test_rmse"] >= result["test_mae"] > 0


def test_reconstruction_target_undoes_per_channel_normalization():
    import jax
    import jax.numpy as jnp

    from jaxcnn.train import get_task

    config = tiny_config()
    config.data.mean = (10.0, 20.0, 30.0)
    config.data.std = (2.0, 4.0, 8.0)
    task = get_task("reconstruction", config)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    normalized = (pixels - np.array(config.data.mean)) / np.array(config.data.std)
    loss, sums = jax.jit(task.loss)(jnp.asarray(pixels / 255.0), {"image": normalized})
    assert float(loss) < 1e-10  # the output equal to the [0, 1] input: zero error
    assert float(sums["psnr"]) / 2 > 90  # capped at 100 dB


def test_regression_loss_and_head_size_follow_the_targets():
    import jax
    import jax.numpy as jnp

    from jaxcnn import losses
    from jaxcnn.data import load_rotated_digits
    from jaxcnn.train import get_task

    config = tiny_config()
    config.task_kwargs.loss = "huber"
    config.task_kwargs.delta = 0.5
    task = get_task("regression", config)
    pred = jnp.asarray([[0.0, 1.0], [2.0, -1.0]])
    target = jnp.asarray([[0.5, 1.0], [0.0, 0.0]])
    loss, sums = jax.jit(task.loss)(pred, {"target": target})
    expect = losses.huber_loss(pred, target, delta=0.5, reduction="none").mean(axis=1).mean()
    assert float(loss) == pytest.approx(float(expect))
    assert float(sums["mae"]) == pytest.approx(0.25 + 1.5)  # per-example mean |error|, summed
    s = task.summarize({k: float(v) for k, v in sums.items()})
    assert s["rmse"] == pytest.approx(np.sqrt(s["mse"]))
    splits = load_rotated_digits(32)
    assert task.num_outputs(splits) == 1 and splits.train.arrays["target"].shape[1] == 1
    assert np.abs(splits.train.arrays["target"]).max() <= 1.0
    with pytest.raises(jaxcnn.ConfigError, match="regression loss"):
        config.task_kwargs.loss = "hinge"
        get_task("regression", config)
