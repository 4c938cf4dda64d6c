"""PASCAL VOC average precision (Everingham et al., 2010; the devkit's `VOCevaldet.m`), with
per-class precision/recall curves.

Per class, detections are ranked by score (stable); each is compared with the ground truths of
its image and takes the one of highest IoU (the first among equals). It is a true positive if
that IoU >= `iou_threshold` and the box was not already taken, a false positive if it was
(a duplicate) or if the IoU is too low; a match to a "difficult" box counts as neither.
Precision = TP / (TP + FP) and recall = TP / (non-difficult ground truths) after each ranked
detection. AP is the area under the precision envelope (all points, VOC 2010+) or the mean of
the envelope at recall 0, 0.1, ..., 1 (11 points, VOC 2007). IoU is the continuous
(x2 - x1) * (y2 - y1) overlap of `box_iou`, not the devkit's +1-pixel convention.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from jaxcnn.detection.eval_inputs import flatten_detections
from jaxcnn.errors import InputError

_CHUNK = 65536  # detections per IoU block (bounds memory at chunk x max boxes per image)


def precision_recall(is_tp, is_fp, num_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each detection, for `is_tp` / `is_fp` [D] flags of detections
    ranked by decreasing score (a detection with neither flag, e.g. matched to a difficult box,
    changes nothing) and `num_gt` ground truths."""
    if num_gt < 1:
        raise InputError(f"recall needs at least one ground-truth box; got num_gt={num_gt}.")
    tp = np.cumsum(np.asarray(is_tp, bool)).astype(np.float64)
    fp = np.cumsum(np.asarray(is_fp, bool)).astype(np.float64)
    return tp / np.maximum(tp + fp, np.finfo(np.float64).eps), tp / num_gt


def average_precision(recall, precision, use_07_metric: bool = False) -> float:
    """VOC AP from a precision/recall curve: area under the monotone precision envelope, or
    the 11-point interpolated mean (`use_07_metric`, VOC 2007)."""
    rec, prec = np.asarray(recall, np.float64), np.asarray(precision, np.float64)
    if rec.shape != prec.shape or rec.ndim != 1:
        raise InputError(
            f"recall and precision must be equal-length 1-D; got {rec.shape}, {prec.shape}."
        )
    if use_07_metric:
        points = [
            prec[rec >= t].max() if (rec >= t).any() else 0.0 for t in np.arange(0.0, 1.1, 0.1)
        ]
        return float(np.mean(points))
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[..., :2])
    rb = np.minimum(a[:, None, 2:], b[..., 2:])
    wh = np.clip(rb - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a[:, None] + area_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def voc_evaluate(
    predictions: Sequence[Mapping],
    targets: Sequence[Mapping],
    iou_threshold: float = 0.5,
    use_07_metric: bool = False,
) -> dict:
    """VOC detection metrics for per-image `predictions` and `targets` (see `eval_inputs`;
    targets may carry "difficult" flags). Returns {"map", "ap": {label: AP},
    "precision": {label: [D_c]}, "recall": {label: [D_c]}, "num_gt": {label: n}} over the
    labels with at least one non-difficult ground truth."""
    flat = flatten_detections(predictions, targets)
    # Ground truths grouped by (label, image), input order within a group.
    span = flat.num_images
    g_key = flat.gt_labels * span + flat.gt_image
    g_order = np.lexsort((np.arange(len(g_key)), g_key))
    keys, g_start, g_count = np.unique(g_key[g_order], return_index=True, return_counts=True)
    # Detections ranked per label by score (stable over image, then input order).
    d_order = np.lexsort(
        (np.arange(len(flat.det_scores)), flat.det_image, -flat.det_scores, flat.det_labels)
    )
    d_key = flat.det_labels[d_order] * span + flat.det_image[d_order]
    gi = np.searchsorted(keys, d_key)
    found = (
        (gi < len(keys)) & (keys[np.minimum(gi, max(len(keys) - 1, 0))] == d_key)
        if len(keys)
        else np.zeros(len(d_key), bool)
    )
    best = np.full(len(d_order), -1, np.int64)  # matched ground-truth row, -1 if none >= threshold
    width = int(g_count.max(initial=0))
    for lo in range(0, len(d_order), _CHUNK):
        sl = slice(lo, lo + _CHUNK)
        idx = np.flatnonzero(found[sl]) + lo
        if not len(idx) or not width:
            continue
        slots = g_start[gi[idx]][:, None] + np.arange(width)[None, :]
        real = np.arange(width)[None, :] < g_count[gi[idx]][:, None]
        rows = g_order[np.minimum(slots, len(g_order) - 1)]
        iou = np.where(real, _iou(flat.det_boxes[d_order[idx]], flat.gt_boxes[rows]), -1.0)
        j = np.argmax(iou, axis=1)
        ok = iou[np.arange(len(idx)), j] >= iou_threshold
        best[idx[ok]] = rows[np.arange(len(idx)), j][ok]
    difficult = np.zeros(len(best), bool)
    difficult[best >= 0] = flat.gt_difficult[best[best >= 0]]
    # A true positive is the first (best-ranked) detection to take its ground truth.
    claim = np.flatnonzero((best >= 0) & ~difficult)
    _, first = np.unique(best[claim], return_index=True)
    is_tp = np.zeros(len(best), bool)
    is_tp[claim[first]] = True
    is_fp = ~is_tp & ~difficult

    labels_sorted = flat.det_labels[d_order]
    result = {"ap": {}, "precision": {}, "recall": {}, "num_gt": {}}
    for label in np.unique(flat.gt_labels):
        npos = int(np.sum((flat.gt_labels == label) & ~flat.gt_difficult))
        if npos == 0:
            continue
        sel = labels_sorted == label
        prec, rec = precision_recall(is_tp[sel], is_fp[sel], npos)
        key = int(label)
        result["ap"][key] = average_precision(rec, prec, use_07_metric)
        result["precision"][key], result["recall"][key] = prec, rec
        result["num_gt"][key] = npos
    aps = list(result["ap"].values())
    if not aps:
        warnings.warn(
            "voc_evaluate: no class has a non-difficult ground-truth box; map is -1", stacklevel=2
        )
    result["map"] = float(np.mean(aps)) if aps else -1.0
    return result
