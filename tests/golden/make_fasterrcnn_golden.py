"""Write tests/golden/fasterrcnn/*.npz: torchvision's Faster R-CNN on seeded weights and images,
the reference of tests/test_models_fasterrcnn.py. Needs torch + torchvision (not jaxcnn's test
deps):

    /work/torchvenv/bin/python tests/golden/make_fasterrcnn_golden.py

Weights are `jaxcnn.pretrained.synthetic` (numpy, seeded by each parameter's name and shape),
with the layers named in SCALES multiplied so that detection scores are well separated (random
heads otherwise give near-tied softmax scores, and the kept set would depend on rounding).
Every case is run twice, the second time on images perturbed by 1e-5; the script refuses to
write a golden whose detections move (a label, or IoU < 0.999, or a score by > 1e-4).

Cases (eval mode, `model(list_of_CHW)` as a user calls it):
  r18_two   fasterrcnn_resnet18_fpn (torchvision's resnet_fpn_backbone("resnet18"), 5 classes),
            min_size 320 / max_size 512, two images of different sizes (both resized by
            min_size, batch padded to 480 x 416);
  r18_wide  the same model at min_size 224 / max_size 320 on one 150 x 400 image (max_size
            binds: resized to 120 x 320, padded to 128 x 320);
  r50_two   fasterrcnn_resnet50_fpn as torchvision builds it for the COCO_V1 weights
            (FrozenBatchNorm2d with eps 0, 91 classes, trainable_backbone_layers 3) at
            min_size 256 / max_size 384 on two images.
Each stores the images' seeds and shapes, the transformed batch (subsampled), the image sizes,
the FPN maps (subsampled, NHWC), the RPN proposals and scores, and the detections.

Training case (`train`): the resnet18 model in training mode with small sampler and proposal
sizes, two images with targets; stores the four losses, the gradients of their sum for a few
parameters (GRADIENTS, subsampled, jaxcnn's layout), and what torchvision drew: the sampled
anchors per image, the proposals the RoI heads received, and the sampled RoIs (positions in
[proposals, ground truth]).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
import torchvision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection._utils import overwrite_eps
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.misc import FrozenBatchNorm2d

HERE = Path(__file__).resolve().parent
OUT = HERE / "fasterrcnn"
_spec = importlib.util.spec_from_file_location(
    "synthetic", HERE.parents[1] / "jaxcnn" / "pretrained" / "synthetic.py"
)
synthetic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(synthetic)

# Key prefix -> factor on the synthetic weights under it: O(1) FPN maps, RPN logits and
# deltas that neither saturate nor vanish, class scores spread out.
# Per backbone depth (ResNet-50's C2..C5 are ~12x larger than ResNet-18's).
_HEADS = {
    "rpn.head.cls_logits.": 4.0,
    "rpn.head.bbox_pred.": 0.1,
    "roi_heads.box_predictor.cls_score.": 0.6,
    "roi_heads.box_predictor.bbox_pred.": 0.3,
}
SCALES = {
    18: {"backbone.fpn.inner_blocks.": 0.015, **_HEADS},
    50: {"backbone.fpn.inner_blocks.": 0.0012, **_HEADS},
}
MAX_VALUES = 1024
# Parameters whose gradient of the summed training losses is recorded (one per part).
GRADIENTS = [
    "backbone.body.layer2.0.conv1.weight",
    "backbone.body.layer4.1.conv2.weight",
    "backbone.fpn.layer_blocks.0.0.weight",
    "rpn.head.conv.0.0.weight",
    "rpn.head.bbox_pred.bias",
    "roi_heads.box_head.fc7.weight",
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.bbox_pred.weight",
]


def build(depth: int, num_classes: int, eps: float, **kwargs) -> torch.nn.Module:
    """torchvision's FasterRCNN on a FrozenBatchNorm2d ResNet-`depth` FPN backbone with 3
    trainable layers (fasterrcnn_resnet50_fpn's construction for pretrained weights)."""
    resnet = getattr(torchvision.models, f"resnet{depth}")(norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(resnet, 3)
    model = FasterRCNN(backbone, num_classes=num_classes, **kwargs)
    overwrite_eps(model, eps)
    return model


def state_dict_for(model: torch.nn.Module, depth: int) -> dict[str, np.ndarray]:
    keys = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    state = synthetic.synthetic_state_dict(keys)
    for prefix, factor in SCALES[depth].items():
        for name in state:
            if name.startswith(prefix) and name.endswith(".weight"):
                state[name] = state[name] * np.float32(factor)
    return state


def subsample_index(size: int) -> np.ndarray:
    return np.unique(np.linspace(0, size - 1, min(size, MAX_VALUES)).astype(np.int64))


def run_eval(model, images: list[np.ndarray]) -> dict:
    captured: dict = {}
    hooks = [
        model.backbone.register_forward_hook(lambda m, i, o: captured.__setitem__("fpn", o)),
        model.rpn.register_forward_hook(lambda m, i, o: captured.__setitem__("rpn", o)),
        model.rpn.register_forward_pre_hook(lambda m, i: captured.__setitem__("batch", i[0])),
    ]
    with torch.no_grad():
        out = model([torch.from_numpy(x.transpose(2, 0, 1).copy()) for x in images])
    for h in hooks:
        h.remove()
    rpn_boxes = captured["rpn"][0]
    captured["proposals"] = [b.numpy() for b in rpn_boxes]
    captured["detections"] = [{k: v.numpy() for k, v in d.items()} for d in out]
    return captured


def matched(a: dict, b: dict) -> bool:
    """Every detection of a has one in b with its label, IoU >= 0.999, |score diff| <= 1e-4."""
    if len(a["boxes"]) != len(b["boxes"]):
        return False
    ious = torchvision.ops.box_iou(torch.from_numpy(a["boxes"]), torch.from_numpy(b["boxes"]))
    for i in range(len(a["boxes"])):
        ok = (ious[i].numpy() >= 0.999) & (b["labels"] == a["labels"][i]) & (
            np.abs(b["scores"] - a["scores"][i]) <= 1e-4)
        if not ok.any():
            return False
    return True


def eval_case(model, shapes: list[tuple[int, int]], seed: int) -> dict[str, np.ndarray]:
    images = [synthetic.synthetic_photo(seed + i, h, w) for i, (h, w) in enumerate(shapes)]
    ref = run_eval(model, images)
    rng = np.random.default_rng(seed + 100)
    moved = [np.clip(x + rng.uniform(-1e-5, 1e-5, x.shape).astype(np.float32), 0, 1)
             for x in images]  # fmt: skip
    again = run_eval(model, moved)
    for i, (a, b) in enumerate(zip(ref["detections"], again["detections"], strict=True)):
        if not (matched(a, b) and matched(b, a)):
            raise SystemExit(f"image {i}: detections not stable under a 1e-5 perturbation")
    out: dict[str, np.ndarray] = {"seed": np.array(seed), "shapes": np.array(shapes)}
    batch = ref["batch"]
    t = batch.tensors.numpy().transpose(0, 2, 3, 1)
    out["batch/shape"] = np.array(t.shape)
    out["batch/values"] = t.reshape(-1)[subsample_index(t.size)]
    out["image_sizes"] = np.array(batch.image_sizes)
    for name, value in ref["fpn"].items():
        v = value.numpy().transpose(0, 2, 3, 1)
        out[f"fpn/{name}/shape"] = np.array(v.shape)
        out[f"fpn/{name}/values"] = v.reshape(-1)[subsample_index(v.size)]
    for i, (props, det) in enumerate(zip(ref["proposals"], ref["detections"], strict=True)):
        out[f"proposals/{i}"] = props
        for k, v in det.items():
            out[f"detections/{i}/{k}"] = v
        print(f"  image {i}: {len(props)} proposals, {len(det['boxes'])} detections, "
              f"scores {det['scores'][:3]} .. {det['scores'][-2:]}")  # fmt: skip
    return out


def train_case(seed: int) -> tuple[dict[str, np.ndarray], list]:
    """Losses of the resnet18 model in training mode on two images with targets, and the
    samplers' draws."""
    kwargs = dict(min_size=160, max_size=256, rpn_pre_nms_top_n_train=300,
                  rpn_post_nms_top_n_train=200, rpn_batch_size_per_image=64,
                  box_batch_size_per_image=64)  # fmt: skip
    model = build(18, 3, 1e-5, **kwargs)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict_for(model, 18).items()})
    model.train()
    shapes = [(120, 160), (160, 128)]
    images = [synthetic.synthetic_photo(seed + i, h, w) for i, (h, w) in enumerate(shapes)]
    boxes = [np.array([[10, 12, 70, 90], [60, 30, 150, 110], [5, 60, 40, 115]], np.float32),
             np.array([[20, 20, 100, 140]], np.float32)]
    labels = [np.array([1, 2, 1]), np.array([2])]
    draws: dict[str, list] = {"rpn": [], "roi": []}

    def recording(sampler, key):
        def call(matched_idxs):
            pos, neg = sampler(matched_idxs)
            draws[key].append(([p.numpy().astype(bool) for p in pos],
                               [n.numpy().astype(bool) for n in neg]))
            return pos, neg
        return call

    model.rpn.fg_bg_sampler = recording(model.rpn.fg_bg_sampler, "rpn")
    model.roi_heads.fg_bg_sampler = recording(model.roi_heads.fg_bg_sampler, "roi")
    captured: dict = {}
    model.roi_heads.register_forward_pre_hook(
        lambda m, i: captured.__setitem__("proposals", [p.detach().numpy() for p in i[1]]))
    model.rpn.register_forward_pre_hook(lambda m, i: captured.__setitem__("batch", i[0]))
    torch.manual_seed(seed)
    losses = model(
        [torch.from_numpy(x.transpose(2, 0, 1).copy()) for x in images],
        [{"boxes": torch.from_numpy(b), "labels": torch.from_numpy(lab)}
         for b, lab in zip(boxes, labels, strict=True)],
    )  # fmt: skip
    out: dict[str, np.ndarray] = {"seed": np.array(seed), "shapes": np.array(shapes)}
    for k, v in losses.items():
        out[f"loss/{k}"] = v.detach().numpy()
        print(f"  {k} = {float(v.detach()):.6f}")
    sum(losses.values()).backward()
    params = dict(model.named_parameters())
    for name in GRADIENTS:
        g = params[name].grad.numpy()
        if g.ndim == 4:
            g = g.transpose(2, 3, 1, 0)  # OIHW -> HWIO, jaxcnn's layout
        elif g.ndim == 2:
            g = g.T
        out[f"grad/{name}/values"] = g.reshape(-1)[subsample_index(g.size)]
        out[f"grad/{name}/shape"] = np.array(g.shape)
    out["image_sizes"] = np.array(captured["batch"].image_sizes)
    out["batch_shape"] = np.array(captured["batch"].tensors.shape)
    for i in range(2):
        out[f"boxes/{i}"], out[f"labels/{i}"] = boxes[i], labels[i]
        out[f"rpn_pos/{i}"], out[f"rpn_neg/{i}"] = draws["rpn"][0][0][i], draws["rpn"][0][1][i]
        out[f"proposals/{i}"] = captured["proposals"][i]
        out[f"roi_pos/{i}"], out[f"roi_neg/{i}"] = draws["roi"][0][0][i], draws["roi"][0][1][i]
    for k, v in kwargs.items():
        out[f"kwargs/{k}"] = np.array(v)
    out["scales/names"] = np.array(list(SCALES[18]))
    out["scales/factors"] = np.array(list(SCALES[18].values()), np.float32)
    return out, [(k, list(v.shape)) for k, v in model.state_dict().items()]


def main() -> None:
    torch.set_num_threads(2)
    cases = {
        "r18": (dict(depth=18, num_classes=5, eps=1e-5), [
            ("two", dict(min_size=320, max_size=512), [(240, 300), (300, 200)], 0),
            ("wide", dict(min_size=224, max_size=320), [(150, 400)], 10),
        ]),
        "r50": (dict(depth=50, num_classes=91, eps=0.0), [
            ("two", dict(min_size=256, max_size=384), [(200, 260), (260, 180)], 20),
        ]),
    }  # fmt: skip
    keys: dict[str, list] = {}
    for tag, (arch, runs) in cases.items():
        out: dict[str, np.ndarray] = {}
        for name, kwargs, shapes, seed in runs:
            model = build(arch["depth"], arch["num_classes"], arch["eps"], **kwargs)
            model.load_state_dict({k: torch.from_numpy(v)
                                   for k, v in state_dict_for(model, arch["depth"]).items()})
            model.eval()
            keys[tag] = [(k, list(v.shape)) for k, v in model.state_dict().items()]
            print(f"{tag}_{name}:")
            for k, v in eval_case(model, shapes, seed).items():
                out[f"{name}/{k}"] = v
            out[f"{name}/min_size"] = np.array(kwargs["min_size"])
            out[f"{name}/max_size"] = np.array(kwargs["max_size"])
        out["num_classes"] = np.array(arch["num_classes"])
        out["scales/names"] = np.array(list(SCALES[arch["depth"]]))
        out["scales/factors"] = np.array(list(SCALES[arch["depth"]].values()), np.float32)
        np.savez_compressed(OUT / f"{tag}.npz", **out)
    print("train:")
    train, keys["train"] = train_case(30)
    np.savez_compressed(OUT / "train.npz", **train)
    (OUT / "keys.json").write_text(json.dumps(keys) + "\n")
    # The published COCO model's key list joins the converters' table (make_golden.py's).
    table_file = HERE / "torchvision_keys.json"
    table = json.loads(table_file.read_text())
    table["fasterrcnn_resnet50_fpn"] = keys["r50"]
    table_file.write_text(json.dumps(table, indent=0, sort_keys=True) + "\n")
    print(f"torchvision {torchvision.__version__}, torch {torch.__version__}: wrote {OUT}")


if __name__ == "__main__":
    main()
