"""The "detection" task: a two-stage detector (Faster R-CNN, `jaxcnn.models.fasterrcnn`) trained
jointly on its four losses, as torchvision's detection reference does: the RPN's objectness
binary cross-entropy and box smooth-L1, the RoI heads' cross-entropy and box smooth-L1, summed
with weight 1 (torchvision/references/detection/engine.py `sum(loss_dict.values())`).

Batches are a detection source's (`data.source="voc"`): images of one static size and the
boxes padded to a fixed count with a mask ("boxes" in pixels, "box_labels" 0-based class
indices, "box_mask"); the model's classes are the dataset's plus the background (index 0).
Evaluation runs the detector on the split and scores the detections in each image's own
pixels ("orig_size") with `coco_evaluate` (COCO mAP, mAP@0.5, ...) and `voc_evaluate` (VOC
all-point AP@0.5, `voc_map`); the best checkpoint is the one with the best mAP@0.5.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.data.sources import Splits
from jaxcnn.detection import coco_evaluate, unpad, voc_evaluate
from jaxcnn.errors import DatasetError
from jaxcnn.train.tasks import Metrics, Task, register_task

LOSSES = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg")


def check_boxes(splits: Splits) -> None:
    """DatasetError naming the split, image and box of the first real box without positive
    width and height (torchvision raises "All bounding boxes should have positive height and
    width" in training; a zero-size box has no regression target)."""
    for split in ("train", "valid", "test"):
        source = getattr(splits, split, None)
        if source is None or not len(source) or "boxes" not in source.arrays:
            continue
        boxes = np.asarray(source.arrays["boxes"], np.float64)
        mask = np.asarray(source.arrays["box_mask"], bool)
        bad = mask & ~((boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
                       & np.isfinite(boxes).all(-1))  # fmt: skip
        if bad.any():
            i, k = (int(v) for v in np.argwhere(bad)[0])
            names = source.arrays.get("name")
            image = f"image {i}" + (f" ({names[i]})" if names is not None else "")
            raise DatasetError(
                f"{split} split, {image}: box {k} = {boxes[i, k].tolist()} has no positive "
                "width and height (x2 > x1 and y2 > y1 in pixels, finite); fix or drop it in "
                "the annotations (torchvision refuses such targets too)."
            )


@register_task("detection")
class Detection(Task):
    """Faster R-CNN's four losses in training; COCO and VOC mAP in evaluation (module doc)."""

    best_metric = "map_50"
    best_mode = "max"
    batch_keys = ("boxes", "box_labels", "box_mask")
    uses_num_classes = True
    background_class = True

    def check_data(self, splits: Splits) -> None:
        """Refuse degenerate target boxes before anything is compiled."""
        check_boxes(splits)

    def model_inputs(self, batch: dict[str, jax.Array]) -> tuple[Any, ...]:
        """(images, image sizes [N, 2], targets with 1-based labels)."""
        n, h, w = batch["image"].shape[:3]
        sizes = jnp.broadcast_to(jnp.asarray([h, w], jnp.int32), (n, 2))
        targets = {"boxes": batch["boxes"], "labels": batch["box_labels"] + 1,
                   "mask": batch["box_mask"]}  # fmt: skip
        return batch["image"], sizes, targets

    def loss(self, outputs: Any, batch: dict[str, jax.Array]) -> tuple[jax.Array, Metrics]:
        total = sum(outputs[k] for k in LOSSES)
        n = jnp.asarray(batch["image"].shape[0], jnp.float32)
        sums = {k: outputs[k] * n for k in LOSSES}
        return total, {"loss": total * n, **sums, "count": n}

    def eval_metrics(self, outputs: Any, batch: dict[str, jax.Array]) -> Metrics:
        """The padded detections and ground truth of the batch (reduced by `reduce`)."""
        keep = {k: batch[k] for k in ("boxes", "box_labels", "box_mask", "orig_size")
                if k in batch}  # fmt: skip
        weight = batch.get("weight", jnp.ones(batch["image"].shape[:1], jnp.float32))
        size = jnp.broadcast_to(jnp.asarray(batch["image"].shape[1:3], jnp.int32),
                                (batch["image"].shape[0], 2))  # fmt: skip
        if "difficult" in batch:
            keep["difficult"] = batch["difficult"]
        return {**{f"det_{k}": v for k, v in outputs.items()}, **keep, "weight": weight,
                "size": size}  # fmt: skip

    def reduce(self, outputs: Iterable[dict[str, np.ndarray]]) -> dict[str, float]:
        """COCO metrics (map, map_50, map_75, map_small, ..., mar_100) and VOC AP@0.5
        (voc_map) of a split's detections, in original-image pixels."""
        parts = list(outputs)
        cat = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
        real = cat["weight"] > 0
        cat = {k: v[real] for k, v in cat.items()}
        size = cat["size"].astype(np.float32)
        orig = cat.get("orig_size", cat["size"]).astype(np.float32)
        scale = np.stack([orig[:, 1] / size[:, 1], orig[:, 0] / size[:, 0]] * 2, -1)[:, None]
        preds = unpad(cat["det_boxes"] * scale, cat["det_labels"], cat["det_valid"],
                      cat["det_scores"])  # fmt: skip
        targets = unpad(cat["boxes"] * scale, cat["box_labels"] + 1, cat["box_mask"])
        if "difficult" in cat:
            for t, d, m in zip(targets, cat["difficult"], cat["box_mask"], strict=True):
                t["difficult"] = d[m]
        metrics = {k: float(v) for k, v in coco_evaluate(preds, targets).items()}
        metrics["voc_map"] = float(voc_evaluate(preds, targets)["map"])
        return metrics
