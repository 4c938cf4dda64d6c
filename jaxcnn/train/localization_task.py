"""The "localization" task: one object per image, the classification + localization problem
of the detection lesson. The model (`jaxcnn.models.localizer`) returns class logits and one
box; the target is each image's LARGEST box of a detection batch (`data.source="voc"`:
"boxes", "box_labels", "box_mask"), images without a box carry no loss and no metric.

loss = cross-entropy(logits, label) + box_weight * box loss, the box loss on (cx, cy, w, h) as
fractions of the image: "smooth_l1" (Huber with `beta`, Fast R-CNN's) or "l2" (squared error),
summed over the 4 coordinates. task_kwargs: box_loss, box_weight (default 1.0), beta (1/9).

Metrics: loss, accuracy (class), mean_iou (of the predicted and true box) and
iou50_accuracy (the class is right AND IoU >= 0.5, ILSVRC's localization accuracy).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxcnn.detection.boxes import box_convert, box_iou
from jaxcnn.errors import ConfigError
from jaxcnn.train.tasks import Metrics, Task, _weighted, register_task

BOX_LOSSES = ("smooth_l1", "l2")


def largest_box(
    boxes: jax.Array, labels: jax.Array, mask: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per image, the largest valid box [B, 4], its label [B] and whether there is one [B]."""
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    i = jnp.argmax(jnp.where(mask, area, -1.0), axis=-1)
    pick = lambda a: jnp.take_along_axis(a, i.reshape(i.shape + (1,) * (a.ndim - 1)), axis=1)
    return pick(boxes)[:, 0], pick(labels)[:, 0], jnp.any(mask, axis=-1)


@register_task("localization")
class Localization(Task):
    """Cross-entropy + box regression on the largest box of each image (module doc)."""

    best_metric = "mean_iou"
    best_mode = "max"
    batch_keys = ("boxes", "box_labels", "box_mask")
    uses_num_classes = True

    def __init__(self, config: Any):
        super().__init__(config)
        unknown = set(self.kwargs) - {"box_loss", "box_weight", "beta"}
        if unknown:
            raise ConfigError(
                f"unknown localization task_kwargs {sorted(unknown)}; valid: box_loss, "
                "box_weight, beta."
            )
        self.box_loss = self.kwargs.get("box_loss", "smooth_l1")
        if self.box_loss not in BOX_LOSSES:
            raise ConfigError(f"box_loss must be one of {BOX_LOSSES}; got {self.box_loss!r}.")
        self.box_weight = float(self.kwargs.get("box_weight", 1.0))
        self.beta = float(self.kwargs.get("beta", 1.0 / 9.0))

    def _per_example(self, outputs: Any, batch: dict[str, jax.Array]):
        height, width = batch["image"].shape[1:3]
        box, label, has_box = largest_box(batch["boxes"], batch["box_labels"], batch["box_mask"])
        scale = jnp.asarray([width, height, width, height], jnp.float32)[None, :]
        target = box_convert(box, "xyxy", "cxcywh") / scale
        pred = outputs.boxes.astype(jnp.float32)
        if self.box_loss == "smooth_l1":
            box_loss = jnp.sum(optax.huber_loss(pred, target, delta=self.beta) / self.beta, -1)
        else:
            box_loss = jnp.sum(jnp.square(pred - target), -1)
        ce = optax.softmax_cross_entropy_with_integer_labels(outputs.logits, label)
        per = ce + self.box_weight * box_loss
        pred_xyxy = box_convert(pred, "cxcywh", "xyxy") * scale
        iou = box_iou(pred_xyxy[:, None], box[:, None])[:, 0, 0]
        correct = jnp.argmax(outputs.logits, -1) == label
        return per, correct, iou, has_box.astype(jnp.float32)

    def _sums(self, outputs, batch, weight) -> tuple[jax.Array, Metrics]:
        per, correct, iou, has_box = self._per_example(outputs, batch)
        w = has_box if weight is None else has_box * weight
        loss = jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)
        hit = (correct & (iou >= 0.5)).astype(jnp.float32)
        return loss, {
            "loss": _weighted(per, w),
            "accuracy": _weighted(correct.astype(jnp.float32), w),
            "mean_iou": _weighted(iou, w),
            "iou50_accuracy": _weighted(hit, w),
            "count": jnp.sum(w),
        }

    def loss(self, outputs: Any, batch: dict[str, jax.Array]) -> tuple[jax.Array, Metrics]:
        return self._sums(outputs, batch, None)

    def eval_metrics(self, outputs: Any, batch: dict[str, jax.Array]) -> Metrics:
        return self._sums(outputs, batch, batch.get("weight"))[1]
