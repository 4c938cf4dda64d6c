"""Write tests/golden/detection.npz: torchvision's detection ops on seeded inputs, the reference
of tests/test_detection_ops.py. Needs torch + torchvision (not jaxcnn's test deps):

    /work/torchvenv/bin/python tests/golden/make_detection_golden.py

Recorded (torchvision 0.29.1, CPU, float32): box_iou, generalized_box_iou, box_area, box
conversions, clip_boxes_to_image, remove_small_boxes; nms on overlapping clusters at several
thresholds (and a box pair with IoU exactly at the threshold); batched_nms through both of
torchvision's paths; BoxCoder.encode_single/decode_single with two weight sets and deltas past
the clamp; roi_pool and roi_align (every aligned / sampling_ratio / spatial_scale setting, boxes
partly or wholly outside the map, empty and inverted boxes) with the gradient of
sum(output * cotangent) with respect to the features; AnchorGenerator's anchors; Matcher.
Feature maps are stored NHWC (jaxcnn's layout), outputs [K, PH, PW, C].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchvision
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import boxes as box_ops

OUT = Path(__file__).resolve().parent / "detection.npz"
RNG = np.random.default_rng(12)


def random_boxes(n: int, span: float = 60.0, min_size: float = 1.0, max_size: float = 30.0):
    xy = RNG.uniform(0, span, (n, 2))
    wh = RNG.uniform(min_size, max_size, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def clusters(k: int, per: int, jitter: float) -> np.ndarray:
    centres = random_boxes(k, span=200.0, min_size=10, max_size=40)
    boxes = centres[:, None, :] + RNG.normal(0, jitter, (k, per, 4))
    boxes = boxes.reshape(-1, 4)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1.0)
    return boxes.astype(np.float32)


def t(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def main() -> None:
    g: dict[str, np.ndarray] = {}

    # Box operations.
    b1, b2 = random_boxes(12), random_boxes(9)
    b1[3] = [5, 5, 5, 9]  # zero width
    b2[0] = b1[0]  # identical pair
    g["iou_boxes1"], g["iou_boxes2"] = b1, b2
    g["box_iou"] = box_ops.box_iou(t(b1), t(b2)).numpy()
    g["generalized_box_iou"] = box_ops.generalized_box_iou(t(b1), t(b2)).numpy()
    g["box_area"] = box_ops.box_area(t(b1)).numpy()
    for fmt in ("xywh", "cxcywh"):
        g[f"convert_xyxy_{fmt}"] = box_ops.box_convert(t(b1), "xyxy", fmt).numpy()
    g["clip_size"] = np.array([50, 40])
    g["clip_boxes"] = box_ops.clip_boxes_to_image(t(b1 - 10), (50, 40)).numpy()
    g["remove_small_keep"] = box_ops.remove_small_boxes(t(b1), 8.0).numpy()

    # NMS: overlapping clusters, distinct scores, several thresholds.
    nb = clusters(8, 12, 4.0)
    ns = RNG.permutation(len(nb)).astype(np.float32) / len(nb) + 0.01
    g["nms_boxes"], g["nms_scores"] = nb, ns
    g["nms_thresholds"] = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    for i, thr in enumerate(g["nms_thresholds"]):
        g[f"nms_keep_{i}"] = torchvision.ops.nms(t(nb), t(ns), float(thr)).numpy()
    # IoU exactly 0.5 between the first two, 1/3 with the third: kept at 0.5, not at 0.4999.
    eb = np.array([[0, 0, 3, 1], [1, 0, 4, 1], [2, 0, 5, 1], [0, 0, 1, 1]], np.float32)
    es = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    g["nms_edge_boxes"], g["nms_edge_scores"] = eb, es
    g["nms_edge_keep_050"] = torchvision.ops.nms(t(eb), t(es), 0.5).numpy()
    g["nms_edge_keep_04999"] = torchvision.ops.nms(t(eb), t(es), 0.4999).numpy()
    big = clusters(30, 20, 6.0)
    big_s = RNG.permutation(len(big)).astype(np.float32) / len(big)
    g["nms_big_boxes"], g["nms_big_scores"] = big, big_s
    g["nms_big_keep"] = torchvision.ops.nms(t(big), t(big_s), 0.5).numpy()
    # batched_nms: the same clusters with 3 categories; both torchvision code paths.
    cls = RNG.integers(0, 3, len(nb))
    g["batched_idxs"] = cls
    g["batched_keep"] = box_ops.batched_nms(t(nb), t(ns), t(cls), 0.5).numpy()
    g["batched_keep_vanilla"] = box_ops._batched_nms_vanilla(t(nb), t(ns), t(cls), 0.5).numpy()

    # BoxCoder.
    proposals, gt = random_boxes(20), random_boxes(20)
    g["coder_proposals"], g["coder_gt"] = proposals, gt
    rel = RNG.normal(0, 1.0, (20, 12)).astype(np.float32)
    rel[:4, 2::4] = 6.0  # past the clamp log(1000/16) ~ 4.135 (also after weight 5)
    rel[4:8, 3::4] = 30.0
    g["coder_rel"] = rel
    for name, w in (("w1", (1.0, 1.0, 1.0, 1.0)), ("w10", (10.0, 10.0, 5.0, 5.0))):
        coder = det_utils.BoxCoder(w)
        g[f"coder_encode_{name}"] = coder.encode_single(t(gt), t(proposals)).numpy()
        g[f"coder_decode_{name}"] = coder.decode_single(t(rel), t(proposals)).numpy()

    # RoI pool / RoI Align on a [2, 9, 11, 2] map (NCHW for torch).
    feat = RNG.normal(0, 1, (2, 2, 9, 11)).astype(np.float32)
    rois = np.array(
        [
            [0, 0.0, 0.0, 10.0, 8.0],  # whole map
            [1, 2.5, 1.5, 7.5, 6.5],  # half-pixel corners (C round: away from zero)
            [0, 3.2, 2.7, 9.9, 8.4],
            [1, -4.0, -3.0, 5.0, 4.0],  # partly outside, top-left
            [0, 6.0, 5.0, 16.0, 14.0],  # partly outside, bottom-right
            [1, 20.0, 20.0, 30.0, 25.0],  # wholly outside
            [0, 4.0, 4.0, 4.0, 4.0],  # empty (a point)
            [1, 7.0, 6.0, 3.0, 2.0],  # inverted (x2 < x1)
            [0, 1.0, 1.0, 1.6, 1.4],  # smaller than one cell
            [1, 0.25, 0.75, 10.75, 8.25],
            [0, -1.5, 2.0, 11.5, 3.0],  # wider than the map, one row high
            [1, 2.0, -0.5, 2.5, 9.5],  # one column wide, taller than the map
            [0, 0.5, 0.5, 30.5, 24.5],  # large: adaptive grid of several samples per bin
            [1, -0.5, -0.5, 0.5, 0.5],
        ],
        np.float32,
    )
    g["roi_features"] = feat.transpose(0, 2, 3, 1)
    g["roi_boxes"] = rois
    settings = []
    for scale in (1.0, 0.5):
        for size in ((3, 4), (2, 2)):
            f = t(feat).requires_grad_(True)
            out = torchvision.ops.roi_pool(f, t(rois), size, scale)
            cot = RNG.normal(0, 1, out.shape).astype(np.float32)
            (out * t(cot)).sum().backward()
            key = f"roi_pool_s{scale}_{size[0]}x{size[1]}"
            g[key] = out.detach().numpy().transpose(0, 2, 3, 1)
            g[key + "_cot"] = cot.transpose(0, 2, 3, 1)
            g[key + "_grad"] = f.grad.numpy().transpose(0, 2, 3, 1)
    for aligned in (False, True):
        for ratio in (-1, 2):
            for scale, size in ((1.0, (3, 4)), (0.5, (2, 3))):
                f = t(feat).requires_grad_(True)
                out = torchvision.ops.roi_align(f, t(rois), size, scale, ratio, aligned)
                cot = RNG.normal(0, 1, out.shape).astype(np.float32)
                (out * t(cot)).sum().backward()
                key = f"roi_align_a{int(aligned)}_r{ratio}_s{scale}"
                settings.append(key)
                g[key] = out.detach().numpy().transpose(0, 2, 3, 1)
                g[key + "_cot"] = cot.transpose(0, 2, 3, 1)
                g[key + "_grad"] = f.grad.numpy().transpose(0, 2, 3, 1)
    # The RoI pooling lesson (d2l.ai, "Region-based CNNs"): a 4x4 map, spatial scale 0.1.
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    lesson = torch.tensor([[0, 0, 0, 20, 20], [0, 0, 10, 30, 30]], dtype=torch.float32)
    g["roi_pool_lesson"] = torchvision.ops.roi_pool(x, lesson, (2, 2), 0.1).numpy()[:, 0]

    # Anchors: the FPN layout on a 64 x 80 batch, and the default single-level generator.
    fpn = AnchorGenerator(((16,), (32,)), ((0.5, 1.0, 2.0),) * 2)
    images = ImageList(torch.zeros(1, 3, 64, 80), [(60, 77)])
    maps = [torch.zeros(1, 1, 16, 20), torch.zeros(1, 1, 8, 10)]
    g["anchors_fpn"] = fpn(images, maps)[0].numpy()
    default = AnchorGenerator()
    g["anchors_default"] = default(images, [torch.zeros(1, 1, 4, 5)])[0].numpy()
    g["anchors_cell_default"] = default.cell_anchors[0].numpy()

    # Matcher on a quality matrix with ties (values rounded to 0.05), a prediction that
    # overlaps nothing, and (second matrix) a ground truth that overlaps nothing.
    q = (np.round(RNG.uniform(0, 0.9, (5, 40)) * 20) / 20).astype(np.float32)
    q[:, 5] = 0.0
    q_zero = q.copy()
    q_zero[2] = 0.0
    g["matcher_quality"], g["matcher_quality_zero_gt"] = q, q_zero
    for name, (hi, lo, low_q) in {"rpn": (0.7, 0.3, True), "roi": (0.5, 0.5, False)}.items():
        g[f"matcher_{name}"] = det_utils.Matcher(hi, lo, low_q)(t(q).clone()).numpy()
        g[f"matcher_{name}_zero_gt"] = det_utils.Matcher(hi, lo, low_q)(t(q_zero)).numpy()

    np.savez_compressed(OUT, **g)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB, {len(g)} arrays)")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
