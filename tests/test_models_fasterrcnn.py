"""Faster R-CNN equals torchvision's: the same transformed batch, FPN maps, RPN proposals and
detections for torchvision's weights (drawn with numpy from each parameter's name, scaled so
scores are well separated), and the same four training losses for the same sampled anchors and
proposals. Golden files: tests/golden/make_fasterrcnn_golden.py (torchvision 0.29.1)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxcnn
from jaxcnn.detection import box_iou, detect, run_detector
from jaxcnn.errors import CheckpointError, ConfigError, InputError
from jaxcnn.pretrained import from_torchvision
from jaxcnn.pretrained.convert import flatten_tree
from jaxcnn.pretrained.synthetic import synthetic_photo, synthetic_state_dict
from jaxcnn.pretrained.torchvision import key_map_for

GOLDEN = Path(__file__).parent / "golden" / "fasterrcnn"
KEYS = json.loads((GOLDEN / "keys.json").read_text())
MAX_VALUES = 1024  # as the golden script
MODELS = {"r18": "fasterrcnn_resnet18_fpn", "r50": "fasterrcnn_resnet50_fpn"}


def subsample_index(size: int) -> np.ndarray:
    return np.unique(np.linspace(0, size - 1, min(size, MAX_VALUES)).astype(np.int64))


def state_dict(tag: str, golden) -> dict[str, np.ndarray]:
    state = synthetic_state_dict(KEYS[tag])
    for prefix, factor in zip(golden["scales/names"], golden["scales/factors"], strict=True):
        for name in state:
            if name.startswith(str(prefix)) and name.endswith(".weight"):
                state[name] = state[name] * np.float32(factor)
    return state


@functools.cache
def golden(tag: str):
    return np.load(GOLDEN / f"{tag}.npz")


@functools.cache
def converted(tag: str) -> dict:
    g = golden(tag)
    num_classes = 3 if tag == "train" else int(g["num_classes"])
    name = MODELS.get(tag, "fasterrcnn_resnet18_fpn")
    return from_torchvision(name, state_dict(tag, g), num_classes=num_classes)


def assert_matched(want: dict, got: dict, where: str, iou: float = 0.99, score: float = 1e-3):
    """Every reference box has one in `got` with its label, IoU >= iou, |score diff| <= score."""
    assert len(got["boxes"]) == len(want["boxes"]), where
    if not len(want["boxes"]):
        return
    ious = np.asarray(box_iou(want["boxes"], got["boxes"]))
    for i in range(len(want["boxes"])):
        ok = ious[i] >= iou
        if "labels" in want:
            ok &= got["labels"] == want["labels"][i]
        ok &= np.abs(got["scores"] - want["scores"][i]) <= score
        assert ok.any(), f"{where}: reference box {i} {want['boxes'][i]} has no match"


def _case(tag: str, case: str):
    g = golden(tag)
    model = jaxcnn.create_model(MODELS[tag], num_classes=int(g["num_classes"]),
                                min_size=int(g[f"{case}/min_size"]),
                                max_size=int(g[f"{case}/max_size"]),
                                norm_eps=0.0 if tag == "r50" else 1e-5)  # fmt: skip
    seed = int(g[f"{case}/seed"])
    images = [synthetic_photo(seed + i, int(h), int(w))
              for i, (h, w) in enumerate(g[f"{case}/shapes"])]  # fmt: skip
    return g, model, images


def check_case(tag: str, case: str) -> None:
    g, model, images = _case(tag, case)
    variables = converted(tag)
    batch, sizes, originals = model.transform(images)
    # The transform: torchvision's resized, normalized, padded batch.
    assert batch.shape == tuple(g[f"{case}/batch/shape"])
    np.testing.assert_array_equal(sizes, g[f"{case}/image_sizes"])
    flat = batch.reshape(-1)[subsample_index(batch.size)]
    np.testing.assert_allclose(flat, g[f"{case}/batch/values"], rtol=0, atol=1e-6)
    dets, inter = run_detector(model, variables, batch, sizes)
    # FPN maps within 1e-4 relative.
    (fpn,) = inter["fpn"]
    for level, value in fpn.items():
        value = np.asarray(value)
        assert value.shape == tuple(g[f"{case}/fpn/{level}/shape"]), level
        want = g[f"{case}/fpn/{level}/values"]
        got = value.reshape(-1)[subsample_index(value.size)]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max(),
                                   err_msg=f"{tag} {case} FPN level {level}")  # fmt: skip
    # RPN proposals: the same boxes (resized-image pixels).
    (props,) = inter["proposals"]
    for i in range(len(images)):
        want = g[f"{case}/proposals/{i}"]
        valid = np.asarray(props["valid"][i])
        got = np.asarray(props["boxes"][i])[valid]
        assert len(got) == len(want), (case, i, len(got), len(want))
        ious = np.asarray(box_iou(want, got)).max(axis=1)
        assert (ious >= 0.99).all(), f"{case} image {i}: {np.sum(ious < 0.99)} proposals differ"
    # Detections through the public API, in each image's own pixels.
    results = detect(model, variables, images)
    for i, result in enumerate(results):
        want = {k: g[f"{case}/detections/{i}/{k}"] for k in ("boxes", "scores", "labels")}
        assert_matched(want, result, f"{tag} {case} image {i}")
        assert_matched(result, want, f"{tag} {case} image {i} (reverse)")
        h, w = originals[i]
        assert (result["boxes"][:, 2] <= w + 1e-3).all()
        assert (result["boxes"][:, 3] <= h + 1e-3).all()
    assert dets["boxes"].shape[1] == model.box_detections_per_img


def test_fasterrcnn_resnet18_matches_torchvision_on_two_images_of_different_sizes():
    check_case("r18", "two")


def test_fasterrcnn_resnet18_matches_torchvision_when_max_size_binds():
    check_case("r18", "wide")


def test_fasterrcnn_resnet50_fpn_coco_configuration_matches_torchvision():
    check_case("r50", "two")


def test_training_losses_equal_torchvision_for_the_same_draws():
    g = golden("train")
    kwargs = {k.split("/", 1)[1]: int(g[k]) for k in g.files if k.startswith("kwargs/")}
    model = jaxcnn.create_model("fasterrcnn_resnet18_fpn", num_classes=3, **kwargs)
    images = [synthetic_photo(int(g["seed"]) + i, int(h), int(w))
              for i, (h, w) in enumerate(g["shapes"])]  # fmt: skip
    batch, sizes, originals = model.transform(images)
    assert batch.shape[:3] == (2, *g["batch_shape"][2:])
    np.testing.assert_array_equal(sizes, g["image_sizes"])
    k = 4
    boxes = np.zeros((2, k, 4), np.float32)
    labels = np.zeros((2, k), np.int32)
    mask = np.zeros((2, k), bool)
    p = model.rpn_post_nms_top_n_train
    props = np.zeros((2, p, 4), np.float32)
    props_ok = np.zeros((2, p), bool)
    roi_pos, roi_neg = np.zeros((2, p + k), bool), np.zeros((2, p + k), bool)
    for i in range(2):
        b = jaxcnn.detection.resize_boxes(g[f"boxes/{i}"], originals[i], sizes[i])
        n = len(b)
        boxes[i, :n], labels[i, :n], mask[i, :n] = b, g[f"labels/{i}"], True
        pr = g[f"proposals/{i}"]
        props[i, : len(pr)], props_ok[i, : len(pr)] = pr, True
        for src, dst in ((g[f"roi_pos/{i}"], roi_pos), (g[f"roi_neg/{i}"], roi_neg)):
            dst[i, : len(pr)] = src[: len(pr)]  # torchvision: [proposals, ground truth]
            dst[i, p : p + n] = src[len(pr) :]
    samples = {
        "rpn": (np.stack([g["rpn_pos/0"], g["rpn_pos/1"]]),
                np.stack([g["rpn_neg/0"], g["rpn_neg/1"]])),
        "proposals": (props, props_ok),
        "roi": (roi_pos, roi_neg),
    }  # fmt: skip
    targets = {"boxes": boxes, "labels": labels, "mask": mask}
    variables = converted("train")

    @jax.jit
    def step(params, batch, sizes, targets, samples):
        def total(params):
            losses = model.apply({**variables, "params": params}, batch, sizes, targets,
                                 train=True, samples=samples)
            return sum(losses.values()), losses

        return jax.value_and_grad(total, has_aux=True)(params)

    (_, got), grads = step(variables["params"], batch, sizes, targets, samples)
    for name in ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"):
        np.testing.assert_allclose(float(got[name]), float(g[f"loss/{name}"]), rtol=2e-5,
                                   err_msg=name)
    # The gradient of the summed losses is torchvision's, through RoI Align, the FPN and the
    # backbone; the layers torchvision freezes (conv1, layer1: trainable_backbone_layers=3)
    # get none.
    key_map = key_map_for("fasterrcnn_resnet18_fpn", {"params": variables["params"]})
    flat = flatten_tree({"params": grads})
    for key in sorted({k.split("/")[1] for k in g.files if k.startswith("grad/")}):
        want = g[f"grad/{key}/values"]
        value = np.asarray(flat[key_map[key][0]])
        got_values = value.reshape(-1)[subsample_index(value.size)]
        assert value.shape == tuple(g[f"grad/{key}/shape"]), key
        np.testing.assert_allclose(got_values, want, rtol=0, atol=2e-4 * np.abs(want).max(),
                                   err_msg=key)
    frozen = model.frozen_params(variables["params"])
    assert any(jax.tree.leaves(frozen)) and not all(jax.tree.leaves(frozen))
    for is_frozen, grad in zip(jax.tree.leaves(frozen), jax.tree.leaves(grads), strict=True):
        assert (not np.any(np.asarray(grad))) if is_frozen else np.isfinite(grad).all()


def test_classifier_state_dict_is_refused_naming_the_missing_parts():
    keys = [(k.removeprefix("backbone.body."), s) for k, s in KEYS["r50"]
            if k.startswith("backbone.body.")]  # fmt: skip
    keys += [("fc.weight", [1000, 2048]), ("fc.bias", [1000])]
    with pytest.raises(CheckpointError) as info:
        from_torchvision("fasterrcnn_resnet50_fpn", synthetic_state_dict(keys))
    message = str(info.value)
    for part in ("FPN", "RPN head", "RoI heads", "backbone.fpn.inner_blocks.0.0.weight",
                 "rpn.head.cls_logits.weight", "roi_heads.box_predictor.cls_score.weight"):
        assert part in message


def test_strict_conversion_lists_every_problem_at_once():
    state = synthetic_state_dict(KEYS["r18"])
    state.pop("backbone.fpn.layer_blocks.2.0.bias")
    state["rpn.head.extra.weight"] = np.zeros((3,), np.float32)
    state["rpn.head.bbox_pred.bias"] = np.zeros((5,), np.float32)
    with pytest.raises(CheckpointError) as info:
        from_torchvision("fasterrcnn_resnet18_fpn", state, num_classes=5)
    message = str(info.value)
    for part in ("backbone.fpn.layer_blocks.2.0.bias", "rpn.head.extra.weight",
                 "rpn.head.bbox_pred.bias"):
        assert part in message


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((2, 64, 64, 3), np.float32), "rank 3"),
        (np.zeros((64, 64), np.float32), "rank 3"),
        (np.zeros((0, 64, 3), np.float32), "empty side"),
        (np.zeros((64, 64, 3), np.uint8), "integer dtype"),
        (np.zeros((3, 64, 64), np.float32), "CHW"),
        (np.full((64, 64, 3), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_images_are_input_errors(image, match):
    model = jaxcnn.create_model("fasterrcnn_resnet18_fpn")
    with pytest.raises(InputError, match=match):
        model.transform([np.zeros((32, 32, 3), np.float32), image])


def test_options_are_checked():
    with pytest.raises(ConfigError, match="trainable_backbone_layers"):
        model = jaxcnn.create_model("fasterrcnn_resnet18_fpn", trainable_backbone_layers=6)
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x),
                       jax.ShapeDtypeStruct((1, 64, 64, 3), np.float32))  # fmt: skip
    assert jaxcnn.create_model("fasterrcnn_resnet18_fpn", trainable_backbone_layers=0)


def test_coco_weights_are_registered_and_convert_through_the_cli(tmp_path, monkeypatch):
    from safetensors.numpy import save_file

    from jaxcnn.cli import main
    from jaxcnn.pretrained import coco_categories, get_weights, load

    entry = get_weights("fasterrcnn_resnet50_fpn", "DEFAULT")
    assert entry.name == "COCO_V1" and entry.sha256_prefix == "258fb6c6"
    assert entry.meta["_metrics"]["COCO-val2017"]["box_map"] == 37.0
    assert entry.meta["num_params"] == 41_755_286
    assert coco_categories()[:2] == ("__background__", "person") and len(coco_categories()) == 91
    # Offline: the published file cannot be fetched.
    monkeypatch.setenv("JAXCNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("urllib.request.urlopen", _no_network)
    with pytest.raises(jaxcnn.OfflineError, match="fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"):
        load("fasterrcnn_resnet50_fpn", "COCO_V1")
    # A local copy of the file (here: synthetic weights as safetensors) converts.
    state = {k: np.ascontiguousarray(v) for k, v in synthetic_state_dict(KEYS["r50"]).items()}
    save_file(state, str(tmp_path / "coco.safetensors"))
    out = tmp_path / "converted"
    assert main(["convert", "fasterrcnn_resnet50_fpn", "--weights", "COCO_V1", "--from",
                 str(tmp_path / "coco.safetensors"), "--to", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["num_params"] == 41_755_286 and meta["categories"][1] == "person"
    variables = load("fasterrcnn_resnet50_fpn", path=out)
    frozen_bn = variables["batch_stats"]["backbone"]["body"]["bn1"]
    np.testing.assert_array_equal(frozen_bn["scale"], state["backbone.body.bn1.weight"])


def _no_network(*args, **kwargs):
    raise OSError("network is unreachable")


def test_variables_of_another_model_are_a_checkpoint_error():
    g, model, images = _case("r18", "wide")
    wrong = jaxcnn.create_model("fasterrcnn_resnet18_fpn", num_classes=7, min_size=224,
                                max_size=320)  # fmt: skip
    with pytest.raises(CheckpointError, match="do not fit"):
        detect(wrong, converted("r18"), images)
