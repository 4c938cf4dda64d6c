"""The detection task: the model's inputs and losses, mAP of a split computed in original
pixels, degenerate target boxes refused naming the image and box, the drawing of `jaxcnn
detect`; and (slow) the real entry points on a generated VOC tree: train.py with data
parallelism over the 4 test devices, an exact resume, the NaN guard, `jaxcnn detect` on the
trained workdir and its --eval table."""

import json
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import DatasetError
from jaxcnn.data.sources import Source, Splits
from jaxcnn.detection.cli import draw, label_names
from jaxcnn.train import default_config, get_task

ROOT = Path(__file__).resolve().parents[1]


def _batch():
    boxes = np.zeros((2, 2, 4), np.float32)
    boxes[0, 0] = [2, 2, 10, 12]  # 8 x 10 px at 32 x 32: small, but large in the original
    boxes[1] = [[0, 0, 16, 16], [8, 8, 30, 28]]
    return {
        "image": jnp.zeros((2, 32, 32, 3)),
        "boxes": jnp.asarray(boxes),
        "box_labels": jnp.asarray([[0, 0], [1, 0]]),
        "box_mask": jnp.asarray([[True, False], [True, True]]),
        "orig_size": jnp.asarray([[480, 640], [32, 32]], jnp.int32),
    }


def test_task_feeds_one_based_labels_and_sums_the_four_losses():
    task = get_task("detection", default_config())
    b = _batch()
    images, sizes, targets = task.model_inputs(b)
    np.testing.assert_array_equal(sizes, [[32, 32], [32, 32]])
    np.testing.assert_array_equal(targets["labels"], [[1, 1], [2, 1]])  # 0 is the background
    losses = {"loss_objectness": 0.5, "loss_rpn_box_reg": 0.25, "loss_classifier": 1.0,
              "loss_box_reg": 0.125}  # fmt: skip
    total, sums = task.loss({k: jnp.float32(v) for k, v in losses.items()}, b)
    assert float(total) == 1.875 and float(sums["count"]) == 2.0
    assert float(sums["loss_classifier"]) == 2.0 and float(sums["loss"]) == 3.75
    assert task.best_metric == "map_50" and task.background_class


def test_map_of_a_split_is_computed_in_original_pixels():
    task = get_task("detection", default_config())
    b = _batch()
    perfect = {
        "boxes": b["boxes"], "scores": jnp.asarray([[0.9, 0.0], [0.8, 0.7]]),
        "labels": b["box_labels"] + 1, "valid": b["box_mask"],
    }  # fmt: skip
    wrong = dict(perfect, labels=jnp.where(b["box_mask"], 3 - perfect["labels"], 0))
    for outputs, expect in ((perfect, 1.0), (wrong, 0.0)):
        # Two eval batches, the second all padding (weight 0): padding never counts.
        first = task.eval_metrics(outputs, {**b, "weight": jnp.ones(2)})
        pad = task.eval_metrics(outputs, {**b, "weight": jnp.zeros(2)})
        metrics = task.reduce([first, pad])
        assert metrics["map_50"] == pytest.approx(expect)
        assert metrics["voc_map"] == pytest.approx(expect)
    # The 8 x 10 box of image 0 is 160 x 150 pixels in its 640 x 480 original: COCO "large"
    # (> 96^2); the boxes of image 1 (kept at 32 x 32) are small.
    assert metrics["map_large"] == 0.0 and metrics["map_medium"] == -1.0


def test_degenerate_target_boxes_are_refused_naming_the_image_and_box():
    boxes = np.zeros((3, 2, 4), np.float32)
    boxes[:, 0] = [1, 1, 5, 5]
    boxes[2, 1] = [7, 3, 7, 9]  # zero width
    mask = np.array([[True, False], [True, False], [True, True]])
    source = Source({"image": np.zeros((3, 16, 16, 3), np.uint8), "boxes": boxes,
                     "box_labels": np.zeros((3, 2), np.int32), "box_mask": mask})  # fmt: skip
    task = get_task("detection", default_config())
    with pytest.raises(DatasetError, match=r"train split, image 2: box 1 = \[7.0, 3.0, 7.0, 9.0\]"):
        task.check_data(Splits("t", source, source, source, ("a",)))
    mask[2, 1] = False  # as padding, the same row is fine
    task.check_data(Splits("t", source, source, source, ("a",)))


def test_label_names_and_drawn_detections(tmp_path):
    assert label_names(3, ("cat", "dog")) == ["__background__", "cat", "dog"]
    assert label_names(2, ("__background__", "raccoon")) == ["__background__", "raccoon"]
    assert label_names(3, ()) == ["0", "1", "2"]
    image = np.zeros((60, 80, 3), np.uint8)
    found = {"boxes": np.array([[10, 15, 50, 45]], np.float32), "scores": np.array([0.93]),
             "labels": np.array([1])}  # fmt: skip
    draw(image, found, ["__background__", "raccoon"], tmp_path / "out" / "x.png")
    from PIL import Image

    drawn = np.asarray(Image.open(tmp_path / "out" / "x.png"))
    assert drawn.shape == (60, 80, 3)
    assert drawn[30, 10].any() and not drawn[30, 30].any()  # the box edge, not its inside
    draw(image, found, ["__background__", "raccoon"], tmp_path / "small.png", max_side=40,
         colors=16)  # fmt: skip
    small = Image.open(tmp_path / "small.png")
    assert small.size == (40, 30) and small.mode == "P"
    assert np.asarray(small.convert("RGB"))[15, 5].any()  # the edge moved with the scale


def _tree(root: Path, n: int = 16) -> None:
    from test_data_voc import FLAT, write_image

    rng = np.random.default_rng(0)
    for i in range(n):
        x, y = rng.integers(0, 24, 2)
        write_image(root, FLAT, f"im{i}", (64, 56),
                    [("raccoon", x, y, x + 32, y + 28, 0)], "train" if i < n - 4 else "test")


SMALL = {
    "data.image_size": 64, "data.batch_size": 4, "data.eval_batch_size": 4,
    "model.kwargs.min_size": 64, "model.kwargs.max_size": 64,
    "model.kwargs.rpn_pre_nms_top_n_train": 200, "model.kwargs.rpn_post_nms_top_n_train": 100,
    "model.kwargs.rpn_pre_nms_top_n_test": 200, "model.kwargs.rpn_post_nms_top_n_test": 100,
    "model.kwargs.box_batch_size_per_image": 32, "model.kwargs.representation_size": 64,
    "schedule.warmup_epochs": 0.5, "progress": False,
}  # fmt: skip


def _train(tmp_path: Path, workdir: str, epochs: int, **extra) -> dict:
    overrides = {"data.path": tmp_path, **SMALL, "num_epochs": epochs, **extra}
    cmd = [sys.executable, str(ROOT / "train.py"), "--config",
           str(ROOT / "configs/raccoon_fasterrcnn.py"), "--workdir", str(tmp_path / workdir)]
    cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
    cmd.append("--config.model.kwargs.fixed_size=(64, 64)")
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_train_py_detection_resumes_exactly_and_detect_uses_the_workdir(tmp_path):
    _tree(tmp_path)
    straight = json.loads(_train(tmp_path, "a", 2).stdout.strip().splitlines()[-1])
    assert straight["devices"] == 4  # data parallel over the forced CPU devices
    _train(tmp_path, "b", 1)
    resumed = json.loads(_train(tmp_path, "b", 2).stdout.strip().splitlines()[-1])
    for key in ("test_map", "test_map_50", "test_voc_map"):
        assert resumed[key] == straight[key], key
    hist_a = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    hist_b = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert hist_a[1]["train_loss"] == hist_b[1]["train_loss"]
    # The trained workdir through `jaxcnn detect`: PNGs, one JSON line per image, and --eval.
    image = tmp_path / "images" / "im13.png"
    cmd = [sys.executable, "-m", "jaxcnn", "detect", str(image), "--weights",
           str(tmp_path / "b"), "--threshold", "0.0", "--out", str(tmp_path / "drawn")]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["image"] == str(image) and (tmp_path / "drawn" / "im13.png").is_file()
    assert all(d["label"] == "raccoon" for d in record["detections"])
    cmd = [sys.executable, "-m", "jaxcnn", "detect", "--eval", str(tmp_path), "--weights",
           str(tmp_path / "b")]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
    assert "mAP@0.5" in out.stdout and "AP@0.5 raccoon" in out.stdout
    table = json.loads(out.stdout.strip().splitlines()[-1])
    assert table["images"] == 4 and 0.0 <= table["map_50"] <= 1.0


@pytest.mark.slow
def test_train_py_detection_nan_guard_stops_with_a_named_step(tmp_path):
    _tree(tmp_path, 12)
    out = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--config",
         str(ROOT / "configs/raccoon_fasterrcnn.py"), "--workdir", str(tmp_path / "nan"),
         *[f"--config.{k}={v}" for k, v in {"data.path": tmp_path, **SMALL,
                                             "optimizer.lr": 1e38, "num_epochs": 2,
                                             "schedule.name": "constant"}.items()],
         "--config.model.kwargs.fixed_size=(64, 64)"],
        capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert out.returncode != 0
    assert "non-finite loss, gradient or update at step" in out.stderr


def test_fine_tune_config_needs_the_coco_weights_and_says_so_offline(tmp_path, monkeypatch):
    import jaxcnn
    from configs import raccoon_fasterrcnn_finetune
    from jaxcnn.train import load_init_variables

    config = raccoon_fasterrcnn_finetune.get_config()
    assert config.model.name == "fasterrcnn_resnet50_fpn" and config.init.reinit_head
    monkeypatch.setenv("JAXCNN_CACHE", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(jaxcnn.OfflineError, match="fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"):
        load_init_variables(config.init.path, config)
