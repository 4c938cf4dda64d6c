"""The input of the detection metrics: per-image prediction and target dicts, checked once and
flattened into numpy arrays (float64 boxes, one row per box, with its image index).

predictions[i] = {"boxes": [n, 4] xyxy, "scores": [n], "labels": [n] int}
targets[i]     = {"boxes": [m, 4] xyxy, "labels": [m] int, optional "iscrowd" / "difficult" [m]}

Arrays may be numpy or jax; an image may have no boxes ([0, 4]). A padded batch can be turned
into this form with `unpad`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from jaxcnn.errors import InputError


@dataclasses.dataclass(frozen=True)
class FlatDetections:
    """All detections and ground truths of a dataset, one row each."""

    num_images: int
    det_image: np.ndarray  # [D] int64
    det_boxes: np.ndarray  # [D, 4] float64 xyxy
    det_scores: np.ndarray  # [D] float64
    det_labels: np.ndarray  # [D] int64
    gt_image: np.ndarray  # [G] int64
    gt_boxes: np.ndarray  # [G, 4] float64
    gt_labels: np.ndarray  # [G] int64
    gt_crowd: np.ndarray  # [G] bool
    gt_difficult: np.ndarray  # [G] bool


def _field(record: Mapping, key: str, i: int, where: str, shape_tail: tuple, n=None) -> np.ndarray:
    if key not in record:
        raise InputError(f"{where}[{i}] has no {key!r}; it has keys {sorted(record)}.")
    a = np.asarray(record[key])
    if a.ndim == 1 and shape_tail == (4,) and a.size == 0:
        a = a.reshape(0, 4)
    if a.shape[1:] != shape_tail or a.ndim != 1 + len(shape_tail):
        raise InputError(
            f"{where}[{i}][{key!r}] must have shape [n{', 4' if shape_tail else ''}]; "
            f"got {a.shape}."
        )
    if n is not None and a.shape[0] != n:
        raise InputError(f"{where}[{i}][{key!r}] has {a.shape[0]} entries but its 'boxes' has {n}.")
    return a


def _boxes(record: Mapping, i: int, where: str) -> np.ndarray:
    b = _field(record, "boxes", i, where, (4,)).astype(np.float64)
    if b.size and not np.isfinite(b).all():
        r = int(np.argmax(~np.isfinite(b).all(axis=1)))
        raise InputError(f"{where}[{i}]['boxes'] row {r} = {b[r].tolist()} is not finite.")
    bad = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    if bad.any():
        r = int(np.argmax(bad))
        raise InputError(
            f"{where}[{i}]['boxes'] row {r} = {b[r].tolist()} has x2 < x1 or y2 < y1 "
            "(boxes are x1, y1, x2, y2)."
        )
    return b


def _labels(record: Mapping, i: int, where: str, n: int) -> np.ndarray:
    lab = _field(record, "labels", i, where, (), n)
    if lab.size and not np.issubdtype(lab.dtype, np.integer):
        if not np.all(np.isfinite(lab)) or not np.all(lab == np.round(lab)):
            raise InputError(f"{where}[{i}]['labels'] must be integers; got {lab.tolist()}.")
    lab = lab.astype(np.int64)
    if (lab < 0).any():
        raise InputError(f"{where}[{i}]['labels'] has a negative label: {lab.tolist()}.")
    return lab


def _flag(record: Mapping, key: str, i: int, where: str, n: int) -> np.ndarray:
    if key not in record:
        return np.zeros(n, bool)
    return _field(record, key, i, where, (), n).astype(bool)


def flatten_detections(
    predictions: Sequence[Mapping], targets: Sequence[Mapping]
) -> FlatDetections:
    """Check per-image `predictions` and `targets` (same length) and flatten them."""
    if isinstance(predictions, Mapping) or isinstance(targets, Mapping):
        raise InputError("predictions and targets must be lists of per-image dicts, not a dict.")
    if len(predictions) != len(targets):
        raise InputError(
            f"predictions has {len(predictions)} images but targets has {len(targets)}; "
            "pass one dict per image in the same order (an empty dict of [0, 4] boxes for none)."
        )
    if len(targets) == 0:
        raise InputError("no images to evaluate: predictions and targets are empty lists.")
    dets, gts = [], []
    for i, (p, t) in enumerate(zip(predictions, targets, strict=True)):
        db = _boxes(p, i, "predictions")
        ds = _field(p, "scores", i, "predictions", (), len(db)).astype(np.float64)
        if not np.isfinite(ds).all():
            raise InputError(f"predictions[{i}]['scores'] contains NaN or infinite values.")
        dets.append((np.full(len(db), i), db, ds, _labels(p, i, "predictions", len(db))))
        gb = _boxes(t, i, "targets")
        gts.append(
            (
                np.full(len(gb), i),
                gb,
                _labels(t, i, "targets", len(gb)),
                _flag(t, "iscrowd", i, "targets", len(gb)),
                _flag(t, "difficult", i, "targets", len(gb)),
            )
        )

    def cat(parts, j, dtype, tail=()):
        arrays = [p[j] for p in parts]
        return np.concatenate(arrays).astype(dtype) if arrays else np.zeros((0, *tail), dtype)

    return FlatDetections(
        num_images=len(targets),
        det_image=cat(dets, 0, np.int64),
        det_boxes=cat(dets, 1, np.float64, (4,)).reshape(-1, 4),
        det_scores=cat(dets, 2, np.float64),
        det_labels=cat(dets, 3, np.int64),
        gt_image=cat(gts, 0, np.int64),
        gt_boxes=cat(gts, 1, np.float64, (4,)).reshape(-1, 4),
        gt_labels=cat(gts, 2, np.int64),
        gt_crowd=cat(gts, 3, bool),
        gt_difficult=cat(gts, 4, bool),
    )


def unpad(boxes, labels, valid, scores=None) -> list[dict]:
    """Per-image dicts from a padded batch: boxes [B, K, 4], labels [B, K], valid [B, K] mask
    (and scores [B, K] for predictions), dropping the padded rows."""
    boxes, labels, valid = np.asarray(boxes), np.asarray(labels), np.asarray(valid, bool)
    if boxes.ndim != 3 or labels.shape != boxes.shape[:2] or valid.shape != labels.shape:
        raise InputError(
            f"unpad needs boxes [B, K, 4], labels [B, K] and valid [B, K]; got {boxes.shape}, "
            f"{labels.shape} and {valid.shape}."
        )
    out = []
    for b in range(boxes.shape[0]):
        keep = valid[b]
        record = {"boxes": boxes[b][keep], "labels": labels[b][keep]}
        if scores is not None:
            record["scores"] = np.asarray(scores)[b][keep]
        out.append(record)
    return out


def to_coco(predictions: Sequence[Mapping], targets: Sequence[Mapping]) -> tuple[dict, list]:
    """The same data in COCO's JSON layout, for pycocotools or any COCO tool: a ground-truth
    dataset dict (image ids 1..n in list order, "bbox" as [x, y, w, h], "area" = w * h) and a
    detection result list."""
    flat = flatten_detections(predictions, targets)

    def xywh(b):
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    anns = []
    for j in range(len(flat.gt_labels)):
        box = xywh(flat.gt_boxes[j])
        anns.append({
            "id": j + 1, "image_id": int(flat.gt_image[j]) + 1,
            "category_id": int(flat.gt_labels[j]), "bbox": box, "area": box[2] * box[3],
            "iscrowd": int(flat.gt_crowd[j]),
        })  # fmt: skip
    results = [
        {"image_id": int(i) + 1, "category_id": int(c), "bbox": xywh(b), "score": float(s)}
        for i, c, b, s in zip(
            flat.det_image, flat.det_labels, flat.det_boxes, flat.det_scores, strict=True
        )
    ]
    dataset = {
        "images": [{"id": i + 1} for i in range(flat.num_images)],
        "annotations": anns,
        "categories": [{"id": int(c)} for c in np.unique(flat.gt_labels)],
    }
    return dataset, results
